"""The lorebook: entries about characters, places and objects that enter the context when mentioned. Pure.

The rules a change must keep (room left, one entry per name, a keyword brings in one entry, no edit over
a newer version) are checked here against the story's live entries, inside the store's transaction.

An entry has a name, keywords and a text. It is *triggered* when one of its keywords appears, as a whole
word and in any case, in the recent passages (or in the one-off direction); an always-on entry is in
every context. Triggered entries are ranked newest mention first, so when the lore budget runs out it is
the entries the story has moved away from that are left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from contract.prompt import defuse_control

MAX_NAME_CHARS = 60
MAX_KEYWORDS = 20
MAX_KEYWORD_CHARS = 40
MAX_TEXT_CHARS = 1000
MAX_ENTRIES = 100


class BadLore(ValueError):
    """A lore entry that cannot be stored as given; the message says what to change."""


class LoreConflict(BadLore):
    """Two members changed the lorebook at once, or a name is taken; nothing was overwritten."""


@dataclass(frozen=True)
class LoreEntry:
    id: int
    name: str
    keywords: tuple[str, ...]
    text: str
    always_on: bool = False
    version: int = 1
    created_by: str = ""
    updated_by: str = ""

    def paragraph(self) -> str:
        """The entry as it stands in the context: its text, led by its name unless the text says it."""
        if self.text.casefold().startswith(self.name.casefold()):
            return self.text
        return f"{self.name}: {self.text}"


def name_key(name: str) -> str:
    return " ".join(name.split()).casefold()


def clean_name(name: str) -> str:
    name = defuse_control(" ".join((name or "").split()))  # it stands in the context before the text
    if not name:
        raise BadLore("the entry needs a name (a character, a place, an object)")
    if len(name) > MAX_NAME_CHARS:
        raise BadLore(f"the name has {len(name)} characters, over the limit of {MAX_NAME_CHARS}: shorten it")
    return name


def clean_text(text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise BadLore("the entry's text is empty: say in a sentence or two what the model should know")
    if len(text) > MAX_TEXT_CHARS:
        raise BadLore(
            f"the entry's text has {len(text):,} characters, over the limit of {MAX_TEXT_CHARS:,}: "
            "keep it to what the model needs, or split it into two entries"
        )
    return text


def parse_keywords(raw: str | Iterable[str]) -> tuple[str, ...]:
    """Keywords from "Mara, the smuggler" or a list; blanks dropped, repeats (any case) kept once."""
    items = raw.replace("\n", ",").split(",") if isinstance(raw, str) else list(raw)
    out: list[str] = []
    seen: set[str] = set()
    for item in items:
        word = " ".join(str(item).split())
        if not word or word.casefold() in seen:
            continue
        if not re.search(r"\w", word):
            raise BadLore(f"the keyword {word!r} has no letters or digits, so it can never match: drop it")
        if len(word) > MAX_KEYWORD_CHARS:
            raise BadLore(f"the keyword {word[:20]!r}… is over {MAX_KEYWORD_CHARS} characters: shorten it")
        seen.add(word.casefold())
        out.append(word)
    if len(out) > MAX_KEYWORDS:
        raise BadLore(f"{len(out)} keywords is over the limit of {MAX_KEYWORDS}: keep the telling ones")
    return tuple(out)


def check_keywords(keywords: tuple[str, ...], always_on: bool) -> None:
    if not keywords and not always_on:
        raise BadLore(
            "the entry has no keywords, so nothing would ever bring it into the story: give keywords "
            "separated by commas (e.g. `Mara, the smuggler`), or make it always on"
        )


def check_add(entries: Sequence[LoreEntry], name: str, keywords: tuple[str, ...]) -> None:
    """Whether an entry may join the story's live `entries`: room left, its name and keywords free."""
    if len(entries) >= MAX_ENTRIES:
        raise LoreConflict(
            f"the lorebook holds {len(entries)} entries, the limit: remove ones the story left behind"
        )
    check_unique(entries, name, keywords)


@dataclass(frozen=True)
class LoreChange:
    """An entry's fields as a member gives them (a command, the form, the console), made once where the
    member is heard and passed whole to :func:`new_entry` or :func:`edit`, which check them. In an edit,
    None keeps a field and `name` renames the entry."""

    name: str | None = None
    keywords: str | Sequence[str] | None = None  # "Mara, the smuggler" or a list
    text: str | None = None
    always_on: bool | None = None


def new_entry(change: LoreChange, by: str) -> LoreEntry:
    """The entry `change` adds (not yet stored: id 0), its fields checked."""
    name, text = clean_name(change.name or ""), clean_text(change.text or "")
    keywords, always_on = parse_keywords(change.keywords or ()), bool(change.always_on)
    check_keywords(keywords, always_on)
    return LoreEntry(0, name, keywords, text, always_on, 1, by, by)


def edit(
    entries: Sequence[LoreEntry], by: str, name: str, change: LoreChange, version: int | None = None
) -> LoreEntry:
    """The entry named `name` among the live `entries` with `change` applied, at its next version. With
    `version` (the one the member saw), an entry changed since is refused."""
    new_name = clean_name(change.name) if change.name else None
    keywords = None if change.keywords is None else parse_keywords(change.keywords)
    text = None if change.text is None else clean_text(change.text)
    old = find(entries, name, version)
    new = LoreEntry(
        old.id,
        new_name or old.name,
        old.keywords if keywords is None else keywords,
        old.text if text is None else text,
        old.always_on if change.always_on is None else change.always_on,
        old.version + 1,
        old.created_by,
        by,
    )
    check_keywords(new.keywords, new.always_on)
    check_unique([e for e in entries if e.id != old.id], new.name, new.keywords)
    return new


def find(entries: Sequence[LoreEntry], name: str, version: int | None = None) -> LoreEntry:
    """The entry named `name` (any case); with `version`, LoreConflict unless it is still at it."""
    key = name_key(name)
    entry = next((e for e in entries if name_key(e.name) == key), None)
    if entry is None:
        known = ", ".join(sorted(e.name for e in entries)) or "none yet"
        raise LoreConflict(f"there is no lore entry named {name!r} in this story (entries: {known})")
    if version is not None and version != entry.version:
        raise LoreConflict(
            f"the entry {entry.name!r} was changed meanwhile (by member {entry.updated_by}; it is at "
            f"version {entry.version}, you edited version {version}): nothing was overwritten; look "
            "at it again with `/lore list` and make your change to the new text"
        )
    return entry


def check_unique(others: Sequence[LoreEntry], name: str, keywords: tuple[str, ...]) -> None:
    """One live entry per name (any case), and no keyword that already brings in another entry."""
    key = name_key(name)
    if any(name_key(e.name) == key for e in others):
        raise LoreConflict(
            f"the story already has a lore entry named {name!r}: edit it (`/lore edit`), or pick another name"
        )
    clash = clashes(keywords, others)
    if clash:
        raise LoreConflict(clash)


def clashes(keywords: Sequence[str], others: Iterable[LoreEntry]) -> str | None:
    """A message when a keyword already triggers another entry (the same word would pull both in)."""
    mine = {k.casefold(): k for k in keywords}
    for entry in others:
        for k in entry.keywords:
            if k.casefold() in mine:
                return (
                    f"the keyword {mine[k.casefold()]!r} already brings in the entry {entry.name!r}: use "
                    f"another keyword, or edit {entry.name!r} instead"
                )
    return None


def _folded(text: str) -> str:
    """Text as keywords are looked for in it: any run of whitespace one space, case folded."""
    return " ".join(text.split()).casefold()


_folded_keyword = lru_cache(maxsize=4096)(_folded)


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def last_mention(entry: LoreEntry, text: str, *, folded: bool = False) -> int:
    """Where the entry's last whole-word mention in `text` ends (in the folded text), or -1.

    A plain `rfind` then a look at the two neighbouring characters: far quicker than a regex with
    look-arounds per keyword, which matters with a full lorebook scanned on every passage.
    """
    text = text if folded else _folded(text)
    best = -1
    for keyword in entry.keywords:
        word = _folded_keyword(keyword)
        end = len(text)
        while (i := text.rfind(word, 0, end)) >= 0:
            j = i + len(word)
            if (i == 0 or not _is_word(text[i - 1])) and (j == len(text) or not _is_word(text[j])):
                best = max(best, j)
                break
            end = j - 1
    return best


def triggered(entries: Iterable[LoreEntry], recent: Sequence[str]) -> list[LoreEntry]:
    """The entries for a context, in priority order: always-on ones, then by newest mention.

    `recent` is the scanned text, newest first (the direction, then the newest passages).
    """
    entries = list(entries)
    recent = [_folded(t) for t in recent]
    always = [e for e in entries if e.always_on]
    ranked: list[tuple[int, int, LoreEntry]] = []
    for entry in entries:
        if entry.always_on:
            continue
        for age, text in enumerate(recent):
            end = last_mention(entry, text, folded=True)
            if end >= 0:
                ranked.append((age, -end, entry))
                break
    ranked.sort(key=lambda r: (r[0], r[1], r[2].id))
    return always + [entry for _, _, entry in ranked]
