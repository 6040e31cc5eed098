"""Lorebooks in and out as files: ours, SillyTavern's World Info and NovelAI's lorebook. Pure.

What each format's entry means to us (docs/story-files.md has the table):

- SillyTavern World Info (`{"entries": {"0": {...}}}`): `comment` is the name (else the first key),
  `key` the keywords, `content` the text, `constant` always on, `disable` set: the entry is skipped.
  Secondary keys (`keysecondary`) only narrow when an entry comes in, which we do not do: they are
  dropped, and the report says so.
- NovelAI (`{"lorebookVersion": N, "entries": [...]}`): `displayName`, `keys`, `text`, `forceActivation`
  (always on), `enabled` false: skipped. A key written as a /regular expression/ cannot be matched as a
  word: it is dropped, said.
- Ours (`{"format": "story-bot.lorebook", "version": 1, "entries": [...]}`), and the `lore` of a story file.

:func:`plan` decides, entry by entry, what an import does to a story's lorebook: `kept` (added),
`merged` (an entry of that name is there: its keywords are united with the file's and its text and
always-on become the file's) or `skipped`, each with why. The store applies the plan in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import lore as lorebook
from .files import STORY_FORMAT, STORY_VERSION, BadFile, check_version, explain
from .lore import BadLore, LoreEntry

LORE_FORMAT, LORE_VERSION = "story-bot.lorebook", 1
Action = Literal["kept", "merged", "skipped"]


@dataclass(frozen=True)
class Candidate:
    """One entry of a file, as read (before our rules)."""

    index: int  # its place in the file, from 1
    name: str
    keywords: tuple[str, ...]
    text: str
    always_on: bool = False
    enabled: bool = True
    notes: tuple[str, ...] = ()  # what was dropped in reading it


@dataclass(frozen=True)
class Outcome:
    index: int
    name: str
    action: Action
    why: str
    entry: LoreEntry | None = None  # kept: the new entry (id 0); merged: the entry at its next version

    def line(self) -> str:
        return f"{self.index}. {self.name or '(no name)'}: {self.action}, {self.why}"


@dataclass
class Report:
    """An import's answer, entry by entry."""

    kind: str  # which format the file was
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, action: Action) -> int:
        return sum(o.action == action for o in self.outcomes)

    def summary(self) -> str:
        return (
            f"{self.kind}: {self.count('kept')} kept, {self.count('merged')} merged, "
            f"{self.count('skipped')} skipped"
        )


# --- reading the formats ---------------------------------------------------------------------------
class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")  # the other tools' many fields we do not use


class _TavernEntry(_Loose):
    key: list[Any] = Field(default_factory=list)
    keysecondary: list[Any] = Field(default_factory=list)
    comment: str | None = ""
    content: str | None = ""
    constant: bool | None = False
    disable: bool | None = False


class _Tavern(_Loose):
    entries: dict[str, _TavernEntry]


class _NovelEntry(_Loose):
    displayName: str | None = ""  # noqa: N815 (NovelAI's own field name)
    keys: list[Any] = Field(default_factory=list)
    text: str | None = ""
    enabled: bool | None = True
    forceActivation: bool | None = False  # noqa: N815


class _Novel(_Loose):
    lorebookVersion: int  # noqa: N815
    entries: list[_NovelEntry]


class OurEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    keywords: list[str]
    text: str
    always_on: bool = False


class _Ours(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["story-bot.lorebook"]
    version: int
    entries: list[OurEntry]


def read(document: Any) -> tuple[str, list[Candidate]]:
    """The format of a lorebook document and its entries; BadFile when it is none we read."""
    if not isinstance(document, dict):
        raise BadFile(_NOT_LORE)
    if document.get("format") == STORY_FORMAT:  # a story file's lorebook
        check_version(document.get("version"), STORY_VERSION, "story")
        document = {"format": LORE_FORMAT, "version": LORE_VERSION, "entries": document.get("lore", [])}
    try:
        if document.get("format") == LORE_FORMAT:
            check_version(document.get("version"), LORE_VERSION, "lorebook")
            ours = _Ours.model_validate(document)
            return "story-bot lorebook", [_ours(i, e) for i, e in enumerate(ours.entries, 1)]
        if "lorebookVersion" in document:
            novel = _Novel.model_validate(document)
            return "NovelAI lorebook", [_novel(i, e) for i, e in enumerate(novel.entries, 1)]
        if isinstance(document.get("entries"), dict):
            tavern = _Tavern.model_validate(document)
            ordered = sorted(tavern.entries.items(), key=lambda kv: _uid_order(kv[0]))
            return "SillyTavern World Info", [_tavern(i, e) for i, (_, e) in enumerate(ordered, 1)]
    except ValidationError as exc:
        raise explain(exc, "lorebook") from exc
    raise BadFile(_NOT_LORE)


_NOT_LORE = (
    "the file is not a lorebook we read: give a SillyTavern World Info file, a NovelAI lorebook "
    "(.lorebook), or one `/lore export` or `/story export format:json` wrote"
)


def _uid_order(key: str) -> tuple[int, str]:
    return (int(key), "") if key.isdigit() else (1 << 62, key)


def _words(keys: Sequence[Any]) -> tuple[tuple[str, ...], list[str]]:
    """Plain keywords, and notes on what was dropped (regular expressions, non-text)."""
    kept, notes = [], []
    for k in keys:
        if not isinstance(k, str):
            notes.append(f"a key that is not text ({k!r}) was dropped")
        elif len(k) > 2 and k.startswith("/") and k.rstrip("gimsuy").endswith("/"):
            notes.append(f"the regular-expression key {k!r} was dropped (keywords match as words)")
        elif k.strip():
            kept.append(k)
    return tuple(kept), notes


def _tavern(index: int, e: _TavernEntry) -> Candidate:
    keys, notes = _words(e.key)
    if any(isinstance(k, str) and k.strip() for k in e.keysecondary):
        notes.append("its secondary keys were dropped (they only narrow when it comes in)")
    name = (e.comment or "").strip() or (keys[0] if keys else "")
    return Candidate(index, name, keys, e.content or "", bool(e.constant), not e.disable, tuple(notes))


def _novel(index: int, e: _NovelEntry) -> Candidate:
    keys, notes = _words(e.keys)
    name = (e.displayName or "").strip() or (keys[0] if keys else "")
    enabled = e.enabled is not False
    return Candidate(index, name, keys, e.text or "", bool(e.forceActivation), enabled, tuple(notes))


def _ours(index: int, e: OurEntry) -> Candidate:
    return Candidate(index, e.name, tuple(e.keywords), e.text, e.always_on)


# --- what an import does ----------------------------------------------------------------------------
def plan(existing: Sequence[LoreEntry], candidates: Sequence[Candidate], by: str) -> list[Outcome]:
    """Entry by entry, what importing `candidates` into a lorebook holding `existing` does (see the
    module's docstring); each outcome's entry is what the store writes."""
    live = list(existing)
    from_file: dict[str, int] = {}  # a name (folded) -> the entry of the file that took it
    out = []
    for c in candidates:
        try:
            out.append(_one(c, live, from_file, by))
        except BadLore as exc:
            out.append(Outcome(c.index, c.name, "skipped", str(exc)))
            continue
        done = out[-1]
        if done.entry is not None:
            if done.action == "merged":
                live = [e for e in live if e.id != done.entry.id]
            live.append(done.entry)
            from_file[lorebook.name_key(done.entry.name)] = c.index
    return out


def _one(c: Candidate, live: list[LoreEntry], from_file: dict[str, int], by: str) -> Outcome:
    if not c.enabled:
        return Outcome(c.index, c.name, "skipped", "it is disabled in the file")
    name = lorebook.clean_name(c.name)
    if lorebook.name_key(name) in from_file:
        first = from_file[lorebook.name_key(name)]
        why = f"entry {first} of the file has the same name (that one was used)"
        return Outcome(c.index, name, "skipped", why)
    text = lorebook.clean_text(c.text)
    keywords = lorebook.parse_keywords(c.keywords)
    notes = "; ".join(c.notes)
    same = next((e for e in live if lorebook.name_key(e.name) == lorebook.name_key(name)), None)
    if same is None:
        lorebook.check_keywords(keywords, c.always_on)
        lorebook.check_add(live, name, keywords)
        entry = LoreEntry(0, name, keywords, text, c.always_on, 1, by, by)
        return Outcome(c.index, name, "kept", notes or "added", entry)
    united = lorebook.parse_keywords([*same.keywords, *keywords])
    merged = replace(
        same, keywords=united, text=text, always_on=c.always_on, version=same.version + 1, updated_by=by
    )
    if (merged.keywords, merged.text, merged.always_on) == (same.keywords, same.text, same.always_on):
        return Outcome(c.index, name, "skipped", "the story has this entry already, the same")
    lorebook.check_keywords(merged.keywords, merged.always_on)
    lorebook.check_unique([e for e in live if e.id != same.id], merged.name, merged.keywords)
    why = "the story had an entry of this name: keywords united, text from the file"
    return Outcome(c.index, name, "merged", why + (f"; {notes}" if notes else ""), merged)


# --- writing the formats ---------------------------------------------------------------------------
def ours(entries: Sequence[LoreEntry]) -> dict:
    """A lorebook in our format (`/lore export`)."""
    return {
        "format": LORE_FORMAT,
        "version": LORE_VERSION,
        "entries": [entry_document(e) for e in entries],
    }


def entry_document(e: LoreEntry) -> dict:
    return {"name": e.name, "keywords": list(e.keywords), "text": e.text, "always_on": e.always_on}


def tavern(entries: Sequence[LoreEntry]) -> dict:
    """A lorebook as SillyTavern World Info (`/lore export format:sillytavern`): the fields its editor
    writes for a new entry, ours filled in."""
    return {
        "entries": {
            str(i): {
                "uid": i,
                "key": list(e.keywords),
                "keysecondary": [],
                "comment": e.name,
                "content": e.text,
                "constant": e.always_on,
                "selective": False,
                "selectiveLogic": 0,
                "addMemo": True,
                "order": 100,
                "position": 0,
                "disable": False,
                "excludeRecursion": False,
                "probability": 100,
                "useProbability": True,
                "depth": 4,
                "displayIndex": i,
            }
            for i, e in enumerate(entries)
        }
    }
