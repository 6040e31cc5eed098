"""A pool of Ollama hosts behind the backend interface the story service uses: a backend of backends.

A generation goes to a host that has the model (its `/api/tags`, asked again every `tags_ttl` seconds),
the least busy first (requests in flight from this process); a story's next passage goes back to the host
that served its last one while that host has a free slot, or is no busier than the others, since that
host's KV cache holds the story's prompt (it evaluates again only the tokens after the first change).
A host that fails (refused connection, a 5xx, a stream cut off) is set aside for `retry` seconds,
doubling up to `max_retry` while it keeps failing; when every host is set aside they are tried anyway,
soonest back first. A request that failed before any text came is tried on the next host; once text has
come the passage cannot be continued elsewhere (the service has shown it), so the error says plainly
that nothing was added. A timeout is not a failed host (it may be loading the model): it is reported.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field

from contract.serving import GenerateRequest, Options

from .core import messages
from .llm import (
    DEFAULT_KEEP_ALIVE,
    STORY,
    HostFailed,
    HostStatus,
    LLMError,
    ModelInfo,
    ModelMissing,
    OllamaBackend,
    Piece,
    Timeouts,
    Unreachable,
)

log = logging.getLogger(__name__)
STORIES_REMEMBERED = 100_000  # stories whose last host is kept (least recently used forgotten first)


def full_name(model: str) -> str:
    return model if ":" in model else f"{model}:latest"


@dataclass(eq=False)
class Host:
    backend: OllamaBackend
    in_flight: int = 0
    served: int = 0
    failures: int = 0  # in a row; the backoff doubles with each
    down_until: float = 0.0  # time.monotonic() before which the host is set aside
    last_error: str | None = None
    models: frozenset[str] | None = None  # from /api/tags
    models_at: float = -float("inf")

    @property
    def url(self) -> str:
        return self.backend.host

    def down(self, now: float) -> bool:
        return self.down_until > now


@dataclass
class PoolStats:
    """What the pool did, for `story-bot status` and the load test."""

    served: Counter = field(default_factory=Counter)  # host url -> passages finished there
    cache_hits: int = 0  # served by the host that served the story's previous passage
    moved: int = 0  # the story had a host, and another one served it (busy or down)
    retried: int = 0  # failed on a host before any text, then tried on another
    cut_off: int = 0  # a host failed after text had come: the member was told, nothing added


class OllamaPool:
    def __init__(
        self,
        hosts: list[str],
        timeouts: Timeouts | None = None,
        *,
        per_host: int = 1,
        retry: float = 5.0,
        max_retry: float = 300.0,
        tags_ttl: float = 30.0,
        keep_alive: float | str | None = DEFAULT_KEEP_ALIVE,
    ):
        if not hosts:
            raise ValueError("a pool needs at least one Ollama host")
        self.hosts = [Host(OllamaBackend(h, timeouts, keep_alive)) for h in dict.fromkeys(hosts)]
        self.host = self.hosts[0].url  # the default host, named in messages
        self.timeouts = self.hosts[0].backend.timeouts
        self.per_host, self.retry, self.max_retry, self.tags_ttl = per_host, retry, max_retry, tags_ttl
        self.stats = PoolStats()
        self._last: OrderedDict[str, Host] = OrderedDict()  # story -> the host of its last passage

    async def close(self) -> None:
        for h in self.hosts:
            await h.backend.close()

    # --- the backend interface -------------------------------------------------------------------
    async def model_info(self, model: str) -> ModelInfo:
        errors: list[str] = []
        for host in await self._candidates(model, set()):
            try:
                return await host.backend.model_info(model)
            except (Unreachable, HostFailed, ModelMissing) as exc:
                self._failed(host, exc)
                errors.append(str(exc))
        raise self._nowhere(model, errors)

    async def generate(
        self, model: str, request: GenerateRequest, options: Options
    ) -> AsyncGenerator[Piece, None]:
        story = STORY.get()
        tried: set[Host] = set()
        errors: list[str] = []
        while True:
            candidates = await self._candidates(model, tried)
            if not candidates:
                raise self._nowhere(model, errors)
            host = self._choose(candidates, story)
            tried.add(host)
            came = False
            host.in_flight += 1
            try:
                async with aclosing(host.backend.generate(model, request, options)) as pieces:
                    async for piece in pieces:
                        came = came or bool(piece.text)
                        if piece.done:  # counted first: the caller may stop listening at this piece
                            self._served(host, story)
                        yield piece
                        if piece.done:
                            return
            except (Unreachable, HostFailed, ModelMissing) as exc:
                self._failed(host, exc)
                if came:
                    self.stats.cut_off += 1
                    raise HostFailed(
                        f"the Ollama server at {host.url} stopped in the middle of this passage; nothing was "
                        "added to the story: ask again (another server will take it)"
                    ) from exc
                self.stats.retried += 1
                errors.append(str(exc))
                continue
            finally:
                host.in_flight -= 1
            raise HostFailed(
                f"the stream from Ollama at {host.url} ended without its final record: try again"
            )

    # --- choosing a host ---------------------------------------------------------------------------
    async def _candidates(self, model: str, tried: set[Host]) -> list[Host]:
        """The hosts not yet tried that hold the model: those not set aside, else (every one is) all of
        them, soonest back first."""
        now = time.monotonic()
        left = [h for h in self.hosts if h not in tried]
        up = [h for h in left if not h.down(now)]
        pool = up or sorted(left, key=lambda h: h.down_until)
        found = await asyncio.gather(*(self._has(h, model) for h in pool))
        return [h for h, has in zip(pool, found, strict=True) if has]

    def _choose(self, candidates: list[Host], story: str | None) -> Host:
        least = min(candidates, key=lambda h: (h.in_flight, h.served))
        last = self._last.get(story) if story else None
        if last is None:
            return least
        if last in candidates and (last.in_flight < self.per_host or last.in_flight <= least.in_flight):
            return last
        return least

    async def _has(self, host: Host, model: str) -> bool:
        """Whether the host holds the model, by its /api/tags (asked again after tags_ttl seconds). A host
        that cannot answer is set aside."""
        if time.monotonic() - host.models_at > self.tags_ttl or host.models is None:
            try:
                async with asyncio.timeout(host.backend.timeouts.connect * 2):
                    listed = await host.backend.client.list()
            except Exception as exc:
                self._failed(host, _as_error(host, exc))
                return False
            host.models = frozenset(full_name(m.model or "") for m in listed.models)
            host.models_at = time.monotonic()
        return full_name(model) in host.models

    def _served(self, host: Host, story: str | None) -> None:
        host.served += 1
        host.failures, host.down_until, host.last_error = 0, 0.0, None
        self.stats.served[host.url] += 1
        if story:
            last = self._last.pop(story, None)
            if last is host:
                self.stats.cache_hits += 1
            elif last is not None:
                self.stats.moved += 1
            self._last[story] = host
            if len(self._last) > STORIES_REMEMBERED:
                self._last.popitem(last=False)

    def _failed(self, host: Host, exc: LLMError) -> None:
        if isinstance(exc, ModelMissing):  # the host is fine; its list of models is not
            host.models, host.models_at = None, -float("inf")
            return
        host.failures += 1
        wait = min(self.max_retry, self.retry * 2 ** (host.failures - 1))
        host.down_until, host.last_error = time.monotonic() + wait, str(exc)
        log.warning("Ollama host %s set aside for %gs: %s", host.url, wait, exc)

    def _nowhere(self, model: str, errors: list[str]) -> LLMError:
        hosts = ", ".join(h.url for h in self.hosts)
        now = time.monotonic()
        if not errors and all(h.down(now) for h in self.hosts):  # none could even list its models
            errors = [h.last_error or "" for h in self.hosts]
        if errors and all("not reachable" in e for e in errors):
            return Unreachable(
                f"no Ollama server of the pool ({hosts}) is reachable: start them, or fix "
                "STORY_BOT_OLLAMA_HOSTS"
            )
        if errors:
            return HostFailed(f"every Ollama server that holds {model!r} failed ({errors[-1]}): try again")
        return ModelMissing(
            f"no Ollama server of the pool ({hosts}) holds the model {model!r}: create or pull it there "
            + messages.get_the_model(model)
        )

    # --- status ----------------------------------------------------------------------------------
    async def status(self) -> list[HostStatus]:
        """Each host: reachable or why not, its models (/api/tags), those loaded now (/api/ps), and
        this process's load on it."""
        return list(await asyncio.gather(*(host_status(h, self.stats) for h in self.hosts)))


async def host_status(host: Host, stats: PoolStats | None = None) -> HostStatus:
    out: HostStatus = {
        "host": host.url,
        "in_flight": host.in_flight,
        "served": host.served,
        "set_aside_s": max(0.0, host.down_until - time.monotonic()),
        "last_error": host.last_error,
    }
    try:
        async with asyncio.timeout(host.backend.timeouts.connect * 2):
            tags = await host.backend.client.list()
            loaded = await host.backend.client.ps()
    except Exception as exc:
        return {**out, "up": False, "error": str(_as_error(host, exc))}
    return {
        **out,
        "up": True,
        "models": sorted(m.model or "" for m in tags.models),
        "loaded": sorted(m.model or "" for m in loaded.models),
    }


def _as_error(host: Host, exc: BaseException) -> LLMError:
    if isinstance(exc, TimeoutError):
        return Unreachable(
            f"Ollama at {host.url} did not answer within {host.backend.timeouts.connect * 2:g}s"
        )
    try:
        return host.backend._error(exc, "")
    except Exception:  # not an error the backend knows: the host answered nonsense
        return HostFailed(f"Ollama at {host.url} answered what it should not ({type(exc).__name__}: {exc})")
