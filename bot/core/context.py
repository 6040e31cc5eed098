"""The model's context, built in one place and one order, within the model's window.

The context text is what goes into the writer prompt's `### Context:` section, laid out as plain text:

    <memory>                                 the story's pinned premise, tone, rules (always first)

    Earlier: <rolling summary>               the oldest passages, told in brief, when they no longer fit

    <Name>: <lore entry>                     lore entries whose keywords the recent passages mention,
                                             newest mention first (always-on entries before them)
    * * *                                    a scene break between this background and the story

    <passage> ... <passage>                  the newest passages that fit, oldest first

The author's note is not part of this text: it is the prompt's guidance section, placed after the
context (a one-off direction replaces it for that request; see StoryService). Without memory, summary or
lore, the context is the bare passages, as before. Each background part may take at most its share of
the room (:class:`Shares`); the passages get the rest, the newest first, and the oldest kept one is cut
at a sentence if needed. :meth:`Context.record` is what the generation record keeps about it.

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

from .lore import LoreEntry, triggered
from .story import Note, Passage, Summary

SEPARATOR = "\n\n"
SUMMARY_LEAD = "Earlier: "
BREAK = "* * *"  # between the background (memory, summary, lore) and the passages
#: Passages the rolling summary always leaves out, so the newest ones (which undo and regenerate
#: change) stay in full.
KEEP_RECENT = 2
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


@dataclass(frozen=True)
class Shares:
    """The most of the context's room each background part may take; the passages get the rest."""

    memory: float = 0.25
    summary: float = 0.2
    lore: float = 0.25
    scan: int = 4  # the newest passages scanned for lore keywords


@dataclass
class Context:
    text: str
    passage_ids: list[int] = field(default_factory=list)
    dropped: int = 0  # older passages left out (beyond those the summary covers)
    cut: bool = False  # the oldest passage kept was cut at its start
    size: int = 0
    budget: int = 0
    unit: str = "chars"
    memory_id: int | None = None
    summary_id: int | None = None
    summary_cut: bool = False  # the summary was over its share and only its end was kept
    lore: list[LoreEntry] = field(default_factory=list)
    lore_left_out: list[str] = field(default_factory=list)  # triggered but over the lore budget
    #: When passages were dropped or cut: the position up to which a new rolling summary should reach
    #: so that the passages after it take about half of their room again.
    summarise_upto: int | None = None

    @property
    def parts(self) -> list[str]:
        named = [("memory", self.memory_id), ("summary", self.summary_id), ("lore", self.lore)]
        return [name for name, present in named if present] + ["passages"]

    def record(self) -> dict:
        """What the generation record keeps about this context (JSON)."""
        return {
            "parts": self.parts,
            "memory_id": self.memory_id,
            "summary_id": self.summary_id,
            "summary_cut": self.summary_cut,
            "lore": [{"id": e.id, "version": e.version, "name": e.name} for e in self.lore],
            "lore_left_out": self.lore_left_out,
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
    *,
    memory: Note | None = None,
    summary: Summary | None = None,
    lore: Sequence[LoreEntry] = (),
    mentions: str | None = None,
    shares: Shares = Shares(),
) -> Context:
    """The context for the next passage (see the module's docstring for the layout).

    `passages` are those after the summary's (if any); `direction` is the prompt's guidance section (it
    takes room in the window); `mentions` is extra text scanned for lore keywords as the newest (the
    one-off direction).
    """
    room = budget.for_context(counter, direction, length)
    if room < 16:
        raise ContextTooSmall(
            f"the model's window of {budget.window} tokens leaves no room for the story after "
            f"{budget.num_predict} tokens for the answer: raise num_ctx or ask for a shorter passage"
        )
    sep = counter.count(SEPARATOR)
    head: list[str] = []
    ctx = Context(text="", budget=room, unit=counter.unit)
    if memory is not None and memory.text.strip():
        head.append(_memory_text(memory, counter, room, shares))
        ctx.memory_id = memory.id
    if summary is not None and (summary.text or "").strip():
        text = summary.text.strip()
        cap = int(room * shares.summary) - counter.count(SUMMARY_LEAD)
        if counter.count(text) > cap:  # keep its end: the events nearest the passages
            text, ctx.summary_cut = _tail_that_fits(text, counter, cap), True
        if text:
            head.append(SUMMARY_LEAD + text)
            ctx.summary_id = summary.id
    recent = [mentions or "", *(p.text for p in reversed(passages[-shares.scan :]))] if shares.scan else []
    lore_room = int(room * shares.lore)
    for entry in triggered(lore, recent):
        cost = counter.count(entry.paragraph()) + sep
        if cost <= lore_room:
            ctx.lore.append(entry)
            lore_room -= cost
        else:
            ctx.lore_left_out.append(entry.name)
    head += [e.paragraph() for e in ctx.lore]
    if head:
        head.append(BREAK)
    used = sum(counter.count(t) for t in head) + sep * len(head)
    kept, texts, size, ctx.cut = _fit_passages(passages, counter, room - used)
    ctx.text = SEPARATOR.join([*head, *texts])
    ctx.passage_ids = [p.id for p in kept]
    ctx.dropped = len(passages) - len(kept)
    ctx.size = used + size
    if ctx.dropped or ctx.cut:
        ctx.summarise_upto = _summary_reach(passages, counter, room - used)
    return ctx


def _memory_text(memory: Note, counter: Counter, room: int, shares: Shares) -> str:
    text = memory.text.strip()
    cost, cap = counter.count(text), int(room * shares.memory)
    if cost > cap:
        raise ContextTooSmall(
            f"the story's memory takes about {cost:,} tokens but this model's window leaves it "
            f"{cap:,} ({shares.memory:.0%} of the {room:,} for the story): shorten it with `/story memory`, "
            "or raise num_ctx"
        )
    return text


def _fit_passages(passages: Sequence[Passage], counter: Counter, room: int):
    """The newest passages that fit in `room`, oldest first; the oldest kept one is cut at a sentence."""
    sep = counter.count(SEPARATOR)
    kept: list[Passage] = []
    texts: list[str] = []
    used = 0
    cut = False
    for p in reversed(passages):
        cost = counter.count(p.text) + (sep if texts else 0)
        if used + cost <= room:
            kept.append(p)
            texts.append(p.text)
            used += cost
            continue
        left = room - used - (sep if texts else 0)
        tail = _tail_that_fits(p.text, counter, left)
        if tail:
            kept.append(p)
            texts.append(tail)
            used += counter.count(tail) + (sep if len(texts) > 1 else 0)
            cut = True
        break
    kept.reverse()
    texts.reverse()
    return kept, texts, used, cut


def _summary_reach(passages: Sequence[Passage], counter: Counter, room: int) -> int | None:
    """The position up to which to summarise so that the passages after it fill about half the room
    (so the next few passages fit without another summary); the newest KEEP_RECENT are never included."""
    used, keep = 0, 0
    for p in reversed(passages):
        used += counter.count(p.text) + counter.count(SEPARATOR)
        if keep >= KEEP_RECENT and used > room // 2:
            break
        keep += 1
    return passages[-keep - 1].position if keep < len(passages) else None


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
