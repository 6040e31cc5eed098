"""The local backend: the bot's model run in-process by llama.cpp (engines/local_engine.py), no server.

A bot.llm.Backend as OllamaBackend is (model_info, generate streaming Pieces with the same final
figures, close), with the same errors, so StoryService, the console and Discord run on it unchanged.
Every model name the bot asks for is the one loaded GGUF. One generation runs at a time, in a worker
thread; a stream closed early stops the model at its next token.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from pathlib import Path

from contract.serving import GenerateRequest, Options
from engines import local_engine
from engines.local_engine import Figures

from .llm import LLMError, ModelInfo, ModelMissing, Piece, Stats, StreamFailed, Timeouts, timed, timed_out

_END = object()


class LlamaCppBackend:
    def __init__(
        self,
        gguf: str | Path,
        lora: str | Path | None = None,
        n_ctx: int = 4096,
        timeouts: Timeouts | None = None,
    ):
        self.gguf, self.lora, self.n_ctx = gguf, lora, n_ctx
        self.host = f"{local_engine.ENGINE}:{gguf}"  # where it runs, for messages
        self.timeouts = timeouts or Timeouts()
        self._model: local_engine.LocalModel | None = None
        self._loading = asyncio.Lock()
        self._busy = asyncio.Lock()  # one generation at a time, like Ollama's default (envconfig NumParallel)

    async def model(self) -> local_engine.LocalModel:
        async with self._loading:
            if self._model is None:
                try:
                    self._model = await asyncio.to_thread(
                        local_engine.LocalModel, self.gguf, self.lora, self.n_ctx
                    )
                except local_engine.EngineError as e:
                    raise ModelMissing(f"{e} (set STORY_BOT_GGUF)") from e
            return self._model

    async def model_info(self, model: str) -> ModelInfo:
        m = await self.model()
        return ModelInfo(m.name, m.template, "", m.n_ctx, tuple(m.trained.stops) if m.trained else (m.eos,))

    async def generate(
        self, model: str, request: GenerateRequest, options: Options
    ) -> AsyncGenerator[Piece, None]:
        """Stream a generation's text pieces, then one final Piece(done=True) with the figures."""
        m = await self.model()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()
        started = loop.time()

        def work() -> None:
            try:
                for chunk in m.stream(request, options, stop.is_set):
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
            except Exception as e:  # noqa: BLE001 - handed to the reader, which maps it
                loop.call_soon_threadsafe(queue.put_nowait, e)
            loop.call_soon_threadsafe(queue.put_nowait, _END)

        async def pieces() -> AsyncIterator:
            while (item := await queue.get()) is not _END:
                yield item

        async with self._busy:
            worker = loop.run_in_executor(None, work)
            first = None
            try:
                async with aclosing(timed(pieces(), self.timeouts, request.prompt)) as items:
                    async for item in items:
                        if isinstance(item, Exception):
                            raise self._error(item, model)
                        first = first if first is not None else loop.time() - started
                        if item.stats is not None:  # the last chunk
                            yield Piece(item.text, True, _stats(item.stats, first))
                            return
                        yield Piece(item.text)
            except TimeoutError as exc:
                raise self._error(exc, model, request.prompt) from exc
            finally:
                stop.set()  # the model stops at its next token; the lock is held until it has
                await asyncio.shield(worker)
        raise StreamFailed(f"the local model {self.gguf} stopped before it finished: try again")

    def _error(self, exc: BaseException, model: str, prompt: str = "") -> LLMError:
        if isinstance(exc, TimeoutError):
            return timed_out(model, self.timeouts, exc, prompt)
        if isinstance(exc, local_engine.EngineError):
            return StreamFailed(str(exc))
        return StreamFailed(f"the local model failed mid-passage ({type(exc).__name__}: {exc})")

    async def close(self) -> None:
        async with self._busy:
            if self._model is not None:
                self._model.close()
                self._model = None


def _stats(s: Figures, first: float | None) -> Stats:
    return {
        "first_token_s": first,
        "prompt_tokens": s["prompt_eval_count"],
        "output_tokens": s["eval_count"],
        "model_ns": s["total_duration"],
        "done_reason": s["done_reason"],
    }
