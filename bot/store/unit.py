"""The store's SQL, as typed reads and writes on one connection: the rows become the core's records.

:class:`Reads` answer on the store's own connection (each statement its own snapshot) or inside a
transaction; :class:`Unit` adds the writes and exists only inside one (`Store.unit()`), so whatever a
unit reads, decides (the core's rules) and writes commits together or not at all. The SQL is written once
for both engines (contract/store/engine.py); a status stands in SQL text as its literal (the partial
indexes are written against 'running' and 'pending').
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from bot.core import storyfile as sf
from bot.core.lore import LoreEntry, name_key
from bot.core.settings import StorySettings
from bot.core.story import AuthorKind, Channel, Member, Note, Passage, Persona, Story, StoryInfo, Summary
from bot.core.summary import digest
from contract.serving import Options
from contract.store.engine import Connection
from contract.store.status import DeliveryState, Status

if TYPE_CHECKING:  # types only: the core's plan and the backend import the store
    from bot.core.plan import GenerationRecord
    from bot.llm import Stats

RUNNING, DONE, PENDING = f"'{Status.RUNNING}'", f"'{Status.DONE}'", f"'{DeliveryState.PENDING}'"


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
    status: Status
    user_text: str
    reasoning: str | None
    answer: str | None
    error: str | None
    message_ref: str | None
    context: dict
    prompt: str = ""  # the exact `prompt` sent to /api/generate
    raw: bool = False  # sent with raw=true: `prompt` is the whole chat text
    delivery: DeliveryState | None = None
    owner: str | None = None


@dataclass(frozen=True)
class Running:
    """Work left running (a generation or a summary) and who holds the lease it runs under."""

    id: int
    owner: str | None
    holder: str | None
    expires_at: float | None
    channel_id: str = ""  # generations: where their messages are
    message_ref: str | None = None


class Reads:
    """Typed reads on `conn`: inside a unit they see its own writes."""

    def __init__(self, conn: Connection):
        self.c = conn

    def _one(self, query: str, params: Sequence[Any]) -> Any:
        return self.c.execute(query, params).fetchone()

    # --- stories, notes, lore -------------------------------------------------------------------
    def active_story_id(self, channel_id: str) -> int | None:
        row = self._one("SELECT id FROM stories WHERE channel_id = ? AND archived_at IS NULL", (channel_id,))
        return row["id"] if row else None

    def story(self, story_id: int) -> Story:
        row = self._one("SELECT * FROM stories WHERE id = ?", (story_id,))
        return Story(row["id"], row["channel_id"], row["title"], tuple(self.passages(story_id)))

    def story_active(self, story_id: int) -> bool:
        row = self._one("SELECT archived_at FROM stories WHERE id = ?", (story_id,))
        return row is not None and row["archived_at"] is None

    def note(self, story_id: int, kind: str) -> Note | None:
        """The story's current memory or note (None if never set; text "" once cleared)."""
        row = self._one(
            "SELECT * FROM story_notes WHERE story_id = ? AND kind = ? ORDER BY id DESC LIMIT 1",
            (story_id, kind),
        )
        return Note(row["id"], row["kind"], row["text"], row["set_by"], row["set_at"]) if row else None

    def lore_entries(self, story_id: int) -> list[LoreEntry]:
        rows = self.c.execute(
            "SELECT * FROM lore_entries WHERE story_id = ? AND removed_at IS NULL ORDER BY name_key",
            (story_id,),
        ).fetchall()
        return [_lore(r) for r in rows]

    def settings(self, story_id: int) -> StorySettings:
        """The story's settings (the newest row; none set: all defaults)."""
        row = self._one(
            "SELECT id, settings FROM story_settings WHERE story_id = ? ORDER BY id DESC LIMIT 1", (story_id,)
        )
        return StorySettings.from_values(json.loads(row["settings"]), row["id"]) if row else StorySettings()

    def personas(self, story_id: int) -> list[Persona]:
        """The story's cast, in the order its members joined it."""
        rows = self.c.execute(
            "SELECT * FROM personas WHERE story_id = ? AND removed_at IS NULL ORDER BY id", (story_id,)
        ).fetchall()
        return [Persona(r["id"], r["member_id"], r["member_name"], r["name"], r["description"]) for r in rows]

    def summary_paused(self, story_id: int) -> bool:
        row = self._one("SELECT summary_paused FROM stories WHERE id = ?", (story_id,))
        return bool(row and row[0])

    # --- summaries ----------------------------------------------------------------------------------
    def summaries(self, story_id: int) -> list[Summary]:
        """Every summary of a story, newest first (all statuses)."""
        rows = self.c.execute("SELECT * FROM summaries WHERE story_id = ? ORDER BY id DESC", (story_id,))
        return [_summary(r) for r in rows.fetchall()]

    def summary(self, summary_id: int) -> Summary:
        return _summary(self._one("SELECT * FROM summaries WHERE id = ?", (summary_id,)))

    def running_summaries(self) -> list[Running]:
        rows = self.c.execute(
            "SELECT m.id, m.owner, l.owner AS holder, l.expires_at FROM summaries m LEFT JOIN leases l "
            f"ON l.key = 'summary:' || m.story_id WHERE m.status = {RUNNING}"
        ).fetchall()
        return [Running(r["id"], r["owner"], r["holder"], r["expires_at"]) for r in rows]

    # --- passages -----------------------------------------------------------------------------------
    def passages(self, story_id: int) -> list[Passage]:
        rows = self.c.execute(
            f"SELECT p.*, {_TAKES} FROM passages p WHERE story_id = ? AND removed_at IS NULL "
            "ORDER BY position",
            (story_id,),
        ).fetchall()
        return [_passage(r) for r in rows]

    def passage(self, passage_id: int) -> tuple[Passage, bool]:
        """A passage and whether it is still in the story (not undone or reset)."""
        row = self._one(
            f"SELECT p.*, {_TAKES}, s.archived_at FROM passages p JOIN stories s ON s.id = p.story_id"
            " WHERE p.id = ?",
            (passage_id,),
        )
        return _passage(row), row["removed_at"] is None and row["archived_at"] is None

    def passage_at(self, story_id: int, position: int) -> tuple[Passage, bool] | None:
        """The story's passage at `position` and whether the story still shows it; None: there is none."""
        row = self._one(
            f"SELECT p.*, {_TAKES} FROM passages p WHERE story_id = ? AND position = ?", (story_id, position)
        )
        return None if row is None else (_passage(row), row["removed_at"] is None)

    def takes(self, passage_id: int) -> list[int]:
        """The finished takes of a model passage's slot (generation ids, oldest first)."""
        query = f"SELECT id FROM generations WHERE passage_id = ? AND status = {DONE} ORDER BY id"
        return [r[0] for r in self.c.execute(query, (passage_id,)).fetchall()]

    def attempts(self, passage_id: int) -> int:
        return self._one("SELECT count(*) FROM generations WHERE passage_id = ?", (passage_id,))[0]

    def take_text(self, passage_id: int, generation_id: int) -> str:
        """A take's text as last edited, else as the model wrote it."""
        row = self._one(
            "SELECT text FROM passage_versions WHERE passage_id = ? AND generation_id = ? "
            "ORDER BY version DESC LIMIT 1",
            (passage_id, generation_id),
        )
        return (
            row[0] if row else self._one("SELECT answer FROM generations WHERE id = ?", (generation_id,))[0]
        )

    def versions(self, passage_id: int) -> list[tuple[int, int | None, str, str, float]]:
        """A passage's kept versions: (version, take, text, edited by, when), oldest first."""
        rows = self.c.execute(
            "SELECT version, generation_id, text, edited_by, edited_at FROM passage_versions "
            "WHERE passage_id = ? ORDER BY version",
            (passage_id,),
        ).fetchall()
        return [tuple(r) for r in rows]

    def newest_erasure(self, story_id: int) -> Any:
        return self._one("SELECT * FROM erasures WHERE story_id = ? ORDER BY id DESC LIMIT 1", (story_id,))

    def added_since(self, story_id: int, erasure_id: int) -> int:
        """Passages in the story added after the erased run `erasure_id` was written (still shown)."""
        return self._one(
            "SELECT count(*) FROM passages WHERE story_id = ? AND removed_at IS NULL AND id > "
            "(SELECT max(id) FROM passages WHERE erasure_id = ?)",
            (story_id, erasure_id),
        )[0]

    def library(self, home_id: str) -> list[StoryInfo]:
        """The stories of a channel and of its threads, oldest first."""
        rows = self.c.execute(
            "SELECT s.id, s.title, s.channel_id, s.archived_at, s.created_at, s.forked_from, "
            "(SELECT count(*) FROM passages p WHERE p.story_id = s.id AND p.removed_at IS NULL) AS n, "
            "(SELECT max(p.created_at) FROM passages p WHERE p.story_id = s.id) AS added, "
            "(SELECT max(v.edited_at) FROM passage_versions v JOIN passages p ON p.id = v.passage_id "
            " WHERE p.story_id = s.id) AS edited "
            "FROM stories s WHERE coalesce(s.home_id, s.channel_id) = ? OR s.channel_id = ? ORDER BY s.id",
            (home_id, home_id),
        ).fetchall()
        return [
            StoryInfo(
                r["id"],
                r["title"],
                r["channel_id"],
                r["n"],
                max(t for t in (r["created_at"], r["added"], r["edited"]) if t is not None),
                r["archived_at"] is None,
                r["forked_from"],
            )
            for r in rows
        ]

    def story_running(self, story_id: int) -> bool:
        """A generation of the story is running (or was, in a process not yet found gone)."""
        return (
            self._one(f"SELECT 1 FROM generations WHERE story_id = ? AND status = {RUNNING}", (story_id,))
            is not None
        )

    def story_row(self, story_id: int) -> Any:
        return self._one("SELECT * FROM stories WHERE id = ?", (story_id,))

    def present(self, passage_ids: Sequence[int]) -> list[Passage]:
        """Those of the passages still in the story (not undone or reset), in story order."""
        if not passage_ids:
            return []
        marks = ",".join("?" * len(passage_ids))
        rows = self.c.execute(
            f"SELECT p.*, {_TAKES} FROM passages p WHERE removed_at IS NULL AND id IN ({marks}) "
            "ORDER BY position",
            passage_ids,
        ).fetchall()
        return [_passage(r) for r in rows]

    def present_ids(self, passage_ids: Sequence[int]) -> set[int]:
        """Which of the passages are still in the story, by id (their texts are not read)."""
        if not passage_ids:
            return set()
        marks = ",".join("?" * len(passage_ids))
        query = f"SELECT id FROM passages WHERE removed_at IS NULL AND id IN ({marks})"
        return {r[0] for r in self.c.execute(query, passage_ids).fetchall()}

    def alternatives(self, passage_id: int, upto: int | None = None) -> int:
        """How many finished attempts a slot holds (those up to generation `upto`, if given)."""
        query = f"SELECT count(*) FROM generations WHERE passage_id = ? AND status = {DONE}"
        if upto is None:
            return self._one(query, (passage_id,))[0]
        return self._one(query + " AND id <= ?", (passage_id, upto))[0]

    # --- generations --------------------------------------------------------------------------------
    def generation(self, generation_id: int) -> GenerationRow | None:
        r = self._one(
            "SELECT g.*, s.channel_id FROM generations g JOIN stories s ON s.id = g.story_id WHERE g.id = ?",
            (generation_id,),
        )
        if r is None:
            return None
        return GenerationRow(
            r["id"],
            r["story_id"],
            r["channel_id"],
            r["passage_id"],
            r["requested_by"],
            r["model"],
            r["direction"],
            r["length"],
            Status(r["status"]),
            r["user_text"],
            r["reasoning"],
            r["answer"],
            r["error"],
            r["message_ref"],
            json.loads(r["context"]),
            r["prompt"],
            bool(r["raw"]),
            None if r["delivery"] is None else DeliveryState(r["delivery"]),
            r["owner"],
        )

    def running_generations(self) -> list[Running]:
        rows = self.c.execute(
            "SELECT g.id, s.channel_id, g.message_ref, g.owner, l.owner AS holder, l.expires_at "
            "FROM generations g JOIN stories s ON s.id = g.story_id "
            f"LEFT JOIN leases l ON l.key = 'story:' || s.channel_id WHERE g.status = {RUNNING}"
        ).fetchall()
        return [
            Running(r["id"], r["owner"], r["holder"], r["expires_at"], r["channel_id"], r["message_ref"])
            for r in rows
        ]

    def owed_delivery(self) -> list[tuple[int, str | None, float | None]]:
        """Finished generations whose messages do not show their final state, with the holder and expiry
        of their delivery lease: oldest first."""
        rows = self.c.execute(
            "SELECT g.id, l.owner, l.expires_at FROM generations g LEFT JOIN leases l "
            f"ON l.key = 'delivery:' || g.id WHERE g.delivery = {PENDING} AND g.status != {RUNNING} "
            "ORDER BY g.id"
        ).fetchall()
        return [(r["id"], r["owner"], r["expires_at"]) for r in rows]

    # --- leases, ratings, opt-outs --------------------------------------------------------------------
    def lease(self, key: str) -> tuple[str, float] | None:
        """(owner, expires_at) of the lease `key`, live or not."""
        row = self._one("SELECT owner, expires_at FROM leases WHERE key = ?", (key,))
        return (row["owner"], row["expires_at"]) if row else None

    def gateway_leases(self) -> list[tuple[str, str, float]]:
        rows = self.c.execute("SELECT key, owner, expires_at FROM leases WHERE key LIKE 'gateway:%'")
        return [(r["key"], r["owner"], r["expires_at"]) for r in rows]

    def held(self, owner: str) -> set[str]:
        return {r[0] for r in self.c.execute("SELECT key FROM leases WHERE owner = ?", (owner,))}

    def tally(self, generation_id: int) -> tuple[int, int]:
        """(thumbs up, thumbs down) for a generation."""
        row = self._one(
            "SELECT count(*) FILTER (WHERE value = 1), count(*) FILTER (WHERE value = -1) FROM ratings "
            "WHERE generation_id = ?",
            (generation_id,),
        )
        return row[0], row[1]

    def opted_out(self, member_id: str) -> bool:
        return self._one("SELECT 1 FROM opt_outs WHERE member_id = ?", (member_id,)) is not None

    # --- a whole story as a file (bot/core/storyfile.py) ------------------------------------------------
    def story_document(self, story_id: int) -> sf.StoryDocument:
        """The story as its file holds it: what it shows now and how it came to be (no times, no ids)."""
        row = self.story_row(story_id)
        passages = self.passages(story_id)
        memory, note = self.note(story_id, "memory"), self.note(story_id, "note")
        return sf.StoryDocument(
            format="story-bot.story",
            version=sf.VERSION,
            title=row["title"],
            settings=self.settings(story_id).values(),
            memory=None if memory is None else memory.text,
            note=None if note is None else note.text,
            summary=self._summary_document(story_id, passages),
            summary_paused=bool(row["summary_paused"]),
            lore=[
                sf.OurEntry(name=e.name, keywords=list(e.keywords), text=e.text, always_on=e.always_on)
                for e in self.lore_entries(story_id)
            ],
            cast=[
                sf.PersonaDoc(
                    member_id=p.member_id, member_name=p.member_name, name=p.name, description=p.description
                )
                for p in self.personas(story_id)
            ],
            passages=[self._passage_document(p) for p in passages],
        )

    def _passage_document(self, p: Passage) -> sf.PassageDoc:
        takes = self.takes(p.id) if p.by_model else []
        number = {g: k for k, g in enumerate(takes, 1)}
        rows = self.c.execute(
            "SELECT g.id, g.model, g.answer FROM generations g WHERE g.passage_id = ? AND g.status = "
            f"{DONE} ORDER BY g.id",
            (p.id,),
        ).fetchall()
        versions = [
            sf.Version(take=number.get(take) if take else None, text=text, edited_by=by)
            for _, take, text, by, _ in self.versions(p.id)
        ]
        return sf.PassageDoc(
            author=p.author_kind.value,
            author_id=p.author_id,
            author_name=p.author_name,
            text=p.text,
            take=number.get(p.generation_id) if p.by_model and p.generation_id else None,
            takes=[sf.Take(model=r["model"], text=r["answer"] or "") for r in rows],
            versions=versions,
        )

    def _summary_document(self, story_id: int, passages: list[Passage]) -> sf.SummaryDoc | None:
        from bot.core.summary import current

        s = current(self.summaries(story_id), passages)
        if s is None:
            return None
        covers = sum(p.position <= s.upto_position for p in passages)
        return sf.SummaryDoc(covers=covers, text=s.text or "", model=s.model, edited_by=s.edited_by)


class Unit(Reads):
    """Reads and writes inside one transaction (made by `Store.unit()`, never directly)."""

    # --- stories, notes, lore -------------------------------------------------------------------
    def new_story(
        self,
        channel: Channel,
        by: Member,
        title: str | None = None,
        forked: tuple[int, int] | None = None,
        archived: bool = False,
    ) -> int:
        """A story in `channel` (a thread's goes into its parent's library); `forked`: (story, position)
        it was copied from; `archived`: stored, not the channel's story (yet)."""
        now = time.time()
        return self._one(
            "INSERT INTO stories (channel_id, guild_id, title, created_by, created_at, home_id, forked_from, "
            "forked_at, archived_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                channel.id,
                channel.guild_id,
                title,
                by.id,
                now,
                channel.parent_id or channel.id,
                *(forked or (None, None)),
                now if archived else None,
            ),
        )[0]

    def reopen_story(self, story_id: int) -> None:
        self.c.execute("UPDATE stories SET archived_at = NULL WHERE id = ?", (story_id,))

    def archive_story(self, channel_id: str) -> None:
        self.c.execute(
            "UPDATE stories SET archived_at = ? WHERE channel_id = ? AND archived_at IS NULL",
            (time.time(), channel_id),
        )

    def add_note(self, story_id: int, kind: str, text: str, by: Member) -> Note:
        now = time.time()
        nid = self._one(
            "INSERT INTO story_notes (story_id, kind, text, set_by, set_at) VALUES (?, ?, ?, ?, ?) "
            "RETURNING id",
            (story_id, kind, text, by.id, now),
        )[0]
        return Note(nid, kind, text, by.id, now)

    def add_lore(self, story_id: int, entry: LoreEntry) -> LoreEntry:
        """Store a new entry (its id 0 until now); the stored one is returned."""
        now, by = time.time(), entry.created_by
        eid = self._one(
            "INSERT INTO lore_entries (story_id, name, name_key, keywords, text, always_on, created_by, "
            "created_at, updated_by, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                story_id,
                entry.name,
                name_key(entry.name),
                json.dumps(entry.keywords),
                entry.text,
                int(entry.always_on),
                by,
                now,
                by,
                now,
            ),
        )[0]
        return replace(entry, id=eid, version=1, updated_by=by)

    def save_lore(self, new: LoreEntry) -> None:
        """Write an entry's next version over the one before it (`new.version` - 1)."""
        self.c.execute(
            "UPDATE lore_entries SET name = ?, name_key = ?, keywords = ?, text = ?, always_on = ?, "
            "version = version + 1, updated_by = ?, updated_at = ? WHERE id = ? AND version = ?",
            (
                new.name,
                name_key(new.name),
                json.dumps(new.keywords),
                new.text,
                int(new.always_on),
                new.updated_by,
                time.time(),
                new.id,
                new.version - 1,
            ),
        )

    def remove_lore(self, entry_id: int) -> None:
        self.c.execute("UPDATE lore_entries SET removed_at = ? WHERE id = ?", (time.time(), entry_id))

    def add_settings(self, story_id: int, settings: StorySettings, by: str, at: float | None = None) -> int:
        return self._one(
            "INSERT INTO story_settings (story_id, settings, set_by, set_at) VALUES (?, ?, ?, ?) "
            "RETURNING id",
            (story_id, settings.to_json(), by, time.time() if at is None else at),
        )[0]

    def add_persona(self, story_id: int, member: Member, name: str, description: str) -> Persona:
        """The member's persona in the story from now on (the one before it kept, marked removed)."""
        self.remove_persona(story_id, member.id)
        pid = self._one(
            "INSERT INTO personas (story_id, member_id, member_name, name, description, set_at) "
            "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (story_id, member.id, member.name, name, description, time.time()),
        )[0]
        return Persona(pid, member.id, member.name, name, description)

    def remove_persona(self, story_id: int, member_id: str) -> int:
        return self.c.execute(
            "UPDATE personas SET removed_at = ? WHERE story_id = ? AND member_id = ? AND removed_at IS NULL",
            (time.time(), story_id, member_id),
        ).rowcount

    def set_summary_paused(self, story_id: int, paused: bool) -> None:
        self.c.execute("UPDATE stories SET summary_paused = ? WHERE id = ?", (int(paused), story_id))

    def mark_imported(self, story_id: int) -> None:
        self.c.execute("UPDATE stories SET imported_at = ? WHERE id = ?", (time.time(), story_id))

    def import_story(self, story_id: int, doc: sf.StoryDocument, by: Member) -> None:
        """Write a checked story file's parts into the new story `story_id` (its lore is the caller's)."""
        now = time.time()
        shown: list[Passage] = []
        for d in doc.passages:
            author = Member(d.author_id, d.author_name)
            kind = AuthorKind(d.author)
            passage = self.add_passage(story_id, kind, author, d.text)
            gens = [self._imported_take(story_id, passage.id, author, t) for t in d.takes]
            if gens:
                self.c.execute(
                    "UPDATE passages SET generation_id = ? WHERE id = ?",
                    (gens[(d.take or 1) - 1], passage.id),
                )
            for n, v in enumerate(d.versions, 1):
                take = gens[v.take - 1] if v.take else None
                self._version(passage.id, n, take, v.text, v.edited_by, now)
            shown.append(passage)
        for which, text in (("memory", doc.memory), ("note", doc.note)):
            if text is not None:
                self.add_note(story_id, which, text, by)
        for p in doc.cast:
            self.c.execute(
                "INSERT INTO personas (story_id, member_id, member_name, name, description, set_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (story_id, p.member_id, p.member_name, p.name, p.description, now),
            )
        if doc.summary is not None:
            covered = shown[: doc.summary.covers]
            self.c.execute(
                "INSERT INTO summaries (story_id, upto_position, passage_ids, digest, model, status, text, "
                f"created_at, finished_at, edited_by) VALUES (?, ?, ?, ?, ?, {DONE}, ?, ?, ?, ?)",
                (
                    story_id,
                    covered[-1].position,
                    json.dumps([c.id for c in covered]),
                    digest(covered),
                    doc.summary.model,
                    doc.summary.text,
                    now,
                    now,
                    doc.summary.edited_by,
                ),
            )
        self.set_summary_paused(story_id, doc.summary_paused)
        self.mark_imported(story_id)

    def _imported_take(self, story_id: int, passage_id: int, asked_by: Member, take: sf.Take) -> int:
        """A take from a file: a finished generation with no prompt (the file does not say what the model
        read), so the feedback export leaves it out (stories.imported_at)."""
        now = time.time()
        return self._one(
            "INSERT INTO generations (story_id, passage_id, requested_by, model, user_text, prompt, raw, "
            f"options, context, status, answer, created_at, finished_at) VALUES (?, ?, ?, ?, '', '', 0, "
            f"'{{}}', '{{\"imported\": true}}', {DONE}, ?, ?, ?) RETURNING id",
            (story_id, passage_id, asked_by.id, take.model, take.text, now, now),
        )[0]

    # --- summaries ----------------------------------------------------------------------------------
    def add_edited_summary(self, s: Summary, text: str, by: str, at: float | None = None) -> int:
        """A writer's summary of the passages `s` covers (it stands in for `s` from now on)."""
        now = time.time() if at is None else at
        return self._one(
            "INSERT INTO summaries (story_id, previous_id, upto_position, passage_ids, digest, model, "
            f"status, text, created_at, finished_at, edited_by) VALUES (?, ?, ?, ?, ?, ?, {DONE}, ?, ?, ?, "
            "?) RETURNING id",
            (
                s.story_id,
                s.id,
                s.upto_position,
                json.dumps(list(s.passage_ids)),
                s.digest,
                s.model,
                text,
                now,
                now,
                by,
            ),
        )[0]

    def set_summary_aside(self, summary_id: int, why: str) -> None:
        self.c.execute(
            f"UPDATE summaries SET status = '{Status.DISCARDED}', error = ? WHERE id = ?", (why, summary_id)
        )

    def add_summary(
        self,
        story_id: int,
        upto_position: int,
        covered: list[Passage],
        previous_id: int | None,
        model: str,
        owner: str | None,
    ) -> int:
        return self._one(
            "INSERT INTO summaries (story_id, previous_id, upto_position, passage_ids, digest, model, "
            f"status, created_at, owner) VALUES (?, ?, ?, ?, ?, ?, {RUNNING}, ?, ?) RETURNING id",
            (
                story_id,
                previous_id,
                upto_position,
                json.dumps([p.id for p in covered]),
                digest(covered),
                model,
                time.time(),
                owner,
            ),
        )[0]

    def end_summary(self, summary_id: int, status: Status, text: str, error: str | None) -> None:
        self.c.execute(
            "UPDATE summaries SET status = ?, text = ?, error = ?, finished_at = ? WHERE id = ?",
            (status, text, error, time.time(), summary_id),
        )

    def fail_summary(self, summary_id: int, error: str) -> None:
        self.c.execute(
            f"UPDATE summaries SET status = '{Status.FAILED}', error = ?, finished_at = ? "
            f"WHERE id = ? AND status = {RUNNING}",
            (error, time.time(), summary_id),
        )

    # --- passages -----------------------------------------------------------------------------------
    def add_passage(
        self, story_id: int, kind: AuthorKind, author: Member, text: str, generation_id: int | None = None
    ) -> Passage:
        position = self._one(
            "SELECT coalesce(max(position), 0) + 1 FROM passages WHERE story_id = ?", (story_id,)
        )[0]
        pid = self._one(
            "INSERT INTO passages (story_id, position, author_kind, author_id, author_name, text, "
            "generation_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (story_id, position, kind, author.id, author.name, text, generation_id, time.time()),
        )[0]
        return Passage(pid, story_id, position, kind, author.id, author.name, text, generation_id)

    def remove_passages(self, passage_ids: Sequence[int]) -> None:
        self.c.executemany(
            "UPDATE passages SET removed_at = ? WHERE id = ? AND removed_at IS NULL",
            [(time.time(), pid) for pid in passage_ids],
        )

    def show_alternative(self, passage_id: int, text: str, generation_id: int) -> Passage:
        """A regeneration lands: the slot shows its text, and the take whose message showed the slot is
        owed the "replaced" state in its messages (no buttons)."""
        self.owe_slot_messages(passage_id)
        self.c.execute(
            "UPDATE passages SET text = ?, generation_id = ?, revision = revision + 1 WHERE id = ?",
            (text, generation_id, passage_id),
        )
        return _passage(self._one(f"SELECT p.*, {_TAKES} FROM passages p WHERE id = ?", (passage_id,)))

    def owe_slot_messages(self, passage_id: int) -> None:
        """The slot's messages are owed a render of its new state: its newest take's message shows the
        passage as it is now (delivery.py); the take it replaced loses its buttons."""
        self.c.execute(
            f"UPDATE generations SET delivery = {PENDING} WHERE passage_id = ? AND delivery IS NOT NULL "
            f"AND delivery != '{DeliveryState.LOST}'",
            (passage_id,),
        )

    # --- history: edits, takes, erasures, forks ----------------------------------------------------
    def add_edit(self, p: Passage, text: str, by: Member) -> None:
        """Keep an edit of the text shown (and, at the first edit of it, what it was before), then show
        it. A take's original is its generation's answer; a member passage's, its text when added."""
        take = p.generation_id
        versions = self.versions(p.id)
        n = versions[-1][0] if versions else 0
        if not any(v[1] == take for v in versions):  # the first edit of this take (or member passage)
            if take is None:
                row = self._one("SELECT author_id, created_at FROM passages WHERE id = ?", (p.id,))
            else:
                row = self._one("SELECT requested_by, finished_at FROM generations WHERE id = ?", (take,))
            n += 1
            self._version(p.id, n, take, p.text, row[0], row[1])
        self._version(p.id, n + 1, take, text, by.id, time.time())
        self.c.execute("UPDATE passages SET text = ?, revision = revision + 1 WHERE id = ?", (text, p.id))

    def _version(self, pid: int, n: int, take: int | None, text: str, by: str, at: float) -> None:
        self.c.execute(
            "INSERT INTO passage_versions (passage_id, version, generation_id, text, edited_by, edited_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (pid, n, take, text, by, at),
        )

    def choose_take(self, passage_id: int, generation_id: int, by: Member) -> None:
        text = self.take_text(passage_id, generation_id)
        self.c.execute(
            "UPDATE passages SET text = ?, generation_id = ?, revision = revision + 1 WHERE id = ?",
            (text, generation_id, passage_id),
        )
        self.c.execute(
            "INSERT INTO take_choices (passage_id, generation_id, chosen_by, chosen_at) VALUES (?, ?, ?, ?)",
            (passage_id, generation_id, by.id, time.time()),
        )

    def erase(self, story_id: int, from_position: int, by: Member) -> int:
        now = time.time()
        eid = self._one(
            "INSERT INTO erasures (story_id, from_position, erased_by, erased_at) VALUES (?, ?, ?, ?) "
            "RETURNING id",
            (story_id, from_position, by.id, now),
        )[0]
        self.c.execute(
            "UPDATE passages SET removed_at = ?, erasure_id = ? WHERE story_id = ? AND position >= ? "
            "AND removed_at IS NULL",
            (now, eid, story_id, from_position),
        )
        return eid

    def redo(self, erasure_id: int, by: Member) -> None:
        self.c.execute("UPDATE passages SET removed_at = NULL WHERE erasure_id = ?", (erasure_id,))
        self.c.execute(
            "UPDATE erasures SET redone_by = ?, redone_at = ? WHERE id = ?", (by.id, time.time(), erasure_id)
        )

    def copy_passages(self, story_id: int, originals: Sequence[Passage]) -> list[Passage]:
        """Copies of `originals` (same positions, authors and texts) in story `story_id`, each naming its
        origin. A model passage's copy shows the take's text; its takes stay with the original."""
        copies = []
        for p in originals:
            pid = self._one(
                "INSERT INTO passages (story_id, position, author_kind, author_id, author_name, text, "
                "created_at, origin_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (story_id, p.position, p.author_kind, p.author_id, p.author_name, p.text, time.time(), p.id),
            )[0]
            copies.append(
                Passage(pid, story_id, p.position, p.author_kind, p.author_id, p.author_name, p.text)
            )
        return copies

    def copy_story_parts(self, source: int, target: int) -> None:
        """The source story's current memory, author's note and live lore entries, into `target`."""
        for kind in ("memory", "note"):
            note = self.note(source, kind)
            if note is not None:
                self.c.execute(
                    "INSERT INTO story_notes (story_id, kind, text, set_by, set_at) VALUES (?, ?, ?, ?, ?)",
                    (target, kind, note.text, note.set_by, note.set_at),
                )
        self.c.execute(
            "INSERT INTO lore_entries (story_id, name, name_key, keywords, text, always_on, created_by, "
            "created_at, updated_by, updated_at) SELECT ?, name, name_key, keywords, text, always_on, "
            "created_by, created_at, updated_by, updated_at FROM lore_entries WHERE story_id = ? AND "
            "removed_at IS NULL",
            (target, source),
        )

    def copy_settings_and_cast(self, source: int, target: int) -> None:
        """The source story's settings and cast, into `target` (a fork inherits them)."""
        settings = self.settings(source)
        if settings.id is not None:
            self.c.execute(
                "INSERT INTO story_settings (story_id, settings, set_by, set_at) SELECT ?, settings, set_by, "
                "set_at FROM story_settings WHERE id = ?",
                (target, settings.id),
            )
        self.c.execute(
            "INSERT INTO personas (story_id, member_id, member_name, name, description, set_at) SELECT ?, "
            "member_id, member_name, name, description, set_at FROM personas WHERE story_id = ? AND "
            "removed_at IS NULL ORDER BY id",
            (target, source),
        )

    def copy_summary(self, s: Summary, target: int, copies: Sequence[Passage]) -> None:
        """A finished summary of the source's passages, as the fork's (covering the copies)."""
        covered = [c for c in copies if c.position <= s.upto_position]
        self.c.execute(
            "INSERT INTO summaries (story_id, upto_position, passage_ids, digest, model, status, text, "
            f"created_at, finished_at) VALUES (?, ?, ?, ?, ?, {DONE}, ?, ?, ?)",
            (
                target,
                s.upto_position,
                json.dumps([c.id for c in covered]),
                digest(covered),
                s.model,
                s.text,
                s.created_at,
                time.time(),
            ),
        )

    def set_passage_message(self, passage_id: int, ref: str) -> None:
        self.c.execute("UPDATE passages SET message_ref = ? WHERE id = ?", (ref, passage_id))

    # --- generations --------------------------------------------------------------------------------
    def add_generation(
        self,
        story_id: int,
        requested_by: Member,
        model: str,
        *,
        user_text: str,
        prompt: str,
        raw: bool,
        options: Options,
        context: GenerationRecord,
        direction: str | None,
        length: str | None,
        slot: int | None,
        owner: str | None,
    ) -> int:
        return self._one(
            "INSERT INTO generations (story_id, passage_id, requested_by, model, direction, length, "
            "user_text, prompt, raw, options, context, status, created_at, owner) "
            f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {RUNNING}, ?, ?) RETURNING id",
            (
                story_id,
                slot,
                requested_by.id,
                model,
                direction,
                length,
                user_text,
                prompt,
                int(raw),
                json.dumps(options),
                json.dumps(context),
                time.time(),
                owner,
            ),
        )[0]

    def end_generation(
        self,
        generation_id: int,
        status: Status,
        error: str | None,
        *,
        output: str,
        reasoning: str,
        answer: str,
        issues: list[str],
        stats: Stats,
    ) -> None:
        self.c.execute(
            "UPDATE generations SET status = ?, output = ?, reasoning = ?, answer = ?, parse_issues = ?, "
            "error = ?, finished_at = ?, first_token_s = ?, prompt_tokens = ?, output_tokens = ?, "
            "model_ns = ? WHERE id = ?",
            (
                status,
                output,
                reasoning,
                answer,
                json.dumps(issues),
                error,
                time.time(),
                stats.get("first_token_s"),
                stats.get("prompt_tokens"),
                stats.get("output_tokens"),
                stats.get("model_ns"),
                generation_id,
            ),
        )

    def set_slot(self, generation_id: int, passage_id: int) -> None:
        self.c.execute("UPDATE generations SET passage_id = ? WHERE id = ?", (passage_id, generation_id))

    def set_host(self, generation_id: int, host: str) -> None:
        self.c.execute("UPDATE generations SET host = ? WHERE id = ?", (host, generation_id))

    def fail_generation(
        self, generation_id: int, error: str, output: str = "", issues: list[str] | None = None
    ) -> None:
        """Mark a generation failed if it is still running; `issues` are the parse issues of an output
        that was read."""
        self.c.execute(
            f"UPDATE generations SET status = '{Status.FAILED}', error = ?, output = ?, finished_at = ?, "
            f"parse_issues = ? WHERE id = ? AND status = {RUNNING}",
            (error, output, time.time(), None if issues is None else json.dumps(issues), generation_id),
        )

    def abandon_generation(self, generation_id: int, error: str) -> None:
        """Mark failed a generation left running by an owner that is gone (what it wrote is unknown)."""
        self.c.execute(
            f"UPDATE generations SET status = '{Status.FAILED}', error = ?, finished_at = ? "
            f"WHERE id = ? AND status = {RUNNING}",
            (error, time.time(), generation_id),
        )

    def set_message_ref(self, generation_id: int, ref: str) -> None:
        """The driver's messages for a generation; they are owed its final state (a pending delivery)."""
        self.c.execute(
            f"UPDATE generations SET message_ref = ?, delivery = coalesce(delivery, {PENDING}) WHERE id = ?",
            (ref, generation_id),
        )

    def set_delivery(self, generation_id: int, state: DeliveryState) -> None:
        self.c.execute("UPDATE generations SET delivery = ? WHERE id = ?", (state, generation_id))

    # --- leases, ratings, opt-outs --------------------------------------------------------------------
    def take_lease(self, key: str, owner: str, expires_at: float) -> None:
        """Hold lease `key` for `owner` until `expires_at`."""
        self.c.execute(
            "INSERT INTO leases (key, owner, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE "
            "SET owner = excluded.owner, expires_at = excluded.expires_at",
            (key, owner, expires_at),
        )

    def extend_leases(self, keys: Sequence[str], owner: str, expires_at: float) -> None:
        self.c.executemany(
            "UPDATE leases SET expires_at = ? WHERE key = ? AND owner = ?",
            [(expires_at, k, owner) for k in keys],
        )

    def drop_lease(self, key: str, owner: str) -> None:
        self.c.execute("DELETE FROM leases WHERE key = ? AND owner = ?", (key, owner))

    def rate(self, generation_id: int, member_id: str, value: int) -> None:
        self.c.execute(
            "INSERT INTO ratings (generation_id, member_id, value, rated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (generation_id, member_id) DO UPDATE SET value = excluded.value, "
            "rated_at = excluded.rated_at",
            (generation_id, member_id, value, time.time()),
        )

    def set_opt_out(self, member_id: str, opted_out: bool) -> None:
        if opted_out:
            self.c.execute(
                "INSERT INTO opt_outs (member_id, opted_out_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (member_id, time.time()),
            )
        else:
            self.c.execute("DELETE FROM opt_outs WHERE member_id = ?", (member_id,))


# A passage's takes (finished generations of its slot), which one it shows, and whether the text shown
# is an edit (a version kept for that take, or for a member passage).
_TAKES = (
    f"(SELECT count(*) FROM generations g WHERE g.passage_id = p.id AND g.status = {DONE}) AS alternatives, "
    f"(SELECT count(*) FROM generations g WHERE g.passage_id = p.id AND g.status = {DONE} "
    "AND g.id <= p.generation_id) AS take, "
    "EXISTS (SELECT 1 FROM passage_versions v WHERE v.passage_id = p.id "
    "AND coalesce(v.generation_id, 0) = coalesce(p.generation_id, 0)) AS edited"
)


def _passage(r: Any) -> Passage:
    return Passage(
        r["id"],
        r["story_id"],
        r["position"],
        AuthorKind(r["author_kind"]),
        r["author_id"],
        r["author_name"],
        r["text"],
        r["generation_id"],
        r["alternatives"] or 1,
        r["take"] or 1,
        r["revision"],
        bool(r["edited"]),
    )


def _lore(r: Any) -> LoreEntry:
    return LoreEntry(
        r["id"],
        r["name"],
        tuple(json.loads(r["keywords"])),
        r["text"],
        bool(r["always_on"]),
        r["version"],
        r["created_by"],
        r["updated_by"],
    )


def _summary(r: Any) -> Summary:
    return Summary(
        r["id"],
        r["story_id"],
        r["upto_position"],
        tuple(json.loads(r["passage_ids"])),
        r["digest"],
        Status(r["status"]),
        r["model"],
        r["text"],
        r["error"],
        r["previous_id"],
        r["created_at"],
        r["edited_by"],
    )
