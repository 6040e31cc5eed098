"""The OpenAI-compatible backend (vLLM, SGLang, TGI, llama.cpp's servers), via the `openai` client.

A bot.llm.Backend as OllamaBackend is, fed the same requests (`contract/serving.py` builds them):
- a model whose chat template is ours (`chat_template` in the settings names where it is: the GGUF, the
  merged Hugging Face folder or a template file) gets the whole chat text, byte for byte what Ollama gets
  in raw mode, through `/v1/completions` (text in, text out: no template of the engine's applies);
- any other model gets the writer prompt as the user turn through `/v1/chat/completions`, where the
  engine's chat template wraps it, as Ollama's does for a plain model.
Both stream (server-sent events). The model name is the engine's: a base (`--served-model-name`) or a
LoRA adapter served beside it (vLLM's `--lora-modules NAME=PATH`), so `channel_models` picks an adapter
per channel. Ollama's option names are sent by the engines' names; `num_ctx` is the engine's own, fixed
at launch (vLLM's `--max-model-len`, read from `/v1/models` where it lists it). These engines keep a
model loaded while they run: there is no keep-alive to send.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx2
import openai

from contract.serving import GenerateRequest, Options, served_template, template_of

from .core import messages
from .llm import (
    MODEL_INFO_TTL,
    HostFailed,
    HostStatus,
    LLMError,
    ModelInfo,
    ModelMissing,
    Piece,
    Stats,
    StreamFailed,
    Timeouts,
    Unreachable,
    timed,
    timed_out,
)

#: Ollama's option names -> the request fields: the OpenAI API's own, else the names vLLM, SGLang and
#: llama.cpp's servers accept beside them (vLLM and SGLang call repeat_penalty `repetition_penalty`).
_FIELDS = {
    "num_predict": ("max_tokens",),
    "temperature": ("temperature",),
    "top_p": ("top_p",),
    "seed": ("seed",),
    "stop": ("stop",),
    "top_k": ("top_k",),
    "min_p": ("min_p",),
    "repeat_penalty": ("repeat_penalty", "repetition_penalty"),
}


class OpenAIBackend:
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeouts: Timeouts | None = None,
        chat_templates: Mapping[str, str | Path] | None = None,
        http_client: httpx2.AsyncClient | None = None,
    ):
        """`chat_templates`: model name -> where its chat template is (`*` for every other model); a
        model without one is a plain model, asked through the chat endpoint."""
        self.host = base_url.rstrip("/")
        self.timeouts = t = timeouts or Timeouts()
        self.chat_templates = dict(chat_templates or {})
        # No retries inside the client: a failed request is the caller's to retry (or to say).
        # No read timeout, no connection cap: as in OllamaBackend, bot.llm.timed keeps the limits and the
        # story service's slots bound the requests in flight.
        self.client = openai.AsyncOpenAI(
            base_url=self.host,
            api_key=api_key or "none",  # the client insists on one; engines started without a key ignore it
            max_retries=0,
            http_client=http_client
            or httpx2.AsyncClient(
                timeout=httpx2.Timeout(connect=t.connect, read=None, write=t.idle, pool=t.idle),
                limits=httpx2.Limits(max_connections=None, max_keepalive_connections=0),
            ),
        )
        self._served: tuple[float, dict[str, int | None]] | None = None  # when asked, model -> its window
        self._templates: dict[Path, str] = {}

    async def close(self) -> None:
        await self.client.close()

    async def model_info(self, model: str) -> ModelInfo:
        served = await self._models()
        if model not in served:
            self._served = None  # asked again next time: the engine may have been restarted with it
            raise ModelMissing(
                f"the engine at {self.host} serves no model named {model!r} (it serves "
                f"{', '.join(sorted(served)) or 'none'}): start it with that name (vLLM: "
                "--served-model-name, or --lora-modules NAME=PATH for an adapter) or set STORY_BOT_MODEL "
                f"(or channel_models) to one it serves; {messages.get_the_model(model)}"
            )
        template = self._template(model)
        trained = served_template(template) if template else None
        return ModelInfo(model, template, "", served[model], tuple(trained.stops) if trained else ())

    async def status(self) -> HostStatus:
        """For `story-bot status`: up or why not, and the models it serves (all loaded while it runs)."""
        self._served = None
        try:
            models = sorted(await self._models())
        except LLMError as exc:
            return {"host": self.host, "up": False, "error": str(exc)}
        return {"host": self.host, "up": True, "models": models, "loaded": models}

    def _template(self, model: str) -> str:
        where = self.chat_templates.get(model) or self.chat_templates.get("*")
        if where is None:
            return ""
        path = Path(where)
        if path not in self._templates:
            try:
                self._templates[path] = template_of(path)
            except ValueError as exc:
                raise ModelMissing(f"{exc} (STORY_BOT_CHAT_TEMPLATE / chat_templates)") from exc
        return self._templates[path]

    async def _models(self) -> dict[str, int | None]:
        """The engine's model names (bases and adapters) and each one's window where it says it."""
        if self._served is None or time.monotonic() - self._served[0] > MODEL_INFO_TTL:
            try:
                async with asyncio.timeout(self.timeouts.connect * 2):
                    page = await self.client.models.list()
            except Exception as exc:
                raise self._error(exc, "") from exc
            # vLLM lists max_model_len beside each model; the API itself has no window.
            windows = {m.id: getattr(m, "max_model_len", None) for m in page.data}
            self._served = (time.monotonic(), windows)
        return self._served[1]

    async def generate(
        self, model: str, request: GenerateRequest, options: Options
    ) -> AsyncGenerator[Piece, None]:
        """Stream a generation's text pieces, then one final Piece(done=True) with the engine's figures."""
        started = time.monotonic()
        first: float | None = None
        reason, usage, chunks_seen = None, None, 0
        chunks = self._chunks(model, request, options)
        try:
            async with aclosing(chunks), aclosing(timed(chunks, self.timeouts, request.prompt)) as timely:
                async for chunk in timely:
                    if first is None:
                        first = time.monotonic() - started
                    usage = chunk.usage or usage  # vLLM and SGLang send it last, on a chunk with no choices
                    for choice in chunk.choices:
                        text = choice.text if request.raw else (choice.delta.content or "")
                        reason = choice.finish_reason or reason
                        if text:
                            chunks_seen += 1
                            yield Piece(text, host=self.host)
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            raise self._error(exc, model, request.prompt) from exc
        if reason is None:  # the stream ended without a finish reason: it was cut off
            raise HostFailed(f"the connection to the engine at {self.host} closed before the model finished")
        yield Piece("", True, _stats(usage, chunks_seen, reason, first, started), self.host)

    async def _chunks(
        self, model: str, request: GenerateRequest, options: Options
    ) -> AsyncGenerator[Any, None]:
        """The stream's chunks; the request itself is sent at the first read, under the same time limits."""
        fields: dict = {}
        for name, value in options.items():
            for field in _FIELDS.get(name, ()):
                fields[field] = value
        known = {"max_tokens", "temperature", "top_p", "seed", "stop"}
        args = {k: v for k, v in fields.items() if k in known}
        extra = {k: v for k, v in fields.items() if k not in known}
        common: dict[str, Any] = dict(
            model=model, stream=True, stream_options={"include_usage": True}, extra_body=extra
        )
        if request.raw:
            stream = await self.client.completions.create(prompt=request.prompt, **common, **args)
        else:
            turns: list[Any] = [{"role": "user", "content": request.prompt}]
            if request.system:
                turns.insert(0, {"role": "system", "content": request.system})
            stream = await self.client.chat.completions.create(messages=turns, **common, **args)
        async with stream:  # closes the HTTP response, which stops the engine's generation
            async for chunk in stream:
                yield chunk

    def _error(self, exc: BaseException, model: str, prompt: str = "") -> LLMError:
        if isinstance(exc, LLMError):
            return exc
        if isinstance(exc, TimeoutError | openai.APITimeoutError):
            return timed_out(model, self.timeouts, exc, prompt)
        if isinstance(exc, openai.APIConnectionError | ConnectionError):
            return Unreachable(
                f"the engine is not reachable at {self.host}: start it (vLLM: `vllm serve`; llama.cpp: "
                "`llama-server` or `python -m llama_cpp.server`) or set STORY_BOT_OPENAI_URL to where it runs"
            )
        if isinstance(exc, openai.APIStatusError):
            detail = _detail(exc)
            if exc.status_code == 404:
                return ModelMissing(
                    f"the engine at {self.host} has no model {model!r} ({detail}): serve it under that "
                    f"name, or pick one it serves; {messages.get_the_model(model)}"
                )
            if exc.status_code in (401, 403):
                return StreamFailed(
                    f"the engine at {self.host} refused the API key ({detail}): set STORY_BOT_OPENAI_API_KEY"
                )
            failed = HostFailed if exc.status_code >= 500 else StreamFailed
            return failed(f"the engine at {self.host} answered {exc.status_code} for {model!r}: {detail}")
        if isinstance(exc, openai.APIError | httpx2.HTTPError | ValueError):  # the connection, or what came
            return HostFailed(
                f"the stream from the engine at {self.host} broke mid-passage ({exc}): try again"
            )
        raise exc


def _detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):  # OpenAI's {"error": {"message": ...}}, or llama.cpp's {"detail": ...}
        error = body.get("error", body)
        return (
            str(error.get("message") or error.get("detail") or error)
            if isinstance(error, dict)
            else str(error)
        )
    return exc.message


def _stats(usage, chunks: int, reason: str, first: float | None, started: float) -> Stats:
    return {
        "first_token_s": first,
        "prompt_tokens": usage.prompt_tokens if usage else None,
        # Without usage (llama-cpp-python's server sends none in a stream): the chunks that held text,
        # a token each in llama.cpp's and vLLM's streams (a character split over tokens is held back).
        "output_tokens": usage.completion_tokens if usage else chunks,
        "model_ns": int((time.monotonic() - started) * 1e9),  # the engines report no durations: ours
        "done_reason": "length" if reason == "length" else "stop",
    }
