"""Read the bot's database: read-only, in one transaction, whatever the bot is doing meanwhile.

The file is opened with SQLite's `mode=ro`, so nothing here can write to it, and every table is read
inside one read transaction: under the bot's WAL journal that is a consistent snapshot, taken while the
bot keeps writing. The schema belongs to `contract.store.migrations`; a file from an older schema is copied
into memory and migrated there (the bot's file is never touched), a newer one is refused.

A PostgreSQL store (a `postgresql://` URL, as in STORY_BOT_DB) is read in one READ ONLY, REPEATABLE READ
transaction: the same consistent snapshot, and the server refuses any write. Its schema must be the
current one (start the current bot once on it to migrate it).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from contract.store import engine, migrations
from contract.store.status import AuthorKind, Status


class FeedbackError(RuntimeError):
    """A database the export cannot read; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class Generation:
    """A finished model passage (Status.DONE): the exact prompt and what the model wrote."""

    id: int
    slot: int | None  # passages.id shared by regenerations of the same prompt
    story_id: int
    requested_by: str
    model: str
    user_text: str  # the writer prompt exactly as the model read it
    reasoning: str
    answer: str
    issues: tuple[str, ...]  # contract.prompt.Issue values found when parsing the output
    created_at: float
    context_passages: tuple[int, ...]  # passage ids the context was built from
    removed: bool  # its passage was undone, erased or the story reset
    prompt: str = ""  # the exact text sent to the server (the whole chat text when `raw`)
    raw: bool = False
    output: str = ""  # what the model wrote, before parsing


@dataclass(frozen=True)
class Edit:
    """A take as the writers left it: the newest version of a model passage's take (passage_versions)."""

    generation_id: int
    passage_id: int
    text: str
    editors: frozenset[str]  # every member who changed the take's words
    edited_at: float


@dataclass(frozen=True)
class TakeChoice:
    passage_id: int
    generation_id: int
    member_id: str
    chosen_at: float


@dataclass(frozen=True)
class Erasure:
    """A model passage taken out by "erase to here" and not brought back by redo."""

    generation_id: int  # the take the passage showed when it was erased
    passage_id: int
    member_id: str
    erased_at: float


@dataclass(frozen=True)
class Rating:
    generation_id: int
    member_id: str
    value: int  # +1 or -1
    rated_at: float


@dataclass
class Snapshot:
    path: str
    schema_version: int
    migrated_from: int | None = None  # set when an older file was migrated (in memory) to read it
    generations: list[Generation] = field(default_factory=list)
    ratings: list[Rating] = field(default_factory=list)
    opted_out: frozenset[str] = frozenset()
    opted_out_passages: dict[int, str] = field(default_factory=dict)  # id -> text, by opted-out members
    edits: list[Edit] = field(default_factory=list)
    choices: list[TakeChoice] = field(default_factory=list)  # oldest first
    erasures: list[Erasure] = field(default_factory=list)
    # Outputs the model finished but the bot could not show (the parser found no passage in them).
    no_passage: list[Generation] = field(default_factory=list)


def read(path: str | Path) -> Snapshot:
    """A consistent snapshot of the bot's database at `path`, a file or a PostgreSQL URL (module doc)."""
    if engine.is_url(path):
        return _read_postgres(str(path))
    path = Path(path).expanduser()
    if path.is_dir():
        raise FeedbackError(f"{path} is a folder: give the bot's database file (STORY_BOT_DB)")
    if not path.is_file():
        raise FeedbackError(f"no database at {path}: give the bot's database file (STORY_BOT_DB)")
    conn = _connect_ro(path)
    try:
        conn.execute("BEGIN")  # deferred: the first read below fixes the snapshot
        try:
            version = _version(conn, path)
            if version == migrations.SCHEMA_VERSION:
                return _load(conn, path, version, None)
            copy = _migrated_copy(conn, path, version)
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
    except sqlite3.DatabaseError as e:
        raise FeedbackError(f"{path} cannot be read as SQLite ({e}): is it the bot's database file?") from e
    finally:
        conn.close()
    try:
        return _load(copy, path, migrations.SCHEMA_VERSION, version)
    finally:
        copy.close()


def _read_postgres(url: str) -> Snapshot:
    where = engine.shown(url)
    try:
        conn = engine.PgConnection(url)
    except ImportError as exc:
        raise FeedbackError(
            "reading a PostgreSQL store needs psycopg: pip install 'psycopg[binary]'"
        ) from exc
    except Exception as e:  # psycopg.OperationalError: no server, refused, no such database
        raise FeedbackError(
            f"cannot connect to {where} ({str(e).strip()}): check the URL and the server"
        ) from e
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        version = migrations.schema_version(conn)
        if version == 0:
            raise FeedbackError(
                f"{where} holds no story-bot tables: give the database the bot uses (STORY_BOT_DB)"
            )
        if version > migrations.SCHEMA_VERSION:
            raise FeedbackError(
                f"{where} has schema version {version}, newer than this pipeline knows "
                f"({migrations.SCHEMA_VERSION}): update the pipeline to the bot's version, then export again"
            )
        if version < migrations.SCHEMA_VERSION:
            raise FeedbackError(
                f"{where} has schema version {version}, older than this pipeline's "
                f"{migrations.SCHEMA_VERSION}: start the current bot once on it to migrate it"
            )
        return _load(conn, where, version, None)
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def _connect_ro(path: Path) -> sqlite3.Connection:
    # as_uri() percent-encodes the path, so a '?' or '#' in a file name cannot end it early.
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, timeout=10)
    conn.execute("PRAGMA busy_timeout=10000")  # only a non-WAL writer can make a reader wait
    return conn


def _version(conn: sqlite3.Connection, path: Path) -> int:
    version = migrations.schema_version(conn)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
    if version == 0 or "generations" not in tables:
        raise FeedbackError(
            f"{path} is not a story-bot database (schema version {version}, tables: "
            f"{', '.join(sorted(tables)) or 'none'}): give the file the bot writes (STORY_BOT_DB)"
        )
    if version > migrations.SCHEMA_VERSION:
        raise FeedbackError(
            f"{path} has schema version {version}, newer than this pipeline knows "
            f"({migrations.SCHEMA_VERSION}): update the pipeline to the bot's version, then export again"
        )
    return version


def _migrated_copy(conn: sqlite3.Connection, path: Path, version: int) -> sqlite3.Connection:
    """The database copied into memory (from the same snapshot) and migrated to the current schema."""
    copy = sqlite3.connect(":memory:", isolation_level=None)
    try:
        conn.backup(copy)
        migrations.migrate(copy)
    except sqlite3.DatabaseError as e:
        copy.close()
        raise FeedbackError(
            f"{path} has schema version {version} and migrating a copy of it to version "
            f"{migrations.SCHEMA_VERSION} failed ({e}): start the current bot once on it to migrate it"
        ) from e
    return copy


_SELECT_GENERATIONS = """
SELECT g.id, g.passage_id, g.story_id, g.requested_by, g.model, g.user_text, g.reasoning, g.answer,
       g.parse_issues, g.created_at, g.context, p.removed_at IS NOT NULL AS removed, g.prompt, g.raw,
       g.output
FROM generations g LEFT JOIN passages p ON p.id = g.passage_id
WHERE g.story_id NOT IN (SELECT id FROM stories WHERE imported_at IS NOT NULL)  -- a file's words
"""
_GENERATIONS = f"{_SELECT_GENERATIONS} AND g.status = '{Status.DONE}' ORDER BY g.id"
# Failed with parse issues: the model finished and the parser found no passage (an error or a cancel
# leaves no issues: what those wrote was cut short, not refused).
_NO_PASSAGE = f"""{_SELECT_GENERATIONS}
  AND g.status = '{Status.FAILED}' AND g.parse_issues IS NOT NULL AND g.parse_issues != '[]'
ORDER BY g.id"""
_RATINGS = "SELECT generation_id, member_id, value, rated_at FROM ratings ORDER BY generation_id, member_id"
_OPTED_OUT = "SELECT member_id FROM opt_outs"
# A passage holds an opted-out member's words when they wrote it or edited it.
_OPTED_OUT_PASSAGES = f"""
SELECT id, text FROM passages
WHERE (author_kind = '{AuthorKind.MEMBER}' AND author_id IN (SELECT member_id FROM opt_outs))
   OR id IN (SELECT v.passage_id FROM passage_versions v JOIN opt_outs o ON o.member_id = v.edited_by
             WHERE v.version > 1)
ORDER BY id
"""
# Every version of each edited take, oldest first; version 1 of a take is its own words (kept at its
# first edit), so a take's editors are the members behind its later versions.
_EDITS = """
SELECT v.generation_id, v.passage_id, v.text, v.edited_by, v.edited_at, v.version,
       v.version = (SELECT min(w.version) FROM passage_versions w
                    WHERE w.passage_id = v.passage_id AND w.generation_id = v.generation_id) AS original
FROM passage_versions v WHERE v.generation_id IS NOT NULL
ORDER BY v.generation_id, v.version
"""
_CHOICES = "SELECT passage_id, generation_id, chosen_by, chosen_at FROM take_choices ORDER BY id"
_ERASURES = f"""
SELECT p.generation_id, p.id, e.erased_by, e.erased_at
FROM passages p JOIN erasures e ON e.id = p.erasure_id
WHERE e.redone_at IS NULL AND p.removed_at IS NOT NULL AND p.generation_id IS NOT NULL
  AND p.author_kind = '{AuthorKind.MODEL}'
ORDER BY p.generation_id
"""


def _load(conn: engine.Connection, path: Path | str, version: int, migrated_from: int | None) -> Snapshot:
    return Snapshot(
        path=str(path),
        schema_version=version,
        migrated_from=migrated_from,
        generations=[_generation(r) for r in conn.execute(_GENERATIONS)],
        ratings=[Rating(*r) for r in conn.execute(_RATINGS)],
        opted_out=frozenset(r[0] for r in conn.execute(_OPTED_OUT)),
        opted_out_passages={r[0]: r[1] for r in conn.execute(_OPTED_OUT_PASSAGES)},
        edits=_edits(conn.execute(_EDITS).fetchall()),
        choices=[TakeChoice(*r) for r in conn.execute(_CHOICES)],
        erasures=[Erasure(*r) for r in conn.execute(_ERASURES)],
        no_passage=[_generation(r) for r in conn.execute(_NO_PASSAGE)],
    )


def _edits(rows: list) -> list[Edit]:
    """One Edit per take edited: its newest text and everyone who changed it."""
    by_take: dict[int, list] = {}
    for r in rows:
        by_take.setdefault(r[0], []).append(r)
    out = []
    for gid, versions in by_take.items():
        newest = versions[-1]
        editors = frozenset(r[3] for r in versions if not r[6])
        if editors:
            out.append(Edit(gid, newest[1], newest[2], editors, newest[4]))
    return out


def _generation(r: tuple) -> Generation:
    gid, slot, story, by, model, user_text, reasoning, answer, issues, created, context, removed = r[:12]
    sent, raw, output = r[12:]
    return Generation(
        id=gid,
        slot=slot,
        story_id=story,
        requested_by=by,
        model=model,
        user_text=user_text,
        reasoning=reasoning or "",
        answer=answer or "",
        issues=tuple(_json(issues, [])),
        created_at=created,
        context_passages=tuple(_json(context, {}).get("passage_ids", [])),
        removed=bool(removed),
        prompt=sent or "",
        raw=bool(raw),
        output=output or "",
    )


def _json(text: str | None, default):
    try:
        value = json.loads(text) if text else default
    except json.JSONDecodeError:
        return default
    return value if isinstance(value, type(default)) else default
