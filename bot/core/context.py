"""The model's context: the newest passages that fit its window, in one place and one order.

Everything that goes into the context is placed here, so a later part (memory, lorebook, author's note,
rolling summaries) is one more entry in :func:`build_context`'s order, and the generation record keeps
which parts were used (:meth:`Context.record`). Today the order is simply: the story's passages, oldest
first, as many of the newest as fit.

Sizes are counted in tokens when the model's tokenizer is known (a local `tokenizer.json`), else
estimated from characters (`chars_per_token`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pipeline import prompt as writer_prompt

from .story import Passage

SEPARATOR = "\n\n"
#: Tokens kept free for the chat template's own markers around the writer prompt.
TEMPLATE_MARGIN = 32


class Counter(Protocol):
    unit: str

    def count(self, text: str) -> int: ...


@dataclass(frozen=True)
class CharCounter:
    """An estimate in tokens from characters, for models whose tokenizer we do not have."""

    chars_per_token: float = 3.5
    unit: str = "chars"

    def count(self, text: str) -> int:
        return math.ceil(len(text) / self.chars_per_token)


class TokenizerCounter:
    """Exact token counts from a Hugging Face `tokenizer.json` (the `tokenizers` library, no torch)."""

    unit = "tokens"

    def __init__(self, path: str | Path):
        try:
            from tokenizers import Tokenizer
        except ImportError:  # pragma: no cover - depends on the install
            raise ValueError(
                "counting tokens needs the `tokenizers` package: pip install tokenizers, "
                "or leave `tokenizer` unset to count characters"
            ) from None
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise ValueError(f"no tokenizer at {path}: give the model's tokenizer.json (or its folder)")
        self._tok = Tokenizer.from_file(str(path))

    def count(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False).ids)


@dataclass(frozen=True)
class Budget:
    """The model's window and what must stay free in it."""

    window: int  # num_ctx, in tokens
    num_predict: int  # the answer's (and reasoning's) token budget

    def for_context(self, counter: Counter, direction: str | None, length: str | None) -> int:
        frame = writer_prompt.render_prompt("x", direction, length)  # the prompt around the context
        return self.window - self.num_predict - counter.count(frame) - TEMPLATE_MARGIN


@dataclass
class Context:
    text: str
    passage_ids: list[int] = field(default_factory=list)
    dropped: int = 0  # older passages left out
    cut: bool = False  # the oldest passage kept was cut at its start
    size: int = 0
    budget: int = 0
    unit: str = "chars"

    def record(self) -> dict:
        """What the generation record keeps about this context (JSON)."""
        return {
            "parts": ["passages"],
            "passage_ids": self.passage_ids,
            "dropped": self.dropped,
            "cut": self.cut,
            "size": self.size,
            "budget": self.budget,
            "unit": self.unit,
        }


class ContextTooSmall(ValueError):
    pass


def build_context(
    passages: Sequence[Passage],
    counter: Counter,
    budget: Budget,
    direction: str | None = None,
    length: str | None = None,
) -> Context:
    """The newest passages that fit, oldest first; the oldest kept one is cut at a sentence if needed."""
    room = budget.for_context(counter, direction, length)
    if room < 16:
        raise ContextTooSmall(
            f"the model's window of {budget.window} tokens leaves no room for the story after "
            f"{budget.num_predict} tokens for the answer: raise num_ctx or ask for a shorter passage"
        )
    kept: list[Passage] = []
    texts: list[str] = []
    used = 0
    cut = False
    for p in reversed(passages):
        cost = counter.count(p.text) + (counter.count(SEPARATOR) if texts else 0)
        if used + cost <= room:
            kept.append(p)
            texts.append(p.text)
            used += cost
            continue
        left = room - used - (counter.count(SEPARATOR) if texts else 0)
        tail = _tail_that_fits(p.text, counter, left)
        if tail:
            kept.append(p)
            texts.append(tail)
            used += counter.count(tail) + (counter.count(SEPARATOR) if len(texts) > 1 else 0)
            cut = True
        break
    kept.reverse()
    texts.reverse()
    return Context(
        text=SEPARATOR.join(texts),
        passage_ids=[p.id for p in kept],
        dropped=len(passages) - len(kept),
        cut=cut,
        size=used,
        budget=room,
        unit=counter.unit,
    )


_SENTENCE_START = re.compile(r"(?<=[.!?…\"'”’)\]])\s+(?=\S)|\n+")


def _tail_that_fits(text: str, counter: Counter, room: int) -> str:
    """The longest end of `text` that starts at a sentence (else a word) and fits in `room`."""
    if room <= 0:
        return ""
    for pattern in (_SENTENCE_START, re.compile(r"\s+")):
        for m in pattern.finditer(text):
            tail = text[m.end() :]
            if tail and counter.count(tail) <= room:
                return tail
    return ""
