"""A whole story as one JSON file (`/story export format:json`, `/story import`). Pure.

The schema (docs/story-files.md) is the models below: a document is :class:`StoryDocument`, written with
:func:`bot.core.files.dumps`. It holds what the story shows and how it came to be: the passages with
their authors, every kept version of each, and a model passage's takes (each take's own words and
model, and which take is shown); the memory, author's note, lorebook, current rolling summary (how many
passages it covers), settings and cast. It holds no times and no database ids, so exporting a story,
importing it anywhere and exporting it again gives the same bytes. `version` is :data:`VERSION`; a file
of a newer version is refused by name.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from . import lore as lorebook
from .files import STORY_FORMAT, STORY_VERSION, BadFile, check_version, explain
from .lorefiles import OurEntry
from .story import MAX_CAST, MAX_PERSONA_CHARS, MAX_PERSONA_NAME

FORMAT, VERSION = STORY_FORMAT, STORY_VERSION
#: The most passages a story file may hold (a story this long is better forked first).
MAX_PASSAGES = 5000
MAX_TAKES = 50


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Take(_Strict):
    model: str
    text: str  # the take's own words, as the model wrote them


class Version(_Strict):
    take: int | None = None  # which take it edits (1-based), None for a member's passage
    text: str
    edited_by: str  # a member id


class PassageDoc(_Strict):
    author: Literal["member", "model"]
    author_id: str  # the writer, or for a model passage the member who asked for it
    author_name: str
    text: str  # as the story shows it
    take: int | None = None  # a model passage: which of `takes` is shown (1-based)
    takes: list[Take] = []
    versions: list[Version] = []  # every kept version, oldest first


class SummaryDoc(_Strict):
    covers: int  # the first `covers` passages
    text: str
    model: str
    edited_by: str | None = None  # a writer's summary


class PersonaDoc(_Strict):
    member_id: str
    member_name: str
    name: str
    description: str


class StoryDocument(_Strict):
    format: Literal["story-bot.story"]
    version: int
    title: str | None
    settings: dict[str, Any]
    memory: str | None
    note: str | None
    summary: SummaryDoc | None
    summary_paused: bool
    lore: list[OurEntry]
    cast: list[PersonaDoc]
    passages: list[PassageDoc]


def read(
    document: Any, *, max_passage_chars: int, max_memory_chars: int, max_note_chars: int
) -> StoryDocument:
    """A story document checked whole (its lore entries are checked one by one on import, and reported);
    BadFile says where the first problem is."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        kind = "a lorebook" if isinstance(document, dict) and ("entries" in document) else "not a story"
        raise BadFile(
            f"the file is {kind} file of ours: `/story import` takes a file `/story export format:json` "
            "wrote (a lorebook goes to `/lore import`)"
        )
    check_version(document.get("version"), VERSION, "story")
    try:
        doc = StoryDocument.model_validate(document)
    except ValidationError as exc:
        raise explain(exc, "story file") from exc
    _check(doc, max_passage_chars, max_memory_chars, max_note_chars)
    return doc


def _check(doc: StoryDocument, max_passage: int, max_memory: int, max_note: int) -> None:
    if len(doc.passages) > MAX_PASSAGES:
        raise BadFile(
            f"the story has {len(doc.passages):,} passages, over {MAX_PASSAGES:,}: fork it shorter first"
        )
    _limit("title", doc.title, 100)
    _limit("memory", doc.memory, max_memory)
    _limit("note", doc.note, max_note)
    for i, p in enumerate(doc.passages, 1):
        where = f"passages.{i}"
        if not p.text.strip():
            raise BadFile(f"{where}: the passage is empty")
        _limit(f"{where}.text", p.text, max_passage)
        if p.author == "model":
            if not p.takes or len(p.takes) > MAX_TAKES:
                raise BadFile(f"{where}: a model passage needs its takes (1 to {MAX_TAKES})")
            if p.take is None or not 1 <= p.take <= len(p.takes):
                raise BadFile(f"{where}.take: give which of its {len(p.takes)} takes is shown (1-based)")
        elif p.takes or p.take is not None:
            raise BadFile(f"{where}: a member's passage has no takes")
        for k, v in enumerate(p.versions, 1):
            _limit(f"{where}.versions.{k}.text", v.text, max_passage)
            if p.author == "model" and (v.take is None or not 1 <= v.take <= len(p.takes)):
                raise BadFile(f"{where}.versions.{k}.take: name one of the passage's takes (1-based)")
            if p.author == "member" and v.take is not None:
                raise BadFile(f"{where}.versions.{k}.take: a member's passage has no takes")
    if doc.summary is not None and not 1 <= doc.summary.covers < max(len(doc.passages), 1) + 1:
        raise BadFile(f"summary.covers: give how many of the {len(doc.passages)} passages it tells")
    if len(doc.cast) > MAX_CAST:
        raise BadFile(f"cast: {len(doc.cast)} personas, over the limit of {MAX_CAST}")
    for i, persona in enumerate(doc.cast, 1):
        _limit(f"cast.{i}.name", persona.name, MAX_PERSONA_NAME)
        _limit(f"cast.{i}.description", persona.description, MAX_PERSONA_CHARS)
        if not persona.name.strip() or not persona.description.strip():
            raise BadFile(f"cast.{i}: a persona needs a name and a description")
    names = [lorebook.name_key(p.name) for p in doc.cast]
    if len(set(names)) != len(names) or len({p.member_id for p in doc.cast}) != len(doc.cast):
        raise BadFile("cast: one persona per member, and no name twice")


def _limit(where: str, text: str | None, limit: int) -> None:
    if text is not None and len(text) > limit:
        raise BadFile(f"{where}: {len(text):,} characters, over the limit of {limit:,}")
