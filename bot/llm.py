"""The Ollama backend: one module that talks to the server, through the official `ollama` async client.

It streams a generation, applies timeouts (connecting, waiting for each piece, the whole passage) and
turns every failure into an :class:`LLMError` whose message can be shown to writers as it is.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol, TypedDict, TypeVar, cast

import httpx
import ollama

from contract.serving import GenerateRequest, Options, resolve_host, served_template, system_of

from .core import messages
from .core.configurable import setting

T = TypeVar("T")
log = logging.getLogger(__name__)


class LLMError(Exception):
    """A generation that could not be done; `str(error)` is a clear message for the channel."""


class Unreachable(LLMError):
    pass


class ModelMissing(LLMError):
    pass


class StreamFailed(LLMError):
    pass


class HostFailed(StreamFailed):
    """The server itself failed (a 5xx, a stream cut off): another host of a pool may do the request."""


#: The story a generation is for (its channel id), set by the story service: a pool of hosts sends the
#: story's next passage to the host that served its last one, whose KV cache holds the story's prompt.
STORY: ContextVar[str | None] = ContextVar("story", default=None)


class TimedOut(LLMError):
    pass


class EmptyAnswer(LLMError):
    pass


#: Seconds a model's TEMPLATE and parameters are trusted before /api/show is asked again.
MODEL_INFO_TTL = 300.0
#: How long Ollama keeps the model loaded after a request (its own default is 5 minutes, envconfig/config.go
#: `keepAlive`, v0.33.0-rc2): longer than a
#: writer's pause between passages, so the next one neither reloads the model nor loses its prompt cache.
DEFAULT_KEEP_ALIVE = "30m"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    template: str
    system: str
    num_ctx: int | None  # the model's own PARAMETER num_ctx, if it sets one
    stop: tuple[str, ...] = ()  # the model's own PARAMETER stop values


@dataclass(frozen=True)
class Timeouts:
    """How long a backend waits; each field is also a bot setting (bot/core/configurable.py)."""

    connect: float = setting(5.0, gt=0, name="connect_timeout", help="Seconds to connect to a server.")
    idle: float = setting(
        120.0,
        gt=0,
        name="idle_timeout",
        help="Seconds to wait for a reply's first piece (a model loading) and between pieces.",
    )
    total: float = setting(600.0, gt=0, name="total_timeout", help="Seconds a whole passage may take.")
    # A server sends nothing before the first token (Ollama: server/routes.go streams only what
    # llm/llama_server.go's completion yields), and a cold one evaluates the whole prompt first (a 7B
    # model on a CPU: tens of tokens a second).
    prompt_per_1k: float = setting(
        60.0,
        ge=0,
        name="prompt_timeout_per_1k_tokens",
        help="More seconds to wait for a reply's first piece per 1000 prompt tokens: a server evaluates a "
        "cold prompt whole before it sends any text (minutes for a long one on a CPU).",
    )

    def first(self, prompt: str) -> float:
        """Seconds to wait for a request's first piece: `idle` plus the prompt's evaluation on a cold
        server, the prompt counted so that no script is undercounted (bot.core.context.CharCounter)."""
        return self.idle + self.prompt_per_1k * prompt_tokens(prompt) / 1000


def prompt_tokens(prompt: str) -> int:
    from .core.context import CharCounter

    return CharCounter().count(prompt)


class Stats(TypedDict, total=False):
    """A finished stream's figures, the same from every backend (the generation row keeps them)."""

    first_token_s: float | None  # seconds to the first piece
    prompt_tokens: int | None
    output_tokens: int | None
    model_ns: int | None  # the server's whole time on the request
    done_reason: str | None  # "stop" or "length"


class HostStatus(TypedDict, total=False):
    """One server as `story-bot status` shows it: up (its models, those loaded) or why not; a pool's
    host also with this process's load on it."""

    host: str
    up: bool
    error: str  # why it is down
    models: list[str]
    loaded: list[str]
    in_flight: int
    served: int
    set_aside_s: float
    last_error: str | None


@dataclass
class Piece:
    """A piece of streamed text, or (done=True) the final record with the server's figures."""

    text: str
    done: bool = False
    stats: Stats = field(default_factory=Stats)
    host: str | None = None  # the server writing it (a pool has several)


class Backend(Protocol):
    """What the story service runs on: one Ollama server (OllamaBackend), a pool of them (bot/pool.py),
    the GGUF in-process (bot/local.py) or an OpenAI-compatible engine (bot/openai_backend.py); each
    reads its stream through :func:`timed` and raises the LLMError kinds above."""

    async def model_info(self, model: str) -> ModelInfo: ...

    def generate(self, model: str, request: GenerateRequest, options: Options) -> AsyncGenerator[Piece, None]:
        """Stream text pieces, then one Piece(done=True) with the figures; closing it stops the model."""
        ...

    async def close(self) -> None: ...


class OllamaBackend:
    def __init__(
        self,
        host: str | None = None,
        timeouts: Timeouts | None = None,
        keep_alive: float | str | None = DEFAULT_KEEP_ALIVE,
    ):
        self.host = resolve_host(host)  # the argument, else OLLAMA_HOST, else the default
        self.timeouts = timeouts or Timeouts()
        self.keep_alive = keep_alive  # sent with every request (a Go duration or seconds; None: the server's)
        t = self.timeouts
        # No httpx read timeout: it arms and cancels a timer around every socket read, a quarter of the
        # client's CPU with 100 streams; _Watchdog keeps the idle and total limits with one timer a stream.
        # No connection cap either: StoryService's slots bound the requests in flight, and a second,
        # hidden queue here would hold a request back for a whole passage (httpx's default is 100).
        # No idle connections kept: httpcore (1.0) hands every request of a burst the same idle
        # connection, then re-queues all but one, which staggered 100 simultaneous requests over ~0.5 s;
        # a fresh connection per passage costs a TCP connect, nothing beside a passage.
        self.client = ollama.AsyncClient(
            host=self.host,
            timeout=httpx.Timeout(connect=t.connect, read=None, write=t.idle, pool=t.idle),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
        )
        self._models: dict[str, tuple[float, asyncio.Task[ModelInfo]]] = {}

    async def close(self) -> None:
        await self.client.close()

    async def model_info(self, model: str) -> ModelInfo:
        """The model's TEMPLATE, SYSTEM and num_ctx: asked once per model (concurrent callers share the
        one request) and kept for MODEL_INFO_TTL seconds, so a re-created model is picked up."""
        asked, task = self._models.get(model, (0.0, None))
        if task is None or (task.done() and time.monotonic() - asked > MODEL_INFO_TTL):
            task = asyncio.ensure_future(self._show(model))
            self._models[model] = (time.monotonic(), task)
        try:
            return await asyncio.shield(task)  # one waiter cancelled does not cancel the others
        except LLMError:
            if self._models.get(model, (0, None))[1] is task:
                del self._models[model]  # not cached: the next call asks again
            raise

    async def _show(self, model: str) -> ModelInfo:
        try:
            async with asyncio.timeout(self.timeouts.idle):
                shown = await self.client.show(model)
        except ValueError as exc:  # pydantic's ValidationError: the answer is not Ollama's
            fields = sorted({str(e["loc"][0]) for e in getattr(exc, "errors", list)() if e.get("loc")})
            missing = f" (missing or wrong: {', '.join(fields)})" if fields else ""
            raise StreamFailed(
                f"the server at {self.host} answered /api/show for {model!r} not as Ollama does{missing}: "
                "point STORY_BOT_OLLAMA_HOST at an Ollama server (or upgrade it)"
            ) from exc
        except Exception as exc:
            raise self._error(exc, model) from exc
        params = shown.parameters or ""
        system = system_of(shown.modelfile or "")
        if system and served_template(shown.template or ""):
            # A model made FROM another inherits that one's SYSTEM layer (server/model.go parseFromModel,
            # from server/create.go), and only a non-empty SYSTEM replaces it: said, never silently used.
            log.warning(
                "the model %r has a SYSTEM, which becomes the system turn of every raw prompt, in place of "
                "the one its chat template writes: %.80r. If your Modelfile sets none, it came from the "
                "model named in FROM; recreate the model with the system text it was trained with (modelfile "
                "--system) if that is not meant",
                model,
                system,
            )
        return ModelInfo(model, shown.template or "", system, _num_ctx(params), _stops(params))

    async def generate(
        self, model: str, request: GenerateRequest, options: Options
    ) -> AsyncGenerator[Piece, None]:
        """Stream a generation's text pieces, then one final Piece(done=True) with the server's figures."""
        started = time.monotonic()
        first: float | None = None
        stream = None
        repeats = _Repeats()
        try:
            stream = await self.client.generate(
                model, **request.fields(), options=dict(options), stream=True, keep_alive=self.keep_alive
            )
            async with aclosing(timed(stream, self.timeouts, request.prompt)) as parts:
                async for part in parts:
                    if first is None:
                        first = time.monotonic() - started
                    if part.done:
                        yield Piece(part.response or "", True, _stats(part, first), self.host)
                        return
                    repeats.add(part.response or "")
                    yield Piece(part.response or "", host=self.host)
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            raise self._error(exc, model, request.prompt) from exc
        finally:
            if stream is not None:
                # Release the HTTP connection however the stream ended (it is a generator, typed an iterator).
                await cast(AsyncGenerator, stream).aclose()
        if repeats.limit_reached():
            # Not the server failing: Ollama stopped a model stuck on one piece (a pool keeps the host).
            raise StreamFailed(
                f"the model {model!r} wrote {repeats.last!r} over and over, and Ollama stopped it there: "
                "nothing was added; ask again (a new take), or raise repeat_penalty or temperature in options"
            )
        raise HostFailed(
            f"the connection to Ollama at {self.host} closed before the model finished: try again"
        )

    def _error(self, exc: BaseException, model: str, prompt: str = "") -> LLMError:
        if isinstance(exc, LLMError):
            return exc
        if isinstance(exc, ConnectionError | httpx.ConnectError | httpx.ConnectTimeout):
            return Unreachable(
                f"Ollama is not reachable at {self.host}: start it (`ollama serve`) or set "
                "STORY_BOT_OLLAMA_HOST (or OLLAMA_HOST) to where it runs"
            )
        if isinstance(exc, TimeoutError | httpx.TimeoutException):
            return timed_out(model, self.timeouts, exc, prompt)
        if isinstance(exc, ollama.ResponseError):
            if exc.status_code == 404:
                return ModelMissing(
                    f"the model {model!r} is not on the Ollama server at {self.host}: create or pull it "
                    + messages.get_the_model(model)
                )
            if exc.status_code == -1:
                return StreamFailed(f"the model {model!r} stopped with an error mid-passage: {exc.error}")
            failed = HostFailed if exc.status_code >= 500 else StreamFailed
            return failed(f"Ollama answered {exc.status_code} for {model!r}: {exc.error}")
        if isinstance(exc, httpx.HTTPError | ValueError):  # the connection (the host), or what it sent
            broke = HostFailed if isinstance(exc, httpx.HTTPError) else StreamFailed
            return broke(f"the stream from Ollama at {self.host} broke mid-passage ({exc}): try again")
        raise exc


class _Repeats:
    """Ollama ends a stream with no error and no done line once more than REPEAT_LIMIT pieces in a row
    have the same text, spaces trimmed (llm/llama_server.go, `tokenRepeat`, v0.33.0-rc2)."""

    LIMIT = 30

    def __init__(self) -> None:
        self.last: str | None = None
        self.count = 0

    def add(self, text: str) -> None:
        trimmed = text.strip()
        self.count = self.count + 1 if trimmed == self.last else 0
        self.last = trimmed

    def limit_reached(self) -> bool:
        return self.count >= self.LIMIT


class Tripped(TimeoutError):
    """A stream's time limit ran out: `first` when no piece had come, `total` for the whole passage."""

    def __init__(self, waited: float, first: bool, total: bool):
        super().__init__(f"waited {waited:g}s")
        self.waited, self.first, self.total = waited, first, total


async def timed(stream: AsyncIterator[T], timeouts: Timeouts, prompt: str = "") -> AsyncGenerator[T, None]:
    """The stream's items within the limits (raising :class:`Tripped`): the first within
    `timeouts.first(prompt)`, each next within `idle`, all within `total`. Every backend reads through it."""
    guard = _Watchdog(timeouts.idle, timeouts.total, timeouts.first(prompt))
    try:
        while True:
            try:
                item = await guard.next(stream)
            except StopAsyncIteration:
                return
            yield item
    finally:
        guard.stop()


def timed_out(model: str, timeouts: Timeouts, exc: BaseException, prompt: str = "") -> TimedOut:
    """The message for a time limit that ran out, saying which one and why it was that long."""
    t = timeouts
    if isinstance(exc, Tripped) and exc.first and not exc.total:
        return TimedOut(
            f"the model {model!r} did not answer in time: nothing came in {exc.waited:.0f}s, the wait for "
            f"a first word ({t.idle:g}s, plus {t.prompt_per_1k:g}s per 1000 prompt tokens for a server "
            f"that evaluates the prompt cold; this one is about {prompt_tokens(prompt)} tokens): the server "
            "may be busy, loading the model or slow at prompts; try again, or raise "
            "STORY_BOT_PROMPT_TIMEOUT_PER_1K_TOKENS"
        )
    if isinstance(exc, Tripped) and exc.total:
        return TimedOut(
            f"the model {model!r} did not answer in time: the passage took more than {t.total:g}s in all "
            "(STORY_BOT_TOTAL_TIMEOUT); try again, or ask for a shorter one"
        )
    return TimedOut(
        f"the model {model!r} did not answer in time (waited up to {t.idle:g}s for a piece, "
        f"{t.total:g}s in all): the server may be busy or loading it; try again"
    )


class _Watchdog:
    """A stream's time limits: `first` seconds for the first piece, `idle` for each next one and `total`
    for the whole passage, kept by one timer that is re-armed rarely rather than one per read.

    It cancels the reading task only while that task waits in :meth:`wait`, never while the driver
    holds a piece, and turns that cancellation into :class:`Tripped`."""

    def __init__(self, idle: float, total: float, first: float | None = None):
        self.loop = asyncio.get_running_loop()
        self.idle = idle
        self.started = self.loop.time()
        self.first = idle if first is None else first
        self.deadline = self.started + total
        self.read_at = 0.0
        self.pieces = 0
        self.reader: asyncio.Task | None = None  # the task waiting for a piece, if one is
        self.tripped = False
        self.handle = self.loop.call_at(min(self.started + self.first, self.deadline), self._check)

    def _limit(self) -> float:
        return self.idle if self.pieces else self.first

    def _trip(self) -> Tripped:
        now = self.loop.time()
        return Tripped(
            now - (self.read_at if self.pieces else self.started), not self.pieces, now >= self.deadline
        )

    async def next(self, stream: AsyncIterator[T]) -> T:
        """The stream's next item (StopAsyncIteration at its end) within the limits."""
        self.read_at = self.loop.time()
        if self.read_at >= self.deadline:
            raise self._trip()
        reader = self.reader = asyncio.current_task()
        assert reader is not None  # always awaited in a task
        try:
            item = await anext(stream)
            self.pieces += 1
            return item
        except asyncio.CancelledError:
            if self.tripped and reader.uncancel() == 0:
                # why: the cancellation is this watchdog's own way of stopping the read, not a cause
                raise self._trip() from None
            raise
        finally:
            self.reader = None

    def _check(self) -> None:
        now = self.loop.time()
        due = now + self.idle  # nobody waiting: look again later
        if self.reader is not None:
            due = min(self.read_at + self._limit(), self.deadline)
            if now >= due:
                self.tripped = True
                self.reader.cancel()
                return
        self.handle = self.loop.call_at(due, self._check)

    def stop(self) -> None:
        self.handle.cancel()


def _num_ctx(parameters: str) -> int | None:
    m = re.search(r"(?m)^\s*num_ctx\s+(\d+)", parameters)
    return int(m.group(1)) if m else None


def _stops(parameters: str) -> tuple[str, ...]:
    """The stop values in /api/show's parameters text (`stop   "<|im_end|>"`, one a line: Go's `%#v` of
    each value, server/routes.go GetModelInfo, v0.33.0-rc2)."""
    values = re.findall(r"(?m)^\s*stop\s+(.+?)\s*$", parameters)
    return tuple(v[1:-1] if len(v) > 1 and v[0] == v[-1] == '"' else v for v in values)


def _stats(part, first: float | None) -> Stats:
    return {
        "first_token_s": first,
        "prompt_tokens": part.prompt_eval_count,
        "output_tokens": part.eval_count,
        "model_ns": part.total_duration,
        "done_reason": part.done_reason,
    }
