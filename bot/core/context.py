"""The model's context, built in one place and one order, within the model's window.

The context text is what goes into the writer prompt's `### Context:` section, laid out as plain text,
what stays the same from one passage to the next first and what changes often last:

    <memory>                                 the story's pinned premise, tone, rules (always first)

    Cast:                                    the characters the story's members write (`/persona`),
    <Name>: <description>                    one line each, pinned after the memory

    Earlier: <rolling summary>               the oldest passages, told in brief, when they no longer fit

    <Name>: <lore entry>                     always-on lore entries
    * * *                                    a scene break between this background and the story

    <passage> ... <passage>                  the newest passages that fit, oldest first, from a step

    * * *                                    only when lore is triggered:
    Background:
    <Name>: <lore entry>                     entries whose keywords the recent passages (or the
                                             direction) mention, newest mention first

The author's note is not part of this text: it is the prompt's guidance section, placed after the
context (a one-off direction replaces it for that request; see StoryService). Without memory, summary or
lore, the context is the bare passages, as before. Each background part may take at most its share of
the room (:class:`Shares`); the passages get the rest. :meth:`Context.record` is what the generation
record keeps about it.

**Steps, so the model server can reuse its cache.** llama.cpp (under Ollama too) keeps the previous
prompt's evaluated tokens and evaluates again only from the first token that differs. So once the story
outgrows the window the oldest passages leave in large steps, not one per passage: the passages after the
summary are grouped, oldest first, into steps of at least `Shares.step` of their room (measured at the
usual answer length, so a request asking another length keeps the same steps), and the context starts at
the oldest step from which the newest passages fit. The start is a function of the story alone: it stays
put passage after passage while the window fills, then jumps a whole step (to about half full).
Room is kept for the whole lorebook (up to its share) whether or not its entries are triggered, so an
entry coming or going never moves the start. Only when even the newest step does not fit (a tiny window,
a very long passage) are the newest passages fitted one by one, the oldest kept cut at a sentence.
A rolling summary is asked for the passages that left, and, when the next passage could overflow (one as
long as the longest of the newest four), for the oldest step still shown too: written ahead of time, it
waits until the passages overflow and then comes in with that step (:func:`build_story_context`), so a
new summary and a step break the server's cache once, together.

Sizes are counted in tokens when the model's tokenizer is known (a local `tokenizer.json`), else
estimated from characters (`chars_per_token`).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypedDict

from contract import prompt as writer_prompt

from .lore import LoreEntry, triggered
from .story import Note, Passage, Persona, Summary

SEPARATOR = "\n\n"
SUMMARY_LEAD = "Earlier: "
BREAK = "* * *"  # between the background (memory, summary, lore) and the passages
LORE_LEAD = "Background:"  # after the passages and a break: the triggered lore entries follow
CAST_LEAD = "Cast:"  # after the memory: one line per persona
#: Passages the rolling summary always leaves out, so the newest ones (which undo and regenerate
#: change) stay in full.
KEEP_RECENT = 2
#: Tokens kept free for the chat template's own markers around the writer prompt.
TEMPLATE_MARGIN = 32

_ASCII = bytes(range(128))


class Counter(Protocol):
    @property
    def unit(self) -> str: ...  # what `count` counts: "tokens", or "chars" for an estimate

    def count(self, text: str) -> int: ...


@dataclass(frozen=True)
class CharCounter:
    """An estimate in tokens from characters, for models whose tokenizer we do not have: ASCII text at
    `chars_per_token`, every other character at its UTF-8 bytes, the most tokens any byte-level or
    byte-fallback tokenizer gives it, so Cyrillic, Greek, CJK or emoji are never undercounted (Ollama
    truncates a prompt past num_ctx without a word, keeping num_keep tokens and the tail:
    llm/llama_server.go, v0.33.0-rc2)."""

    chars_per_token: float = 3.5
    unit: str = "chars"

    def count(self, text: str) -> int:
        data = text.encode("utf-8", "surrogatepass")
        other = len(data.translate(None, _ASCII))  # the bytes of non-ASCII characters
        return math.ceil((len(data) - other) / self.chars_per_token) + other


class TokenizerCounter:
    """Exact token counts from a Hugging Face `tokenizer.json` (the `tokenizers` library, no torch)."""

    unit = "tokens"

    def __init__(self, path: str | Path):
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ValueError(
                "counting tokens needs the `tokenizers` package: pip install tokenizers, "
                "or leave `tokenizer` unset to count characters"
            ) from exc
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
    #: The answer budget of a request that asks no length: steps are measured at it, so requests of
    #: other lengths keep the same steps. Default: this request's.
    usual_predict: int | None = None

    def for_context(self, counter: Counter, direction: str | None, length: str | None) -> int:
        frame = _frame(direction, length)
        return self.window - self.num_predict - counter.count(frame) - TEMPLATE_MARGIN

    def usual(self) -> Budget:
        """The budget of a request with no direction and no length (what steps are measured at)."""
        return Budget(self.window, self.usual_predict if self.usual_predict is not None else self.num_predict)


@dataclass(frozen=True)
class Shares:
    """The most of the context's room each background part may take; the passages get the rest."""

    memory: float = 0.25
    cast: float = 0.15
    summary: float = 0.2
    lore: float = 0.25
    scan: int = 4  # the newest passages scanned for lore keywords
    #: Once the passages overflow, the oldest leave in steps of at least this share of their room (a
    #: half: at a 2,048-token window a passage is a fifth of the room, and smaller steps come too often).
    step: float = 0.5


class CastRecord(TypedDict):
    id: int
    name: str
    member_id: str


class LoreRecord(TypedDict):
    id: int
    version: int
    name: str


class ContextRecord(TypedDict):
    """What a generation's record keeps about its context, stored as JSON beside it: which parts, ids
    and versions went in, and how much of the window they took."""

    parts: list[str]
    memory_id: int | None
    cast: list[CastRecord]
    summary_id: int | None
    summary_cut: bool
    lore: list[LoreRecord]
    lore_left_out: list[str]
    passage_ids: list[int]
    dropped: int
    cut: bool
    size: int
    budget: int
    unit: str


@dataclass
class Context:
    text: str
    passage_ids: list[int] = field(default_factory=list)
    dropped: int = 0  # older passages left out (beyond those the summary covers)
    cut: bool = False  # the oldest passage kept was cut at its start (only when a step does not fit)
    size: int = 0
    budget: int = 0
    unit: str = "chars"
    memory_id: int | None = None
    cast: list[Persona] = field(default_factory=list)
    summary_id: int | None = None
    summary_cut: bool = False  # the summary was over its share and only its end was kept
    lore: list[LoreEntry] = field(default_factory=list)
    lore_left_out: list[str] = field(default_factory=list)  # triggered but over the lore budget
    #: The position up to which a new rolling summary should reach: the passages that left, or when
    #: the window is about full the oldest step still shown (ready for the next step).
    summarise_upto: int | None = None

    @property
    def parts(self) -> list[str]:
        named = [
            ("memory", self.memory_id),
            ("cast", self.cast),
            ("summary", self.summary_id),
            ("lore", self.lore),
        ]
        return [name for name, present in named if present] + ["passages"]

    def record(self) -> ContextRecord:
        """What the generation record keeps about this context (JSON)."""
        return {
            "parts": self.parts,
            "memory_id": self.memory_id,
            "cast": [{"id": p.id, "name": p.name, "member_id": p.member_id} for p in self.cast],
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


@functools.lru_cache(maxsize=256)
def _frame(direction: str | None, length: str | None) -> str:
    """The writer prompt around a one-character context: what the prompt itself takes of the window.
    Rendered once per guidance and length (a context is sized several times while it is fitted); the
    request's own prompt is rendered once, from the fitted context (bot.core.plan)."""
    return writer_prompt.render_prompt("x", direction, length)


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
    cast: Sequence[Persona] = (),
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
        fix = "shorten it with `/story memory`"
        head.append(_pinned(memory.text.strip(), "memory", shares.memory, fix, counter, room))
        ctx.memory_id = memory.id
    if cast:
        fix = "shorten the personas' descriptions (`/persona set`)"
        head.append(_pinned(cast_text(cast), "cast", shares.cast, fix, counter, room))
        ctx.cast = list(cast)
    if summary is not None and (text := (summary.text or "").strip()):
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
    head += [e.paragraph() for e in ctx.lore if e.always_on]  # never changes: in the stable part
    if head:
        head.append(BREAK)
    later = [e.paragraph() for e in ctx.lore if not e.always_on]
    tail = [BREAK, LORE_LEAD, *later] if later else []
    used = _cost(head, counter)
    tail_room = max(_cost(tail, counter), _lore_reserve(lore, counter, room, shares))
    usual = budget.usual().for_context(counter, None, None)
    step = shares.step * ((usual if usual > 0 else room) - used - _lore_reserve(lore, counter, usual, shares))
    fit = _step_passages(passages, counter, room - used - tail_room, step)
    kept, texts = fit.kept, fit.texts
    ctx.text = SEPARATOR.join([*head, *texts, *tail])
    ctx.passage_ids = [p.id for p in kept]
    ctx.dropped = len(passages) - len(kept)
    ctx.cut = fit.cut
    ctx.size = used + fit.size + _cost(tail, counter)
    ctx.summarise_upto = _summary_upto(passages, fit, counter, room - used - tail_room)
    return ctx


def build_story_context(
    passages: Sequence[Passage],
    summaries: Sequence[Summary],
    counter: Counter,
    budget: Budget,
    direction: str | None = None,
    length: str | None = None,
    *,
    memory: Note | None = None,
    lore: Sequence[LoreEntry] = (),
    mentions: str | None = None,
    shares: Shares = Shares(),
    cast: Sequence[Persona] = (),
) -> Context:
    """:func:`build_context` for a whole story and its valid summaries (newest first, see
    :func:`bot.core.summary.valid`): the oldest of them (or none) after which the passages still fit
    whole, else the newest. So a summary written ahead of time (when the window is about full) waits for
    the step that needs it: a new summary and a step break the server's cache once, together.
    Other arguments are build_context's."""

    def build(summary: Summary | None) -> Context:
        after = [p for p in passages if summary is None or p.position > summary.upto_position]
        return build_context(
            after,
            counter,
            budget,
            direction,
            length,
            memory=memory,
            summary=summary,
            lore=lore,
            mentions=mentions,
            shares=shares,
            cast=cast,
        )

    best = build(summaries[0] if summaries else None)
    for older in [*summaries[1:], None] if summaries else []:  # fewer passages told: more of them shown
        ctx = build(older)
        if ctx.dropped or ctx.cut:
            break
        best = ctx
    return best


def _cost(paragraphs: Sequence[str], counter: Counter) -> int:
    """What paragraphs take in the context, each with the separator that joins it to the next."""
    return sum(counter.count(t) for t in paragraphs) + counter.count(SEPARATOR) * len(paragraphs)


def _lore_reserve(lore: Sequence[LoreEntry], counter: Counter, room: int, shares: Shares) -> int:
    """The room kept after the passages for triggered lore: all the keyword entries, within the lore
    share (after the always-on ones), so that an entry coming or going does not move the passages."""
    entries = [e.paragraph() for e in lore if not e.always_on]
    if not entries:
        return 0
    always = _cost([e.paragraph() for e in lore if e.always_on], counter)
    overhead = _cost([BREAK, LORE_LEAD], counter)
    return overhead + max(0, min(int(room * shares.lore) - always, _cost(entries, counter)))


def cast_text(cast: Sequence[Persona]) -> str:
    """The cast as the context holds it: a lead line, then "Name: description" per persona."""
    return "\n".join([CAST_LEAD, *(f"{p.name}: {p.description}" for p in cast)])


def _pinned(text: str, what: str, share: float, fix: str, counter: Counter, room: int) -> str:
    """A part pinned at the top (the memory, the cast), refused when it outgrows its share of the room."""
    cost, cap = counter.count(text), int(room * share)
    if cost > cap:
        raise ContextTooSmall(
            f"the story's {what} takes about {cost:,} tokens but this model's window leaves it {cap:,} "
            f"({share:.0%} of the {room:,} for the story): {fix}, or raise num_ctx"
        )
    return text


@dataclass
class _Fit:
    kept: list[Passage]
    texts: list[str]
    size: int
    cut: bool = False
    steps: list[int] = field(default_factory=list)  # where each step starts (indexes into passages)
    start: int = 0  # the index of the first kept passage


def _step_passages(passages: Sequence[Passage], counter: Counter, room: int, step: float) -> _Fit:
    """The passages from the oldest step from which they fit in `room` (see the module's docstring)."""
    sep = counter.count(SEPARATOR)
    costs = [counter.count(p.text) + sep for p in passages]
    steps, run = [0], 0
    for i, cost in enumerate(costs[:-1]):  # greedy from the oldest: a step closes once it holds `step`
        run += cost
        if run >= step:
            steps.append(i + 1)
            run = 0
    size = sum(costs) - sep if costs else 0
    at = 0
    for start in steps:
        size -= sum(costs[at:start])
        at = start
        if size <= room:
            kept = list(passages[start:])
            return _Fit(kept, [p.text for p in kept], size, False, steps, start)
    kept, texts, size, cut = _fit_passages(passages, counter, room)  # not even the newest step fits
    return _Fit(kept, texts, size, cut, steps, len(passages) - len(kept))


def _summary_upto(passages: Sequence[Passage], fit: _Fit, counter: Counter, room: int) -> int | None:
    """Where a new rolling summary should reach, if one is due: the passages that left, and when the
    next passage could overflow (one as long as the longest of the newest few), the oldest step shown too
    (written ahead, it waits for that step: see build_story_context). The newest KEEP_RECENT never."""
    if len(passages) <= KEEP_RECENT:
        return None
    if fit.cut:  # space is short: as far as leaves the passages about half their room
        upto = _summary_reach(passages, counter, room)
    else:
        upto = passages[fit.start - 1].position if fit.start else None
        longest = max(counter.count(p.text) for p in passages[-4:]) + counter.count(SEPARATOR)
        later = [s for s in fit.steps if s > fit.start]
        if later and fit.size + longest > room and later[0] <= len(passages) - KEEP_RECENT:
            upto = passages[later[0] - 1].position  # a whole step or nothing: it waits for that step
    return None if upto is None else min(upto, passages[-KEEP_RECENT - 1].position)


def _fit_passages(
    passages: Sequence[Passage], counter: Counter, room: int
) -> tuple[list[Passage], list[str], int, bool]:
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
