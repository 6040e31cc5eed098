"""The story store: a few operations, each one transaction, on SQLite in WAL mode (a file, the default) or
PostgreSQL (a `postgresql://` URL; bot/store/engine.py), with the same SQL and the same guarantees.

A process killed at any moment leaves the database consistent (SQLite's atomic commit; PostgreSQL rolls
back the transaction of a client that went away). Writers take turns (SQLite's BEGIN IMMEDIATE; one
advisory lock per schema on PostgreSQL), so an operation that reads, decides and writes is never raced.
Several processes may share the database: what one of them is doing (a story's generation, a summary, a
delivery, its shards of the Discord events) is a lease with an owner and an expiry (:meth:`Store.claim`),
and :meth:`Store.recover` fails only the generations whose owner is gone. Calls are short, so the async
service makes them directly from the event loop.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bot.core import lore as lorebook
from bot.core.lore import LoreConflict, LoreEntry
from bot.core.story import AuthorKind, Channel, Member, Note, Passage, Story, Summary
from bot.core.summary import digest
from bot.store import opening
from contract.store.engine import PgConnection, is_url, shown, write_lock
from contract.store.migrations import migrate

INTERRUPTED = "the bot stopped while the model was writing this passage; nothing was added: ask again"
CANCELLED = "cancelled before the model finished"  # the error kept when the driver went away


def _machine() -> str:
    """This host's name, and its pid namespace where Linux tells it: containers sharing a hostname do not
    share pids, so a pid is only checked within its own namespace."""
    try:
        return f"{socket.gethostname()}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return socket.gethostname()


HOST = _machine()
_LIVE: set[str] = set()  # the owners alive in this process (several services may share one process)


def new_owner() -> str:
    """A lease owner for one service: "host:pid:token", alive until :func:`retire`."""
    owner = f"{HOST}:{os.getpid()}:{secrets.token_hex(6)}"
    _LIVE.add(owner)
    return owner


def retire(owner: str) -> None:
    _LIVE.discard(owner)


def owner_alive(owner: str | None) -> bool:
    """Whether the owner may still be at work. On this host a dead pid (or, in this process, a retired
    owner) says no at once; elsewhere only the lease's expiry can tell."""
    if not owner:
        return False
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != HOST or not parts[1].isdigit():
        return True
    pid = parts[1]
    if int(pid) == os.getpid():
        return owner in _LIVE
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


@dataclass(frozen=True)
class GenerationRow:
    id: int
    story_id: int
    channel_id: str
    passage_id: int | None
    requested_by: str
    model: str
    direction: str | None
    length: str | None
    status: str
    user_text: str
    reasoning: str | None
    answer: str | None
    error: str | None
    message_ref: str | None
    context: dict
    prompt: str = ""  # the exact `prompt` sent to /api/generate
    raw: bool = False  # sent with raw=true: `prompt` is the whole chat text
    delivery: str | None = None
    owner: str | None = None


@dataclass(frozen=True)
class Delivery:
    """What a generation's messages must show: its passage (with the footer's facts) or its failure."""

    generation_id: int
    channel_id: str
    message_ref: str | None
    status: str
    text: str  # the passage as stored (status 'done'), else the error
    position: int | None = None
    asked_by: str | None = None
    alternatives: int = 1
    current: bool = True  # still the version the story shows (not replaced by a regeneration)


@dataclass(frozen=True)
class Interrupted:
    """A generation that was running when the process died, now marked failed."""

    generation_id: int
    channel_id: str
    message_ref: str | None


class Store:
    """The store on a SQLite file (a path) or a PostgreSQL database (a `postgresql://` URL)."""

    def __init__(self, path: str | Path):
        self.target = str(path)
        self.path = shown(self.target)  # for messages: a URL without its password
        if is_url(self.target):
            self.conn = PgConnection(self.target)
            self.dialect = "postgresql"
        else:
            self.conn = self._open_sqlite(self.target)
            self.dialect = "sqlite"
        migrate(self.conn)
        if self.dialect == "sqlite":
            opening.claim(self.conn)

    @staticmethod
    def _open_sqlite(path: str) -> sqlite3.Connection:
        if path != ":memory:":
            opening.check(path)  # before SQLite may write: new, or the bot's; else said, untouched
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we open transactions ourselves, so each operation is exactly one.
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: consistent after a crash
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction, one writer at a time on either engine (the leases' checks rely on it)."""
        if self.dialect == "sqlite":
            self.conn.execute("BEGIN IMMEDIATE")
        else:
            self.conn.execute("BEGIN")
        try:
            if self.dialect != "sqlite":
                write_lock(self.conn)
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # --- stories -------------------------------------------------------------------------------
    def active_story_id(self, channel_id: str) -> int | None:
        row = self.conn.execute(
            "SELECT id FROM stories WHERE channel_id = ? AND archived_at IS NULL", (channel_id,)
        ).fetchone()
        return row["id"] if row else None

    def ensure_story(self, channel: Channel, by: Member) -> int:
        with self.tx() as c:
            return self._ensure_story(c, channel, by)

    def _ensure_story(self, c: sqlite3.Connection, channel: Channel, by: Member) -> int:
        story_id = self.active_story_id(channel.id)
        if story_id is None:
            story_id = c.execute(
                "INSERT INTO stories (channel_id, guild_id, created_by, created_at) VALUES (?, ?, ?, ?) "
                "RETURNING id",
                (channel.id, channel.guild_id, by.id, time.time()),
            ).fetchone()[0]
        return story_id

    def start_story(self, channel: Channel, by: Member, title: str | None) -> int:
        """Archive the channel's story (kept, with its ratings) and open a new one."""
        with self.tx() as c:
            now = time.time()
            c.execute(
                "UPDATE stories SET archived_at = ? WHERE channel_id = ? AND archived_at IS NULL",
                (now, channel.id),
            )
            return c.execute(
                "INSERT INTO stories (channel_id, guild_id, title, created_by, created_at) "
                "VALUES (?, ?, ?, ?, ?) RETURNING id",
                (channel.id, channel.guild_id, title, by.id, now),
            ).fetchone()[0]

    def story(self, story_id: int) -> Story:
        row = self.conn.execute("SELECT * FROM stories WHERE id = ?", (story_id,)).fetchone()
        return Story(row["id"], row["channel_id"], row["title"], tuple(self.passages(story_id)))

    def story_active(self, story_id: int) -> bool:
        row = self.conn.execute("SELECT archived_at FROM stories WHERE id = ?", (story_id,)).fetchone()
        return row is not None and row["archived_at"] is None

    def story_starter(self, story_id: int) -> str | None:
        row = self.conn.execute("SELECT created_by FROM stories WHERE id = ?", (story_id,)).fetchone()
        return row["created_by"] if row else None

    # --- memory and author's note --------------------------------------------------------------
    def note(self, story_id: int, kind: str) -> Note | None:
        """The story's current memory or note (None if never set; text "" once cleared)."""
        row = self.conn.execute(
            "SELECT * FROM story_notes WHERE story_id = ? AND kind = ? ORDER BY id DESC LIMIT 1",
            (story_id, kind),
        ).fetchone()
        return _note(row) if row else None

    def note_by_id(self, note_id: int) -> Note | None:
        row = self.conn.execute("SELECT * FROM story_notes WHERE id = ?", (note_id,)).fetchone()
        return _note(row) if row else None

    def set_note(self, story_id: int, kind: str, text: str, by: Member) -> Note:
        with self.tx() as c:
            now = time.time()
            nid = c.execute(
                "INSERT INTO story_notes (story_id, kind, text, set_by, set_at) VALUES (?, ?, ?, ?, ?) "
                "RETURNING id",
                (story_id, kind, text, by.id, now),
            ).fetchone()[0]
        return Note(nid, kind, text, by.id, now)

    # --- lorebook ------------------------------------------------------------------------------
    def lore_entries(self, story_id: int) -> list[LoreEntry]:
        rows = self.conn.execute(
            "SELECT * FROM lore_entries WHERE story_id = ? AND removed_at IS NULL ORDER BY name_key",
            (story_id,),
        ).fetchall()
        return [_lore(r) for r in rows]

    def add_lore(
        self, story_id: int, by: Member, name: str, keywords: tuple[str, ...], text: str, always_on: bool
    ) -> LoreEntry:
        """Add an entry; one transaction checks the name, the keywords and the limit against the others."""
        with self.tx() as c:
            others = self._live_lore(c, story_id)
            if len(others) >= lorebook.MAX_ENTRIES:
                raise LoreConflict(
                    f"the lorebook holds {len(others)} entries, the limit: remove ones the story left behind"
                )
            self._check_lore(others, name, keywords)
            now = time.time()
            eid = c.execute(
                "INSERT INTO lore_entries (story_id, name, name_key, keywords, text, always_on, created_by, "
                "created_at, updated_by, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (story_id, name, lorebook.name_key(name), json.dumps(keywords), text, int(always_on),
                 by.id, now, by.id, now),
            ).fetchone()[0]  # fmt: skip
        return LoreEntry(eid, name, keywords, text, always_on, 1, by.id, by.id)

    def edit_lore(
        self,
        story_id: int,
        by: Member,
        name: str,
        *,
        new_name: str | None = None,
        keywords: tuple[str, ...] | None = None,
        text: str | None = None,
        always_on: bool | None = None,
        version: int | None = None,
    ) -> LoreEntry:
        """Change the given fields of an entry (None keeps one). With `version` (the one the member saw),
        an entry changed since is not overwritten: LoreConflict says so."""
        with self.tx() as c:
            others = self._live_lore(c, story_id)
            old = self._find_lore(others, name, version)
            others = [e for e in others if e.id != old.id]
            new = LoreEntry(
                old.id, new_name or old.name, old.keywords if keywords is None else keywords,
                old.text if text is None else text, old.always_on if always_on is None else always_on,
                old.version + 1, old.created_by, by.id,
            )  # fmt: skip
            lorebook.check_keywords(new.keywords, new.always_on)
            self._check_lore(others, new.name, new.keywords)
            c.execute(
                "UPDATE lore_entries SET name = ?, name_key = ?, keywords = ?, text = ?, always_on = ?, "
                "version = version + 1, updated_by = ?, updated_at = ? WHERE id = ? AND version = ?",
                (new.name, lorebook.name_key(new.name), json.dumps(new.keywords), new.text,
                 int(new.always_on), by.id, time.time(), old.id, old.version),
            )  # fmt: skip
        return new

    def remove_lore(self, story_id: int, name: str, version: int | None = None) -> LoreEntry:
        with self.tx() as c:
            entry = self._find_lore(self._live_lore(c, story_id), name, version)
            c.execute("UPDATE lore_entries SET removed_at = ? WHERE id = ?", (time.time(), entry.id))
        return entry

    def _live_lore(self, c: sqlite3.Connection, story_id: int) -> list[LoreEntry]:
        rows = c.execute(
            "SELECT * FROM lore_entries WHERE story_id = ? AND removed_at IS NULL", (story_id,)
        ).fetchall()
        return [_lore(r) for r in rows]

    @staticmethod
    def _find_lore(entries: list[LoreEntry], name: str, version: int | None) -> LoreEntry:
        key = lorebook.name_key(name)
        entry = next((e for e in entries if lorebook.name_key(e.name) == key), None)
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

    @staticmethod
    def _check_lore(others: list[LoreEntry], name: str, keywords: tuple[str, ...]) -> None:
        key = lorebook.name_key(name)
        if any(lorebook.name_key(e.name) == key for e in others):
            raise LoreConflict(
                f"the story already has a lore entry named {name!r}: edit it (`/lore edit`), or pick "
                "another name"
            )
        clash = lorebook.clashes(keywords, others)
        if clash:
            raise LoreConflict(clash)

    # --- rolling summaries ---------------------------------------------------------------------
    def summaries(self, story_id: int) -> list[Summary]:
        """Every summary of a story, newest first (all statuses)."""
        rows = self.conn.execute(
            "SELECT * FROM summaries WHERE story_id = ? ORDER BY id DESC", (story_id,)
        ).fetchall()
        return [_summary(r) for r in rows]

    def begin_summary(
        self, story_id: int, upto_position: int, covered: list[Passage], previous_id: int | None, model: str,
        owner: str | None = None,
    ) -> int:  # fmt: skip
        with self.tx() as c:
            return c.execute(
                "INSERT INTO summaries (story_id, previous_id, upto_position, passage_ids, digest, model, "
                "status, created_at, owner) VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?) RETURNING id",
                (story_id, previous_id, upto_position, json.dumps([p.id for p in covered]), digest(covered),
                 model, time.time(), owner),
            ).fetchone()[0]  # fmt: skip

    def finish_summary(self, summary_id: int, text: str) -> bool:
        """Store a summary's text, if the passages it covers are still the story's (else 'discarded')."""
        with self.tx() as c:
            s = _summary(c.execute("SELECT * FROM summaries WHERE id = ?", (summary_id,)).fetchone())
            marks = ",".join("?" * len(s.passage_ids))
            rows = c.execute(
                f"SELECT p.*, 0 AS alternatives FROM passages p WHERE removed_at IS NULL AND id IN ({marks}) "
                "ORDER BY position",
                s.passage_ids,
            ).fetchall()
            landed = digest([_passage(r) for r in rows]) == s.digest and self.story_active(s.story_id)
            c.execute(
                "UPDATE summaries SET status = ?, text = ?, error = ?, finished_at = ? WHERE id = ?",
                ("done" if landed else "discarded", text,
                 None if landed else "the story changed while the summary was written", time.time(),
                 summary_id),
            )  # fmt: skip
        return landed

    def fail_summary(self, summary_id: int, error: str) -> None:
        with self.tx() as c:
            c.execute(
                "UPDATE summaries SET status = 'failed', error = ?, finished_at = ? "
                "WHERE id = ? AND status = 'running'",
                (error, time.time(), summary_id),
            )

    # --- passages ------------------------------------------------------------------------------
    def passages(self, story_id: int) -> list[Passage]:
        rows = self.conn.execute(
            "SELECT p.*, (SELECT count(*) FROM generations g WHERE g.passage_id = p.id AND g.status = 'done')"
            " AS alternatives FROM passages p WHERE story_id = ? AND removed_at IS NULL ORDER BY position",
            (story_id,),
        ).fetchall()
        return [_passage(r) for r in rows]

    def passage(self, passage_id: int) -> tuple[Passage, bool]:
        """A passage and whether it is still in the story (not undone or reset)."""
        row = self.conn.execute(
            "SELECT p.*, 0 AS alternatives, s.archived_at FROM passages p JOIN stories s ON s.id = p.story_id"
            " WHERE p.id = ?",
            (passage_id,),
        ).fetchone()
        return _passage(row), row["removed_at"] is None and row["archived_at"] is None

    def add_passage(self, story_id: int, author: Member, text: str) -> Passage:
        with self.tx() as c:
            return self._insert_passage(c, story_id, AuthorKind.MEMBER, author, text, None)

    def _insert_passage(self, c, story_id, kind, author: Member, text: str, generation_id) -> Passage:
        position = c.execute(
            "SELECT coalesce(max(position), 0) + 1 FROM passages WHERE story_id = ?", (story_id,)
        ).fetchone()[0]
        pid = c.execute(
            "INSERT INTO passages (story_id, position, author_kind, author_id, author_name, text, "
            "generation_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (story_id, position, kind.value, author.id, author.name, text, generation_id, time.time()),
        ).fetchone()[0]
        return Passage(pid, story_id, position, kind, author.id, author.name, text, generation_id)

    def remove_passages(self, passage_ids: list[int]) -> None:
        with self.tx() as c:
            c.executemany(
                "UPDATE passages SET removed_at = ? WHERE id = ? AND removed_at IS NULL",
                [(time.time(), pid) for pid in passage_ids],
            )

    # --- generations ---------------------------------------------------------------------------
    def begin_generation(
        self,
        story_id: int,
        requested_by: Member,
        model: str,
        *,
        user_text: str,
        prompt: str,
        raw: bool,
        options: dict,
        context: dict,
        direction: str | None,
        length: str | None,
        slot: int | None,
        owner: str | None = None,
    ) -> int:
        """A running generation; `owner` holds the story's lease while it runs (else recover fails it)."""
        with self.tx() as c:
            return c.execute(
                "INSERT INTO generations (story_id, passage_id, requested_by, model, direction, length, "
                "user_text, prompt, raw, options, context, status, created_at, owner) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?) RETURNING id",
                (story_id, slot, requested_by.id, model, direction, length, user_text, prompt, int(raw),
                 json.dumps(options), json.dumps(context), time.time(), owner),
            ).fetchone()[0]  # fmt: skip

    def finish_generation(
        self,
        generation_id: int,
        *,
        requested_by: Member,
        output: str,
        reasoning: str,
        answer: str,
        issues: list[str],
        stats: dict,
    ) -> Passage | None:
        """Record a finished generation and put its answer into the story, in one transaction.

        The answer lands only if the story still holds every passage the context was built from (and,
        for a regeneration, the passage being replaced); otherwise the generation is kept as
        'discarded' and None is returned.
        """
        with self.tx() as c:
            g = c.execute("SELECT * FROM generations WHERE id = ?", (generation_id,)).fetchone()
            used = json.loads(g["context"]).get("passage_ids", [])
            needed = [*used, *([g["passage_id"]] if g["passage_id"] else [])]
            marks = ",".join("?" * len(needed))
            query = f"SELECT count(*) FROM passages WHERE removed_at IS NULL AND id IN ({marks})"
            alive = c.execute(query, needed).fetchone()[0] if needed else 0
            landed = alive == len(needed) and self.story_active(g["story_id"])
            c.execute(
                "UPDATE generations SET status = ?, output = ?, reasoning = ?, answer = ?, parse_issues = ?, "
                "error = ?, finished_at = ?, first_token_s = ?, prompt_tokens = ?, output_tokens = ?, "
                "model_ns = ? WHERE id = ?",
                ("done" if landed else "discarded", output, reasoning, answer, json.dumps(issues),
                 None if landed else "the story changed while the model was writing", time.time(),
                 stats.get("first_token_s"), stats.get("prompt_tokens"), stats.get("output_tokens"),
                 stats.get("model_ns"), generation_id),
            )  # fmt: skip
            if not landed:
                return None
            if g["passage_id"]:  # a regeneration: the slot now shows this alternative
                # The take it replaces: its messages are owed the "replaced" state (no buttons).
                c.execute(
                    "UPDATE generations SET delivery = 'pending' WHERE delivery IS NOT NULL AND id = "
                    "(SELECT generation_id FROM passages WHERE id = ?)",
                    (g["passage_id"],),
                )
                c.execute(
                    "UPDATE passages SET text = ?, generation_id = ? WHERE id = ?",
                    (answer, generation_id, g["passage_id"]),
                )
                row = c.execute("SELECT *, 0 AS alternatives FROM passages WHERE id = ?", (g["passage_id"],))
                passage = _passage(row.fetchone())
            else:
                passage = self._insert_passage(
                    c, g["story_id"], AuthorKind.MODEL, requested_by, answer, generation_id
                )
                c.execute("UPDATE generations SET passage_id = ? WHERE id = ?", (passage.id, generation_id))
            n = c.execute(
                "SELECT count(*) FROM generations WHERE passage_id = ? AND status = 'done'", (passage.id,)
            ).fetchone()[0]
            return Passage(**{**passage.__dict__, "alternatives": n})

    def set_generation_host(self, generation_id: int, host: str) -> None:
        with self.tx() as c:
            c.execute("UPDATE generations SET host = ? WHERE id = ?", (host, generation_id))

    def fail_generation(
        self, generation_id: int, error: str, output: str = "", issues: list[str] | None = None
    ) -> None:
        """Mark a running generation failed; `issues` are the parse issues of an output that was read
        (an answer that was only markup, say)."""
        with self.tx() as c:
            c.execute(
                "UPDATE generations SET status = 'failed', error = ?, output = ?, finished_at = ?, "
                "parse_issues = ? WHERE id = ? AND status = 'running'",
                (error, output, time.time(), None if issues is None else json.dumps(issues), generation_id),
            )

    def set_message_ref(self, generation_id: int, ref: str) -> None:
        """The driver's messages for a generation; they are to show its final state ('pending' delivery)."""
        with self.tx() as c:
            c.execute(
                "UPDATE generations SET message_ref = ?, delivery = coalesce(delivery, 'pending') "
                "WHERE id = ?",
                (ref, generation_id),
            )

    def set_delivery(self, generation_id: int, state: str, owner: str | None = None) -> None:
        """Record how a delivery ended; `owner` gives up its delivery lease in the same transaction."""
        with self.tx() as c:
            c.execute("UPDATE generations SET delivery = ? WHERE id = ?", (state, generation_id))
            if owner is not None:
                key = f"delivery:{generation_id}"
                c.execute("DELETE FROM leases WHERE key = ? AND owner = ?", (key, owner))

    def undelivered(self) -> list[int]:
        """Finished generations whose messages do not show their final state, and whom no live owner is
        delivering: oldest first."""
        rows = self.conn.execute(
            "SELECT g.id, l.owner, l.expires_at FROM generations g LEFT JOIN leases l "
            "ON l.key = 'delivery:' || g.id WHERE g.delivery = 'pending' AND g.status != 'running' "
            "ORDER BY g.id"
        ).fetchall()
        return [r["id"] for r in rows if not _live(r["owner"], r["expires_at"])]

    def delivery(self, generation_id: int) -> Delivery | None:
        g = self.generation(generation_id)
        if g is None:
            return None
        if g.status != "done" or g.passage_id is None:
            error = INTERRUPTED if g.error in (None, CANCELLED) else g.error
            return Delivery(g.id, g.channel_id, g.message_ref, g.status, error)
        p = self.conn.execute("SELECT * FROM passages WHERE id = ?", (g.passage_id,)).fetchone()
        n = self.conn.execute(
            "SELECT count(*) FROM generations WHERE passage_id = ? AND status = 'done' AND id <= ?",
            (g.passage_id, g.id),
        ).fetchone()[0]
        return Delivery(
            g.id, g.channel_id, g.message_ref, g.status, g.answer or "", p["position"], p["author_name"], n,
            p["generation_id"] == g.id,
        )  # fmt: skip

    def generation(self, generation_id: int) -> GenerationRow | None:
        r = self.conn.execute(
            "SELECT g.*, s.channel_id FROM generations g JOIN stories s ON s.id = g.story_id WHERE g.id = ?",
            (generation_id,),
        ).fetchone()
        if r is None:
            return None
        return GenerationRow(
            r["id"], r["story_id"], r["channel_id"], r["passage_id"], r["requested_by"], r["model"],
            r["direction"], r["length"], r["status"], r["user_text"], r["reasoning"], r["answer"], r["error"],
            r["message_ref"], json.loads(r["context"]), r["prompt"], bool(r["raw"]), r["delivery"],
            r["owner"],
        )  # fmt: skip

    def recover(self) -> list[Interrupted]:
        """Mark failed every generation (and summary) left running by an owner that is gone: it no longer
        holds the story's lease (expired, or its process is dead). Returns the generations for the driver;
        those another live process is writing are left alone."""
        with self.tx() as c:
            rows = c.execute(
                "SELECT g.id, s.channel_id, g.message_ref, g.owner, l.owner AS holder, l.expires_at "
                "FROM generations g JOIN stories s ON s.id = g.story_id "
                "LEFT JOIN leases l ON l.key = 'story:' || s.channel_id WHERE g.status = 'running'"
            ).fetchall()
            lost = [r for r in rows if r["holder"] != r["owner"] or not _live(r["holder"], r["expires_at"])]
            now = time.time()
            c.executemany(
                "UPDATE generations SET status = 'failed', error = ?, finished_at = ? "
                "WHERE id = ? AND status = 'running'",
                [(INTERRUPTED, now, r["id"]) for r in lost],
            )
            summaries = c.execute(
                "SELECT m.id, m.owner, l.owner AS holder, l.expires_at FROM summaries m LEFT JOIN leases l "
                "ON l.key = 'summary:' || m.story_id WHERE m.status = 'running'"
            ).fetchall()
            c.executemany(
                "UPDATE summaries SET status = 'failed', error = ?, finished_at = ? WHERE id = ?",
                [("the bot stopped while the summary was written", now, r["id"]) for r in summaries
                 if r["holder"] != r["owner"] or not _live(r["holder"], r["expires_at"])],
            )  # fmt: skip
        return [Interrupted(r["id"], r["channel_id"], r["message_ref"]) for r in lost]

    # --- leases: who is doing what, across processes ------------------------------------------------
    def claim(self, key: str, owner: str, ttl: float) -> str | None:
        """Take the lease `key` for `owner` for `ttl` seconds, unless another live owner holds it: then
        return that owner (and take nothing). Claiming a lease one already holds renews it."""
        with self.tx() as c:
            row = c.execute("SELECT owner, expires_at FROM leases WHERE key = ?", (key,)).fetchone()
            if row and row["owner"] != owner and _live(row["owner"], row["expires_at"]):
                return row["owner"]
            _take(c, key, owner, ttl)
        return None

    def claim_gateway(self, shards: Sequence[int], shard_count: int, owner: str, ttl: float) -> str | None:
        """Take the lease on shards `shards` of `shard_count` of the bot's Discord events ([0] of 1: all of
        them), unless a live owner holds shards that overlap them (any other count, or a shared shard):
        then return that owner. Two processes on overlapping shards would both act on every interaction."""
        key = gateway_key(shards, shard_count)
        with self.tx() as c:
            for row in c.execute("SELECT key, owner, expires_at FROM leases WHERE key LIKE 'gateway:%'"):
                count, held = parse_gateway_key(row["key"])
                overlaps = count != shard_count or not held.isdisjoint(shards)
                if overlaps and row["owner"] != owner and _live(row["owner"], row["expires_at"]):
                    return row["owner"]
            _take(c, key, owner, ttl)
        return None

    def renew(self, keys: list[str], owner: str, ttl: float) -> list[str]:
        """Extend `owner`'s leases; returns the keys it no longer holds (taken over after expiring)."""
        with self.tx() as c:
            c.executemany(
                "UPDATE leases SET expires_at = ? WHERE key = ? AND owner = ?",
                [(time.time() + ttl, k, owner) for k in keys],
            )
            held = {r[0] for r in c.execute("SELECT key FROM leases WHERE owner = ?", (owner,))}
        return [k for k in keys if k not in held]

    def release(self, key: str, owner: str) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM leases WHERE key = ? AND owner = ?", (key, owner))

    def lease_holder(self, key: str) -> str | None:
        row = self.conn.execute("SELECT owner, expires_at FROM leases WHERE key = ?", (key,)).fetchone()
        return row["owner"] if row and _live(row["owner"], row["expires_at"]) else None

    # --- ratings and privacy -------------------------------------------------------------------
    def rate(self, generation_id: int, member_id: str, value: int) -> None:
        with self.tx() as c:
            c.execute(
                "INSERT INTO ratings (generation_id, member_id, value, rated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (generation_id, member_id) DO UPDATE SET value = excluded.value, "
                "rated_at = excluded.rated_at",
                (generation_id, member_id, value, time.time()),
            )

    def tally(self, generation_id: int) -> tuple[int, int]:
        """(thumbs up, thumbs down) for a generation."""
        row = self.conn.execute(
            "SELECT count(*) FILTER (WHERE value = 1), count(*) FILTER (WHERE value = -1) FROM ratings "
            "WHERE generation_id = ?",
            (generation_id,),
        ).fetchone()
        return row[0], row[1]

    def set_opt_out(self, member_id: str, opted_out: bool) -> None:
        with self.tx() as c:
            if opted_out:
                c.execute(
                    "INSERT INTO opt_outs (member_id, opted_out_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    (member_id, time.time()),
                )
            else:
                c.execute("DELETE FROM opt_outs WHERE member_id = ?", (member_id,))

    def opted_out(self, member_id: str) -> bool:
        row = self.conn.execute("SELECT 1 FROM opt_outs WHERE member_id = ?", (member_id,)).fetchone()
        return row is not None


def host_load(conn, since: float) -> dict[str, tuple[int, int]]:
    """Per Ollama server, from every process on the database: (generations running there now, those
    finished there since `since`). `conn` may be a read-only connection (`story-bot status`)."""
    rows = conn.execute(
        "SELECT host, count(*) FILTER (WHERE status = 'running'), "
        "count(*) FILTER (WHERE finished_at >= ?) FROM generations "
        "WHERE host IS NOT NULL AND (status = 'running' OR finished_at >= ?) GROUP BY host",
        (since, since),
    ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def _take(c, key: str, owner: str, ttl: float) -> None:
    """Hold lease `key` for `owner` for `ttl` seconds from now (inside the caller's transaction)."""
    c.execute(
        "INSERT INTO leases (key, owner, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE "
        "SET owner = excluded.owner, expires_at = excluded.expires_at",
        (key, owner, time.time() + ttl),
    )


def gateway_key(shards: Sequence[int], shard_count: int) -> str:
    """'gateway:<count>:<ids>', the ids as runs ("0-3,6"): one lease for a process's shards."""
    ids = sorted(set(shards))
    runs = []
    for i in ids:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return f"gateway:{shard_count}:" + ",".join(f"{a}-{b}" if a != b else str(a) for a, b in runs)


def parse_gateway_key(key: str) -> tuple[int, set[int]]:
    _, count, ids = key.split(":", 2)
    shards: set[int] = set()
    for run in ids.split(","):
        a, _, b = run.partition("-")
        shards.update(range(int(a), int(b or a) + 1))
    return int(count), shards


def _live(owner: str | None, expires_at: float | None) -> bool:
    return owner is not None and (expires_at or 0) > time.time() and owner_alive(owner)


def _passage(r: sqlite3.Row) -> Passage:
    return Passage(
        r["id"], r["story_id"], r["position"], AuthorKind(r["author_kind"]), r["author_id"], r["author_name"],
        r["text"], r["generation_id"], r["alternatives"] or 1,
    )  # fmt: skip


def _note(r: sqlite3.Row) -> Note:
    return Note(r["id"], r["kind"], r["text"], r["set_by"], r["set_at"])


def _lore(r: sqlite3.Row) -> LoreEntry:
    return LoreEntry(
        r["id"], r["name"], tuple(json.loads(r["keywords"])), r["text"], bool(r["always_on"]), r["version"],
        r["created_by"], r["updated_by"],
    )  # fmt: skip


def _summary(r: sqlite3.Row) -> Summary:
    return Summary(
        r["id"], r["story_id"], r["upto_position"], tuple(json.loads(r["passage_ids"])), r["digest"],
        r["status"], r["model"], r["text"], r["error"], r["previous_id"], r["created_at"],
    )  # fmt: skip
