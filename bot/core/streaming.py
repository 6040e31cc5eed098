"""The one loop over a model's streamed pieces: a passage reads it as it grows, a summary joined."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field

from contract import prompt as writer_prompt
from contract.serving import GenerateRequest, Options

from ..llm import Backend, Stats


@dataclass
class Output:
    """What the model has written so far (one object, updated as pieces arrive)."""

    text: str = ""
    stats: Stats = field(default_factory=Stats)  # the server's figures, once done
    host: str | None = None  # the server writing it (a pool has several)
    done: bool = False  # the last one: the server finished, or the answer closed
    cut: bool = False  # done because the answer closed (`</answer>`), not by the server


async def stream(
    backend: Backend,
    model: str,
    request: GenerateRequest,
    options: Options,
    *,
    until_answer_closes: bool = False,
) -> AsyncGenerator[Output, None]:
    """The output after each piece, until the server is done (or, `until_answer_closes`, the answer is
    complete: the stream is closed so the server stops the model, even where the stop option was not
    honoured; what follows would not be used)."""
    out = Output()
    pieces = backend.generate(model, request, options)  # closing this generator stops the server's stream
    async with aclosing(pieces):
        async for piece in pieces:
            out.host = out.host or piece.host
            out.text += piece.text
            if piece.done:
                out.stats, out.done = piece.stats, True
            elif until_answer_closes and (closed := writer_prompt.cut_at_answer_close(out.text)) is not None:
                out.text, out.stats = closed, {**piece.stats, "done_reason": "stop"}
                out.done = out.cut = True
            yield out
            if out.done:
                return


async def collect(backend: Backend, model: str, request: GenerateRequest, options: Options) -> str:
    """The whole output of a request."""
    text = ""
    async with aclosing(stream(backend, model, request, options)) as outputs:
        async for out in outputs:
            text = out.text
    return text
