"""The story store: a few operations, each one transaction (a unit of work), on SQLite in WAL mode (a
file, the default) or PostgreSQL (a `postgresql://` URL; contract/store/engine.py), with the same SQL and
the same guarantees.

Each write opens a :class:`~bot.store.unit.Unit`, reads what the core's rules need, asks them
(bot/core/lore.py, bot/core/landing.py) and writes, all in one transaction. A process killed at any
moment leaves the database consistent (SQLite's atomic commit; PostgreSQL rolls back the transaction of a
client that went away). Writers take turns (SQLite's BEGIN IMMEDIATE; one advisory lock per schema on
PostgreSQL), so an operation that reads, decides and writes is never raced. Several processes may share
the database: what one of them is doing (a story's generation, a summary, a delivery, its shards of the
Discord events) is a lease with an owner and an expiry (:meth:`Store.claim`, bot/store/leases.py), and
:meth:`Store.recover` fails only the generations whose owner is gone. Calls are short, so the async
service makes them directly from the event loop.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bot.core import history, landing, lorefiles, messages
from bot.core import lore as lorebook
from bot.core import storyfile as sf
from bot.core import summary as summaries
from bot.core.events import StoryError
from bot.core.lore import LoreEntry
from bot.core.settings import StorySettings
from bot.core.story import AuthorKind, Channel, Member, Note, Passage, Persona, Story, StoryInfo, Summary
from bot.store.leases import gateway_key, live, orphaned, overlaps
from bot.store.opening import check as check_opening
from bot.store.opening import claim as claim_opening
from bot.store.unit import GenerationRow, Reads, Unit
from contract.serving import Options
from contract.store.engine import Connection, PgConnection, is_url, shown, write_lock
from contract.store.migrations import migrate
from contract.store.status import DeliveryState, Status

if TYPE_CHECKING:  # types only: the core's plan and the backend import the store
    from bot.core.plan import GenerationRecord
    from bot.llm import Stats


@dataclass(frozen=True)
class Delivery:
    """What a generation's messages must show: its passage (with the footer's facts) or its failure."""

    generation_id: int
    channel_id: str
    message_ref: str | None
    status: Status
    text: str  # the passage as stored (status done), else the failure to show
    position: int | None = None
    asked_by: str | None = None
    alternatives: int = 1
    current: bool = True  # the slot's newest take, whose messages show the passage as it is now
    shown_id: int | None = None  # current: the take the passage shows (its buttons act on it)
    take: int = 1  # current: which take that is, of `alternatives`
    edited: bool = False  # current: the text shown is an edit
    takes: tuple[int, ...] = ()  # current: every take of the slot (generation ids, oldest first)


@dataclass(frozen=True)
class Interrupted:
    """A generation that was running when the process died, now marked failed."""

    generation_id: int
    channel_id: str
    message_ref: str | None


class Store:
    """The store on a SQLite file (a path) or a PostgreSQL database (a `postgresql://` URL)."""

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time):
        self.target = str(path)
        self.clock = clock  # what leases expire by: wall time, shared with the other processes
        self.path = shown(self.target)  # for messages: a URL without its password
        self.conn: Connection
        if is_url(self.target):
            self.conn = PgConnection(self.target)
            self.dialect = "postgresql"
            migrate(self.conn)
        else:
            sqlite = self._open_sqlite(self.target)
            self.conn, self.dialect = sqlite, "sqlite"
            migrate(sqlite)
            claim_opening(sqlite)
        self.reads = Reads(self.conn)  # one read, one statement: outside any transaction

    @staticmethod
    def _open_sqlite(path: str) -> sqlite3.Connection:
        if path != ":memory:":
            check_opening(path)  # before SQLite may write: new, or the bot's; else said, untouched
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
    def tx(self) -> Iterator[Connection]:
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

    @contextmanager
    def unit(self) -> Iterator[Unit]:
        """A unit of work: typed reads and writes in one transaction, committed when the block ends and
        rolled back if it raises."""
        with self.tx() as c:
            yield Unit(c)

    # --- stories -------------------------------------------------------------------------------
    def active_story_id(self, channel_id: str) -> int | None:
        return self.reads.active_story_id(channel_id)

    def ensure_story(self, channel: Channel, by: Member) -> int:
        with self.unit() as u:
            story_id = u.active_story_id(channel.id)
            return u.new_story(channel, by) if story_id is None else story_id

    def start_story(self, channel: Channel, by: Member, title: str | None) -> int:
        """Archive the channel's story (kept, with its ratings) and open a new one."""
        with self.unit() as u:
            u.archive_story(channel.id)
            return u.new_story(channel, by, title)

    def story(self, story_id: int) -> Story:
        return self.reads.story(story_id)

    # --- memory and author's note --------------------------------------------------------------
    def note(self, story_id: int, kind: str) -> Note | None:
        """The story's current memory or note (None if never set; text "" once cleared)."""
        return self.reads.note(story_id, kind)

    def set_note(self, story_id: int, kind: str, text: str, by: Member) -> Note:
        with self.unit() as u:
            return u.add_note(story_id, kind, text, by)

    # --- lorebook ------------------------------------------------------------------------------
    def lore_entries(self, story_id: int) -> list[LoreEntry]:
        return self.reads.lore_entries(story_id)

    def add_lore(self, story_id: int, entry: LoreEntry) -> LoreEntry:
        """Add a checked new entry (lorebook.new_entry); one transaction checks its name, its keywords and
        the limit against the others."""
        with self.unit() as u:
            lorebook.check_add(u.lore_entries(story_id), entry.name, entry.keywords)
            return u.add_lore(story_id, entry)

    def edit_lore(
        self, story_id: int, by: Member, name: str, change: lorebook.LoreChange, version: int | None = None
    ) -> LoreEntry:
        """Change an entry as `change` says (None keeps a field). With `version` (the one the member saw),
        an entry changed since is not overwritten: LoreConflict says so."""
        with self.unit() as u:
            new = lorebook.edit(u.lore_entries(story_id), by.id, name, change, version)
            u.save_lore(new)
        return new

    def remove_lore(self, story_id: int, name: str, version: int | None = None) -> LoreEntry:
        with self.unit() as u:
            entry = lorebook.find(u.lore_entries(story_id), name, version)
            u.remove_lore(entry.id)
        return entry

    # --- stories and lorebooks as files (bot/core/storyfile.py, bot/core/lorefiles.py) ---------------
    def story_document(self, story_id: int) -> sf.StoryDocument:
        with self.unit() as u:  # one snapshot of the whole story
            return u.story_document(story_id)

    def import_story(
        self,
        channel: Channel,
        by: Member,
        doc: sf.StoryDocument,
        settings: StorySettings,
        lore: Sequence[lorefiles.Candidate],
    ) -> tuple[int, list[lorefiles.Outcome]]:
        """A checked story file as the channel's new story (the one there archived, kept), with its
        lore entry by entry (`lore`): all in one transaction."""
        with self.unit() as u:
            u.archive_story(channel.id)
            story_id = u.new_story(channel, by, doc.title)
            u.import_story(story_id, doc, by)
            if settings.values():
                u.add_settings(story_id, settings, by.id)
            return story_id, _apply_lore(u, story_id, lore, by)

    def import_lore(
        self, story_id: int, candidates: Sequence[lorefiles.Candidate], by: Member
    ) -> list[lorefiles.Outcome]:
        """A lorebook file's entries into the story's lorebook, each kept, merged or skipped (one
        transaction: every entry the report calls kept or merged is in, or none)."""
        with self.unit() as u:
            return _apply_lore(u, story_id, candidates, by)

    # --- rolling summaries ---------------------------------------------------------------------
    def summaries(self, story_id: int) -> list[Summary]:
        """Every summary of a story, newest first (all statuses)."""
        return self.reads.summaries(story_id)

    def begin_summary(
        self,
        story_id: int,
        upto_position: int,
        covered: list[Passage],
        previous_id: int | None,
        model: str,
        owner: str | None = None,
    ) -> int:
        with self.unit() as u:
            return u.add_summary(story_id, upto_position, covered, previous_id, model, owner)

    def finish_summary(self, summary_id: int, text: str) -> bool:
        """Store a summary's text, if the passages it covers are still the story's, no writer edited the
        summary meanwhile and the summaries are not paused (else it is kept, discarded, with why)."""
        with self.unit() as u:
            s = u.summary(summary_id)
            landed = landing.summary_lands(s, u.present(s.passage_ids), u.story_active(s.story_id))
            edited = any(o.edited_by and o.id > summary_id for o in u.summaries(s.story_id))
            why = (
                messages.SUMMARY_STORY_CHANGED
                if not landed
                else messages.SUMMARY_EDITED
                if edited
                else messages.SUMMARY_PAUSED
                if u.summary_paused(s.story_id)
                else None
            )
            u.end_summary(summary_id, Status.DISCARDED if why else Status.DONE, text, why)
        return why is None

    def edit_summary(self, story_id: int, text: str, by: Member, seen: int | None = None) -> Summary:
        """A writer's summary in place of the current one (`seen`: the one the member saw, which must
        still be current): every version kept."""
        with self.unit() as u:
            current = summaries.current(u.summaries(story_id), u.passages(story_id))
            if current is None:
                raise StoryError(
                    "this story has no summary yet to edit: one is written once the story outgrows the "
                    "model's window (`/story show summary:True` says when)"
                )
            if seen is not None and current.id != seen:
                raise StoryError(
                    "the summary changed while you were editing it: nothing was changed; look at it again "
                    "(`/story show summary:True`) and edit that"
                )
            return u.summary(u.add_edited_summary(current, text, by.id))

    def restore_summary(self, story_id: int, by: Member) -> Summary:
        """Set the current summary aside (kept) so the version before it stands again; returns that one."""
        with self.unit() as u:
            passages, rows = u.passages(story_id), u.summaries(story_id)
            current = summaries.current(rows, passages)
            before = summaries.current([r for r in rows if current and r.id != current.id], passages)
            if current is None or before is None:
                raise StoryError("there is no earlier version of the summary to restore")
            u.set_summary_aside(current.id, f"set aside by {by.name}'s restore")
            return before

    def pause_summaries(self, story_id: int, paused: bool) -> None:
        with self.unit() as u:
            u.set_summary_paused(story_id, paused)

    def summary_paused(self, story_id: int) -> bool:
        return self.reads.summary_paused(story_id)

    # --- settings and the cast -----------------------------------------------------------------
    def settings(self, story_id: int) -> StorySettings:
        return self.reads.settings(story_id)

    def set_settings(self, story_id: int, settings: StorySettings, by: Member) -> StorySettings:
        with self.unit() as u:
            return StorySettings.from_values(settings.values(), u.add_settings(story_id, settings, by.id))

    def personas(self, story_id: int) -> list[Persona]:
        return self.reads.personas(story_id)

    def set_persona(self, story_id: int, member: Member, name: str, description: str, limit: int) -> Persona:
        """The member's persona (replacing theirs); a name another member's persona has is refused."""
        with self.unit() as u:
            cast = [p for p in u.personas(story_id) if p.member_id != member.id]
            taken = next((p for p in cast if p.name.casefold() == name.casefold()), None)
            if taken is not None:
                raise StoryError(
                    f"{taken.member_name} plays {taken.name} already: pick another name (or ask them to "
                    "`/persona clear`)"
                )
            if len(cast) >= limit:
                raise StoryError(f"the cast is full ({limit} personas): someone must `/persona clear` first")
            return u.add_persona(story_id, member, name, description)

    def clear_persona(self, story_id: int, member: Member) -> bool:
        with self.unit() as u:
            return u.remove_persona(story_id, member.id) > 0

    def fail_summary(self, summary_id: int, error: str) -> None:
        with self.unit() as u:
            u.fail_summary(summary_id, error)

    # --- passages ------------------------------------------------------------------------------
    def passages(self, story_id: int) -> list[Passage]:
        return self.reads.passages(story_id)

    def passage(self, passage_id: int) -> tuple[Passage, bool]:
        """A passage and whether it is still in the story (not undone or reset)."""
        return self.reads.passage(passage_id)

    def add_passage(self, story_id: int, author: Member, text: str) -> Passage:
        with self.unit() as u:
            return u.add_passage(story_id, AuthorKind.MEMBER, author, text)

    def remove_passages(self, passage_ids: list[int]) -> None:
        with self.unit() as u:
            u.remove_passages(passage_ids)

    def set_passage_message(self, passage_id: int, ref: str) -> None:
        """A member passage's messages (Discord), edited with the passage."""
        with self.unit() as u:
            u.set_passage_message(passage_id, ref)

    def passage_message(self, passage_id: int) -> str | None:
        row = self.conn.execute("SELECT message_ref FROM passages WHERE id = ?", (passage_id,)).fetchone()
        return row[0] if row else None

    # --- history: edits, takes, erasures, forks (rules: bot/core/history.py) -----------------------
    def passage_at(self, story_id: int, position: int) -> Passage:
        """The passage the story shows at `position`, or a StoryError saying why there is none."""
        return _shown(self.reads, story_id, position)

    def takes(self, passage_id: int) -> list[int]:
        return self.reads.takes(passage_id)

    def take_text(self, passage_id: int, generation_id: int) -> str:
        return self.reads.take_text(passage_id, generation_id)

    def attempts(self, passage_id: int) -> int:
        """Generations asked for a slot so far, whatever became of them."""
        return self.reads.attempts(passage_id)

    def versions(self, passage_id: int) -> list[tuple[int, int | None, str, str, float]]:
        return self.reads.versions(passage_id)

    def edit_passage(
        self, story_id: int, position: int, by: Member, text: str, revision: int | None, may_manage: bool
    ) -> Passage:
        """Replace the text shown at `position` (every version kept); `revision`: the one the member saw."""
        with self.unit() as u:
            p = _shown(u, story_id, position)
            history.check_editable(p, by.id, may_manage)
            history.check_revision(p, revision)
            u.add_edit(p, text, by)
            u.owe_slot_messages(p.id)
            return u.passage(p.id)[0]

    def choose_take(
        self, story_id: int, position: int, by: Member, k: int, revision: int | None = None
    ) -> Passage:
        """Show take `k` of the model passage at `position`, for everyone; the choice is kept."""
        with self.unit() as u:
            p = _shown(u, story_id, position)
            history.check_revision(p, revision)
            u.choose_take(p.id, history.take_wanted(p, u.takes(p.id), k), by)
            u.owe_slot_messages(p.id)
            return u.passage(p.id)[0]

    def erase(self, story_id: int, from_position: int, by: Member) -> list[Passage]:
        """Take passage `from_position` and every later one out, as one erased run; returns them."""
        with self.unit() as u:
            _shown(u, story_id, from_position)
            erased = [p for p in u.passages(story_id) if p.position >= from_position]
            u.erase(story_id, from_position, by)
            return erased

    def redo(self, story_id: int, by: Member) -> list[Passage]:
        """Bring back the newest erased run, while nothing was added after it; returns its passages."""
        with self.unit() as u:
            e = u.newest_erasure(story_id)
            if e is None or e["redone_at"] is not None:
                raise StoryError("there is no erased run to bring back: `/story redo` follows `/story erase`")
            if u.added_since(story_id, e["id"]):
                raise StoryError(
                    "passages were added after the erase, so the erased run cannot come back after them: "
                    "take the new passages out first (undo or erase), then redo"
                )
            if u.story_running(story_id):
                raise StoryError("a passage is being written now: redo once it is in (or erase it)")
            u.redo(e["id"], by)
            return [p for p in u.passages(story_id) if p.position >= e["from_position"]]

    def fork(
        self, story_id: int, upto: int, channel: Channel, by: Member, title: str | None, archived: bool
    ) -> int:
        """A new story in `channel` holding copies of passages 1..`upto` with the memory, note, lore and
        current summary the story has (the channel's story archived, unless `archived`: kept aside)."""
        with self.unit() as u:
            _shown(u, story_id, upto)
            originals = [p for p in u.passages(story_id) if p.position <= upto]
            if not archived:
                u.archive_story(channel.id)
            new = u.new_story(channel, by, title, (story_id, upto), archived)
            copies = u.copy_passages(new, originals)
            u.copy_story_parts(story_id, new)
            u.copy_settings_and_cast(story_id, new)
            fits = [s for s in u.summaries(story_id) if s.upto_position <= upto]
            summary = summaries.current(fits, originals)
            if summary is not None:
                u.copy_summary(summary, new, copies)
            return new

    def library(self, home_id: str) -> list[StoryInfo]:
        return self.reads.library(home_id)

    def open_story(self, story_id: int, home_id: str) -> Story:
        """Make an archived story of this channel's library its channel's story again (archiving the one
        there)."""
        with self.unit() as u:
            row = u.story_row(story_id)
            if row is None or home_id not in (row["channel_id"], row["home_id"]):
                raise StoryError(f"there is no story {story_id} here: `/story list` shows this channel's")
            if row["archived_at"] is None:
                raise StoryError(f"story {story_id} is open already")
            u.archive_story(row["channel_id"])
            u.reopen_story(story_id)
            return u.story(story_id)

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
        options: Options,
        context: GenerationRecord,  # kept as JSON
        direction: str | None,
        length: str | None,
        slot: int | None,
        owner: str | None = None,
    ) -> int:
        """A running generation; `owner` holds the story's lease while it runs (else recover fails it)."""
        with self.unit() as u:
            return u.add_generation(
                story_id,
                requested_by,
                model,
                user_text=user_text,
                prompt=prompt,
                raw=raw,
                options=options,
                context=context,
                direction=direction,
                length=length,
                slot=slot,
                owner=owner,
            )

    def finish_generation(
        self,
        generation_id: int,
        *,
        requested_by: Member,
        output: str,
        reasoning: str,
        answer: str,
        issues: list[str],
        stats: Stats,
    ) -> Passage | None:
        """Record a finished generation and put its answer into the story, in one transaction.

        The answer lands only if the story still holds every passage the context was built from (and,
        for a regeneration, the passage being replaced): :func:`bot.core.landing.passage_lands`;
        otherwise the generation is kept as discarded and None is returned.
        """
        with self.unit() as u:
            g = u.generation(generation_id)
            assert g is not None, f"no generation {generation_id}"
            slot = g.passage_id
            needed = [*g.context.get("passage_ids", []), *([slot] if slot else [])]
            landed = landing.passage_lands(needed, u.present_ids(needed), u.story_active(g.story_id))
            status, error = (Status.DONE, None) if landed else (Status.DISCARDED, messages.STORY_CHANGED)
            u.end_generation(
                generation_id,
                status,
                error,
                output=output,
                reasoning=reasoning,
                answer=answer,
                issues=issues,
                stats=stats,
            )
            if not landed:
                return None
            if slot:  # a regeneration: the slot now shows this alternative
                passage = u.show_alternative(slot, answer, generation_id)
            else:
                passage = u.add_passage(g.story_id, AuthorKind.MODEL, requested_by, answer, generation_id)
                u.set_slot(generation_id, passage.id)
            return u.passage(passage.id)[0]

    def set_generation_host(self, generation_id: int, host: str) -> None:
        with self.unit() as u:
            u.set_host(generation_id, host)

    def fail_generation(
        self, generation_id: int, error: str, output: str = "", issues: list[str] | None = None
    ) -> None:
        """Mark a running generation failed; `issues` are the parse issues of an output that was read
        (an answer that was only markup, say)."""
        with self.unit() as u:
            u.fail_generation(generation_id, error, output, issues)

    def set_message_ref(self, generation_id: int, ref: str) -> None:
        """The driver's messages for a generation; they are to show its final state (a pending delivery)."""
        with self.unit() as u:
            u.set_message_ref(generation_id, ref)

    def set_delivery(self, generation_id: int, state: DeliveryState, owner: str | None = None) -> None:
        """Record how a delivery ended; `owner` gives up its delivery lease in the same transaction."""
        with self.unit() as u:
            u.set_delivery(generation_id, state)
            if owner is not None:
                u.drop_lease(f"delivery:{generation_id}", owner)

    def undelivered(self) -> list[int]:
        """Finished generations whose messages do not show their final state, and whom no live owner is
        delivering: oldest first."""
        now = self.clock()
        return [gid for gid, holder, expires in self.reads.owed_delivery() if not live(holder, expires, now)]

    def delivery(self, generation_id: int) -> Delivery | None:
        g = self.reads.generation(generation_id)
        if g is None:
            return None
        if g.status != Status.DONE or g.passage_id is None:
            return Delivery(g.id, g.channel_id, g.message_ref, g.status, messages.failure_shown(g.error))
        p, _ = self.reads.passage(g.passage_id)
        takes = tuple(self.reads.takes(g.passage_id))
        if takes[-1] != g.id:  # a newer take's messages show the passage
            return Delivery(
                g.id,
                g.channel_id,
                g.message_ref,
                g.status,
                g.answer or "",
                p.position,
                p.author_name,
                current=False,
            )
        return Delivery(
            g.id,
            g.channel_id,
            g.message_ref,
            g.status,
            p.text,
            p.position,
            p.author_name,
            p.alternatives,
            True,
            p.generation_id,
            p.take,
            p.edited,
            takes,
        )

    def generation(self, generation_id: int) -> GenerationRow | None:
        return self.reads.generation(generation_id)

    def recover(self) -> list[Interrupted]:
        """Mark failed every generation (and summary) left running by an owner that is gone: it no longer
        holds the story's lease (expired, or its process is dead). Returns the generations for the driver;
        those another live process is writing are left alone."""
        now = self.clock()
        with self.unit() as u:
            lost = [r for r in u.running_generations() if orphaned(r.owner, r.holder, r.expires_at, now)]
            for r in lost:
                u.abandon_generation(r.id, messages.STOPPED)
            for m in u.running_summaries():
                if orphaned(m.owner, m.holder, m.expires_at, now):
                    u.fail_summary(m.id, messages.SUMMARY_STOPPED)
        return [Interrupted(r.id, r.channel_id, r.message_ref) for r in lost]

    # --- leases: who is doing what, across processes ------------------------------------------------
    def claim(self, key: str, owner: str, ttl: float) -> str | None:
        """Take the lease `key` for `owner` for `ttl` seconds, unless another live owner holds it: then
        return that owner (and take nothing). Claiming a lease one already holds renews it."""
        now = self.clock()
        with self.unit() as u:
            held = u.lease(key)
            if held and held[0] != owner and live(*held, now):
                return held[0]
            u.take_lease(key, owner, now + ttl)
        return None

    def claim_gateway(self, shards: Sequence[int], shard_count: int, owner: str, ttl: float) -> str | None:
        """Take the lease on shards `shards` of `shard_count` of the bot's Discord events ([0] of 1: all of
        them), unless a live owner holds shards that overlap them (any other count, or a shared shard):
        then return that owner. Two processes on overlapping shards would both act on every interaction."""
        now = self.clock()
        with self.unit() as u:
            for key, holder, expires in u.gateway_leases():
                if overlaps(key, shards, shard_count) and holder != owner and live(holder, expires, now):
                    return holder
            u.take_lease(gateway_key(shards, shard_count), owner, now + ttl)
        return None

    def renew(self, keys: list[str], owner: str, ttl: float) -> list[str]:
        """Extend `owner`'s leases; returns the keys it no longer holds (taken over after expiring)."""
        with self.unit() as u:
            u.extend_leases(keys, owner, self.clock() + ttl)
            held = u.held(owner)
        return [k for k in keys if k not in held]

    def release(self, key: str, owner: str) -> None:
        with self.unit() as u:
            u.drop_lease(key, owner)

    # --- ratings and privacy -------------------------------------------------------------------
    def rate(self, generation_id: int, member_id: str, value: int) -> None:
        with self.unit() as u:
            u.rate(generation_id, member_id, value)

    def tally(self, generation_id: int) -> tuple[int, int]:
        """(thumbs up, thumbs down) for a generation."""
        return self.reads.tally(generation_id)

    def set_opt_out(self, member_id: str, opted_out: bool) -> None:
        with self.unit() as u:
            u.set_opt_out(member_id, opted_out)

    def opted_out(self, member_id: str) -> bool:
        return self.reads.opted_out(member_id)


def _apply_lore(
    u: Unit, story_id: int, candidates: Sequence[lorefiles.Candidate], by: Member
) -> list[lorefiles.Outcome]:
    outcomes = lorefiles.plan(u.lore_entries(story_id), candidates, by.id)
    for o in outcomes:
        if o.entry is not None and o.action == "kept":
            u.add_lore(story_id, o.entry)
        elif o.entry is not None:
            u.save_lore(o.entry)
    return outcomes


def _shown(reads: Reads, story_id: int, position: int) -> Passage:
    found = reads.passage_at(story_id, position)
    if found is None or not found[1]:
        raise history.missing_passage(position, None if found is None else False)
    return found[0]


def host_load(conn: Connection, since: float) -> dict[str, tuple[int, int]]:
    """Per Ollama server, from every process on the database: (generations running there now, those
    finished there since `since`). `conn` may be a read-only connection (`story-bot status`)."""
    rows = conn.execute(
        f"SELECT host, count(*) FILTER (WHERE status = '{Status.RUNNING}'), "
        "count(*) FILTER (WHERE finished_at >= ?) FROM generations "
        f"WHERE host IS NOT NULL AND (status = '{Status.RUNNING}' OR finished_at >= ?) GROUP BY host",
        (since, since),
    ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}
