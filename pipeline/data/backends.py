"""Teacher model backends: Ollama (official `ollama` client), any OpenAI-compatible endpoint (official
`openai` client) and a GGUF run in-process by llama.cpp (`engines/local_engine.py`, no server). Each
answers one chat request and maps its errors onto three kinds the runner acts on:
`Transient` (retry with backoff: 429, 5xx, timeouts, dropped connections), `Fatal` (stop the run: wrong
model, bad key, bad request) and anything in the reply itself, which the caller validates.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from pipeline.ranges import option

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam


class Transient(Exception):
    """Worth retrying after a pause; `retry_after` is the server's hint in seconds, if it gave one."""

    def __init__(self, message: str, retry_after: float | None = None, unreachable: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.unreachable = unreachable


class Fatal(Exception):
    """Retrying cannot help (unknown model, refused key): the whole run stops with this message."""


@dataclass
class Reply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ChatBackend(Protocol):
    url: str

    async def complete(self, messages: list[dict]) -> Reply: ...

    async def aclose(self) -> None: ...


@dataclass
class ChatSettings:
    model: str
    backend: str = "ollama"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 300.0
    temperature: float = 0.7
    max_tokens: int = 2048
    lora: str | None = None  # llama.cpp: a GGUF adapter on the teacher
    n_ctx: int = 4096  # llama.cpp: the context the teacher is loaded with
    role: str = "teacher"  # what the model is to the caller, in messages (its flag is --ROLE)


class OllamaChat:
    def __init__(self, s: ChatSettings):
        import ollama

        from contract.serving import resolve_host

        self.url = resolve_host(s.base_url)
        self.s = s
        self.client = ollama.AsyncClient(host=self.url, timeout=s.timeout)
        self._shown: tuple[str, str] | None = None  # the model's template and SYSTEM, asked once

    async def complete(self, messages: list[dict]) -> Reply:
        """One system + user exchange, sent as the bot sends its requests (`serving.request_for`): raw
        in its own chat format to a model made from our Modelfiles, else the turns through its template."""
        import httpx
        import ollama

        from contract.serving import request_for, system_of

        system, user = _one_exchange(messages)
        options = {"temperature": self.s.temperature, "num_predict": self.s.max_tokens}
        try:
            if self._shown is None:
                shown = await self.client.show(self.s.model)
                self._shown = (shown.template or "", system_of(shown.modelfile or ""))
            request = request_for(self._shown[0], user, system, model_system=self._shown[1])
            r = await self.client.generate(
                model=self.s.model, **request.fields(), options=options, stream=False
            )
        except ollama.ResponseError as e:
            if e.status_code == 404:
                what, fix = f"the {self.s.role} model {self.s.model!r}", f"ollama pull {self.s.model}"
                raise Fatal(f"{what} is not on {self.url}: {fix} (or pick another --{self.s.role})") from e
            if e.status_code == 429 or e.status_code >= 500 or e.status_code == -1:
                raise Transient(f"Ollama answered {e.status_code}: {e.error}") from e
            raise Fatal(f"Ollama refused the request ({e.status_code}): {e.error}") from e
        except httpx.TimeoutException as exc:
            raise Transient(f"no answer from {self.url} within {self.s.timeout:g}s") from exc
        except (ConnectionError, httpx.TransportError) as e:
            raise Transient(f"cannot reach Ollama at {self.url} ({e})", unreachable=True) from e
        except ValueError as e:  # a body that is not Ollama's JSON, or a writer prompt not of ours
            if type(e).__name__ == "ServingError":
                raise Fatal(f"the {self.s.role} {self.s.model!r}: {e}") from e
            raise Transient(f"{self.url} sent an unreadable answer ({type(e).__name__}: {e})") from e
        return Reply(r.response or "", r.prompt_eval_count or 0, r.eval_count or 0)

    async def aclose(self) -> None:
        await self.client.close()


class OpenAIChat:
    def __init__(self, s: ChatSettings):
        import openai

        self.s = s
        key = os.environ.get(s.api_key_env)
        if not key:
            if not s.base_url:
                raise Fatal(
                    f"set {s.api_key_env} to your API key (or --api-key-env NAME), or give --base-url "
                    "for a local OpenAI-compatible server"
                )
            key = "not-needed"  # local servers (vLLM, llama.cpp, LM Studio) accept any key
        self.client = openai.AsyncOpenAI(base_url=s.base_url, api_key=key, timeout=s.timeout, max_retries=0)
        self.url = str(self.client.base_url)

    async def complete(self, messages: list[dict]) -> Reply:
        import openai

        try:
            r = await self.client.chat.completions.create(
                model=self.s.model,
                messages=cast("list[ChatCompletionMessageParam]", messages),  # role/content dicts
                temperature=self.s.temperature,
                max_tokens=self.s.max_tokens,
            )
        except openai.APITimeoutError as exc:
            raise Transient(f"no answer from {self.url} within {self.s.timeout:g}s") from exc
        except openai.APIConnectionError as e:
            raise Transient(f"cannot reach {self.url} ({e})", unreachable=True) from e
        except openai.APIStatusError as e:
            status = e.status_code
            if status == 429 or status >= 500:
                raise Transient(f"{self.url} answered {status}: {_message(e)}", _retry_after(e)) from e
            hint = {
                401: f"check {self.s.api_key_env}",
                403: f"check {self.s.api_key_env}",
                404: f"is {self.s.model!r} served there?",
            }.get(status, "check the request")
            raise Fatal(f"{self.url} refused the request ({status}: {_message(e)}): {hint}") from e
        except (openai.APIError, ValueError) as e:  # a body that is not the API's JSON, and the like
            raise Transient(f"{self.url} sent an unreadable answer ({type(e).__name__}: {e})") from e
        if not getattr(r, "choices", None):
            return Reply("", 0, 0)
        usage = r.usage
        text = r.choices[0].message.content or ""
        return Reply(text, usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)

    async def aclose(self) -> None:
        await self.client.close()


def _one_exchange(messages: list[dict]) -> tuple[str | None, str]:
    """(system, user) of a teacher conversation: system turns, then exactly one user turn."""
    users = [m["content"] for m in messages if m["role"] == "user"]
    if len(users) != 1 or any(m["role"] not in ("system", "user") for m in messages):
        raise ValueError("a teacher request is system turns and one user turn")
    return "\n\n".join(m["content"] for m in messages if m["role"] == "system") or None, users[0]


def _message(e) -> str:
    body = e.body if isinstance(e.body, dict) else {}
    err = body.get("error", body)
    return (err.get("message") if isinstance(err, dict) else str(err)) or str(e)


def _retry_after(e) -> float | None:
    try:
        return float(e.response.headers.get("retry-after"))
    except (TypeError, ValueError, AttributeError):
        return None


class LlamaCppChat:
    """The teacher GGUF (`--teacher FILE.gguf`, or `smollm2`) in-process, asked as Ollama would be
    (`serving.request_for` on the GGUF's chat template); one request at a time, in a worker thread."""

    def __init__(self, s: ChatSettings):
        import asyncio

        from engines import local_engine

        self.s = s
        self.url = f"{local_engine.ENGINE}:{s.model}"
        self._model: local_engine.LocalModel | None = None
        self._lock = asyncio.Lock()

    async def complete(self, messages: list[dict]) -> Reply:
        import asyncio

        from contract import serving
        from engines import local_engine

        system, user = _one_exchange(messages)
        async with self._lock:
            try:
                if self._model is None:
                    self._model = await asyncio.to_thread(
                        local_engine.LocalModel, self.s.model, self.s.lora, self.s.n_ctx
                    )
                request = self._model.request_for(user, system)
                options = {"temperature": self.s.temperature, "num_predict": self.s.max_tokens}
                # No timeout: a thread cannot be stopped, and a second request must not run beside it.
                text, stats = await asyncio.to_thread(self._model.complete, request, options)
            except (local_engine.EngineError, serving.ServingError) as e:
                raise Fatal(f"the {self.s.role} {self.s.model!r}: {e}") from e
        return Reply(text, stats.get("prompt_eval_count") or 0, stats.get("eval_count") or 0)

    async def aclose(self) -> None:
        if self._model is not None:
            self._model.close()
            self._model = None


BACKENDS: dict[str, Callable[[ChatSettings], ChatBackend]] = {
    "ollama": OllamaChat,
    "openai": OpenAIChat,
    "llama.cpp": LlamaCppChat,
}


def make_backend(s: ChatSettings) -> ChatBackend:
    if s.backend not in BACKENDS:
        raise Fatal(f"unknown backend {s.backend!r}: use one of {', '.join(BACKENDS)}")
    return BACKENDS[s.backend](s)


# The flags naming the backend, for the options of every verb that asks a chat model (TeacherOptions,
# JudgeOptions): declared here once, each call a fresh dataclass field (a field belongs to one class).
def backend_option() -> Any:
    return option(
        "ollama", "ollama, openai (any OpenAI-compatible endpoint) or llama.cpp (a GGUF in-process)"
    )


def base_url_option() -> Any:
    return option(None, "Server URL (default: OLLAMA_HOST / localhost:11434, or api.openai.com)")


def api_key_env_option() -> Any:
    return option("OPENAI_API_KEY", "Environment variable holding the API key (openai backend)")
