"""The story operations every driver (Discord, the console, the benchmark) calls.

Quick operations (write, undo, reset, rate...) return a value or raise :class:`StoryError`, whose
message is meant for the channel. A generation (continue, regenerate) is an async iterator of events:

    async for event in service.continue_story(channel, member, direction, "short"):
        match event:
            case Queued(position): ...            # waiting behind `position` others
            case Started(generation_id): ...      # a record exists; ids go into button custom_ids
            case Delta(answer): ...               # the answer so far (the newest text wins)
            case Done(passage): ...               # in the story now
            case Failed(message): ...             # the story is unchanged

One generation runs at a time per story, across processes too: the story's lease in the store
(`story:<channel id>`, owner "host:pid:token", renewed every third of `Limits.lease_s` while it runs) is
taken before the model is asked, and a process that finds another live owner holding it waits (Queued).
A global cap (`Limits.parallel`, the Ollama server's parallelism) bounds generations in flight across all
stories of one process. Drivers never touch SQLite or Ollama.

Long stories: each story has a memory (pinned at the start of the context), an author's note (the
prompt's guidance; a one-off direction replaces it for its request), a lorebook (entries brought in by
their keywords) and rolling summaries of the passages that no longer fit, written in the background by
the model. :func:`bot.core.context.build_context` puts them together; :meth:`StoryService.context_preview`
shows the result. A summary never delays a passage: it takes a server slot only when no generation waits
for one, and gives it up (to be retried later) when one does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field

from contract import chat_formats, serving
from contract import prompt as writer_prompt
from contract.store.status import DeliveryState, Status

from ..llm import STORY, EmptyAnswer, LLMError, OllamaBackend
from ..store import Delivery, Interrupted, Store
from ..store.repository import CANCELLED, gateway_key, new_owner, retire
from . import lore as lorebook
from . import summary as summaries
from . import text as texts
from .context import (
    TEMPLATE_MARGIN,
    Budget,
    CharCounter,
    Context,
    ContextTooSmall,
    Counter,
    Shares,
    build_story_context,
)
from .lore import BadLore, LoreEntry
from .story import Channel, Member, Note, Passage, Story, Summary, to_markdown

MAX_TITLE_CHARS = 100
MAX_NOTE_CHARS = writer_prompt.MAX_GUIDANCE_CHARS  # the author's note is the prompt's guidance
log = logging.getLogger(__name__)


class StoryError(Exception):
    """An operation refused; the message says why and what to do instead."""


# --- generation events -------------------------------------------------------------------------
@dataclass(frozen=True)
class Queued:
    position: int  # how many generations are ahead
    waiting_for: str  # "story": another passage of this story; "server": the model's free slots


@dataclass(frozen=True)
class Started:
    generation_id: int
    model: str


@dataclass(frozen=True)
class Delta:
    answer: str  # the whole answer so far
    reasoning: str


@dataclass(frozen=True)
class Done:
    passage: Passage
    generation_id: int
    reasoning: str
    issues: tuple[str, ...] = ()


@dataclass(frozen=True)
class Failed:
    message: str
    generation_id: int | None = None


Event = Queued | Started | Delta | Done | Failed


@dataclass(frozen=True)
class Tally:
    up: int
    down: int
    value: int  # the member's own rating, as now recorded


@dataclass(frozen=True)
class Limits:
    parallel: int = 1  # generations in flight across all stories: the server's OLLAMA_NUM_PARALLEL
    num_ctx: int | None = None  # the model's window; default: the model's own num_ctx, else default_num_ctx
    default_num_ctx: int = 8192
    max_passage_chars: int = 6000
    options: dict = field(default_factory=dict)  # more Ollama options (temperature, top_p, ...)
    delta_every: float = 0.05  # seconds between Delta events of one stream (drivers edit far less often)
    max_memory_chars: int = 2000
    shares: Shares = field(default_factory=Shares)  # what memory, summary and lore may take of the window
    summary_model: str | None = None  # default: the story's own model
    summary_words: int = summaries.SUMMARY_WORDS
    summary_timeout: float = 180.0  # seconds for a whole summary
    summary_retry_s: float = 60.0  # after a failed summary, wait this long before trying again
    lease_s: float = 30.0  # a lease (story, summary, delivery) lapses this long after its last renewal


@dataclass(frozen=True)
class SummaryState:
    """What `/story show --summary` shows."""

    current: Summary | None  # the newest summary (one written ahead comes into the context with a step)
    covers: int  # how many of the story's passages it tells
    writing: bool  # a new one is being written now
    last_error: str | None  # why the newest attempt failed, when it did


@dataclass(frozen=True)
class ContextPreview:
    """What the model will receive for the next passage (`/story context`)."""

    model: str
    user_text: str  # the writer prompt exactly as the model will read it
    record: dict  # what the generation record will keep: parts, ids, sizes
    window: int
    num_predict: int


@dataclass
class _Prepared:
    model: str
    window: int
    num_predict: int
    ctx: Context
    request: serving.GenerateRequest
    record: dict
    stop: list[str]


class _Slots:
    """The server's slots (`Limits.parallel`). Generations come first: a background job (a summary) only
    takes a slot no generation is waiting for."""

    def __init__(self, n: int):
        self.free = n
        self._waiters: deque[tuple[bool, asyncio.Future]] = deque()

    def locked(self) -> bool:
        return self.free <= 0

    async def acquire(self, background: bool = False) -> None:
        ahead = any(not f.done() and (background or not bg) for bg, f in self._waiters)
        if self.free > 0 and not ahead:
            self.free -= 1
            return
        waiter = (background, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            await waiter[1]
        except asyncio.CancelledError:
            if waiter[1].done() and not waiter[1].cancelled():  # handed a slot as it was cancelled
                self.release()
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def release(self) -> None:
        for background in (False, True):
            for waiter in self._waiters:
                if waiter[0] == background and not waiter[1].done():
                    self._waiters.remove(waiter)
                    waiter[1].set_result(None)  # the slot passes straight to the waiter
                    return
        self.free += 1


@dataclass
class _Gate:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: int = 0


class StoryService:
    def __init__(
        self,
        store: Store,
        backend: OllamaBackend,
        model_for: Callable[[Channel], str],
        counter: Counter | None = None,
        limits: Limits | None = None,
    ):
        self.store = store
        self.backend = backend
        self.model_for = model_for
        self.counter = counter or CharCounter()
        self.limits = limits or Limits()
        self._gates: dict[str, _Gate] = {}
        self._slots = _Slots(self.limits.parallel)
        self._waiting_for_slot = 0
        self._summaries: dict[int, asyncio.Task] = {}  # story id -> its summary being written
        self._holding: set[asyncio.Task] = set()  # summaries holding a server slot
        self._retry_at: dict[int, float] = {}  # story id -> no new summary before this (after a failure)
        self.owner = new_owner()  # this service's name on its leases
        self._leases: set[str] = set()
        self._heartbeat: asyncio.Task | None = None

    # --- quick operations ------------------------------------------------------------------------
    def recover(self) -> list[Interrupted]:
        """Generations whose owner is gone (a dead process, or one whose lease lapsed), now failed; a
        driver calls it on start and now and then after. Generations a live process runs are left alone."""
        return self.store.recover()

    def show(self, channel: Channel) -> Story:
        story_id = self.store.active_story_id(channel.id)
        return self.store.story(story_id) if story_id else Story(0, channel.id, None)

    def export(self, channel: Channel) -> str:
        return to_markdown(self.show(channel))

    def start(self, channel: Channel, member: Member, title: str | None = None) -> Story:
        """A new story in the channel; the old one is archived with its ratings, not deleted."""
        title = texts.one_line(title, MAX_TITLE_CHARS) if title else None
        return self.store.story(self.store.start_story(channel, member, title or None))

    def write(self, channel: Channel, member: Member, text: str) -> Passage:
        text = texts.clean_input(text)
        if not text:
            raise StoryError("the passage is empty: write at least a sentence")
        if len(text) > self.limits.max_passage_chars:
            raise StoryError(
                f"the passage has {len(text):,} characters, over the limit of "
                f"{self.limits.max_passage_chars:,}: split it into two passages"
            )
        return self.store.add_passage(self.store.ensure_story(channel, member), member, text)

    def undo(self, channel: Channel, member: Member, may_manage: bool = False) -> Passage:
        """Take the newest passage out of the story (it stays in the database, marked removed)."""
        last = self.show(channel).last
        if last is None:
            raise StoryError("the story is empty: there is nothing to undo")
        if last.author_id != member.id and not may_manage:
            raise StoryError(
                f"the newest passage is {last.author_name}'s: undoing another member's passage needs "
                "the Manage Messages permission"
            )
        self.store.remove_passages([last.id])
        return last

    def reset(self, channel: Channel, member: Member, may_manage: bool = False) -> int:
        """Empty the story; returns how many passages were taken out."""
        passages = self.show(channel).passages
        others = {p.author_name for p in passages if p.author_id != member.id}
        if others and not may_manage:
            raise StoryError(
                f"the story holds passages by {', '.join(sorted(others))}: resetting it needs the Manage "
                "Messages permission (or undo your own passages)"
            )
        self.store.remove_passages([p.id for p in passages])
        return len(passages)

    def rate(self, generation_id: int, member: Member, value: int, channel_id: str | None = None) -> Tally:
        """One rating per member per passage; rating again changes it."""
        if value not in (1, -1):
            raise StoryError("a rating is +1 (👍) or -1 (👎)")
        self._check_rateable(generation_id, channel_id)
        self.store.rate(generation_id, member.id, value)
        up, down = self.store.tally(generation_id)
        return Tally(up, down, value)

    def tally(self, generation_id: int) -> tuple[int, int]:
        return self.store.tally(generation_id)

    def reasoning(self, generation_id: int, channel_id: str | None = None) -> str:
        gen = self._generation(generation_id, channel_id)
        if gen.status != Status.DONE:
            raise StoryError("that passage did not finish, so there is no reasoning to show")
        return gen.reasoning or "(the model wrote no reasoning for this passage)"

    def attach_message(self, generation_id: int, ref: str) -> None:
        """Remember the driver's messages for a generation: until :meth:`delivered`, they are owed its
        final state (a restart, or another process once this one's lease lapses, shows it)."""
        self.store.set_message_ref(generation_id, ref)

    # --- delivery: the driver's messages catch up with the store ---------------------------------
    def claim_delivery(self, generation_id: int) -> bool:
        """Take the delivery of a generation's final state (False: a live process is delivering it)."""
        return self._hold(f"delivery:{generation_id}")

    def delivered(self, generation_id: int, state: DeliveryState = DeliveryState.DONE) -> None:
        """The messages show the final state ('done'), or never can ('lost'); the delivery lease goes."""
        self._leases.discard(f"delivery:{generation_id}")
        self.store.set_delivery(generation_id, state, self.owner)

    def release_delivery(self, generation_id: int) -> None:
        """Stop delivering without finishing (shutting down): whoever starts next takes it over."""
        self._drop(f"delivery:{generation_id}")

    def undelivered(self) -> list[int]:
        """Finished generations owed their final state that no live process is delivering."""
        return self.store.undelivered()

    def delivery(self, generation_id: int) -> Delivery | None:
        return self.store.delivery(generation_id)

    # --- leases --------------------------------------------------------------------------------
    def hold_gateway(self, shards: Sequence[int] = (0,), shard_count: int = 1) -> str | None:
        """Take (and keep renewing) the lease on shards of the Discord events; None, or the live owner
        ("host:pid:token") of an overlapping one, in which case nothing is taken."""
        holder = self.store.claim_gateway(shards, shard_count, self.owner, self.limits.lease_s)
        if holder is None:
            self._leases.add(gateway_key(shards, shard_count))
            self._beat()
        return holder

    def _hold(self, key: str) -> bool:
        if self.store.claim(key, self.owner, self.limits.lease_s) is not None:
            return False
        self._leases.add(key)
        self._beat()
        return True

    def _beat(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(self._renew(), name="lease-heartbeat")

    def _drop(self, key: str) -> None:
        if key in self._leases:
            self._leases.discard(key)
            self.store.release(key, self.owner)

    async def _renew(self) -> None:
        """Renew this service's leases every third of their life while it holds any."""
        while self._leases:
            await asyncio.sleep(self.limits.lease_s / 3)
            try:
                lost = self.store.renew(sorted(self._leases), self.owner, self.limits.lease_s)
            except Exception as exc:  # a locked or unreachable database: try again next beat
                log.warning("could not renew leases: %s", exc)
                continue
            for key in lost:  # stalled past the expiry and taken over: stop claiming it
                log.warning("lease %s was taken over by another process", key)
                self._leases.discard(key)

    async def _story_lease(self, channel: Channel) -> AsyncIterator[Event]:
        """Take the story's lease, waiting (Queued) while another live process holds it."""
        key, told = f"story:{channel.id}", False
        while not self._hold(key):
            if not told:
                told = True
                yield Queued(1, "story")
            await asyncio.sleep(min(1.0, max(0.05, self.limits.lease_s / 30)))

    def set_opt_out(self, member: Member, opted_out: bool) -> None:
        """Keep (or stop keeping) a member's passages and ratings out of the feedback export."""
        self.store.set_opt_out(member.id, opted_out)

    def opted_out(self, member: Member) -> bool:
        return self.store.opted_out(member.id)

    # --- memory, author's note, lorebook, summary --------------------------------------------------
    def memory(self, channel: Channel) -> Note | None:
        """The story's memory (None if never set; text "" once cleared)."""
        return self._note(channel, "memory")

    def set_memory(self, channel: Channel, member: Member, text: str) -> Note:
        """Set the memory pinned at the start of every context; "" clears it. Earlier ones are kept."""
        text = texts.clean_input(text or "")
        text = "\n".join(line for line in text.split("\n") if line.strip())  # one block in the context
        limit = self.limits.max_memory_chars
        if len(text) > limit:
            raise StoryError(
                f"the memory has {len(text):,} characters, over the limit of {limit:,}: "
                "keep the premise, tone, point of view and rules short, and move characters and places "
                "into the lorebook (`/lore add`), which brings them in only when they are mentioned"
            )
        return self.store.set_note(self.store.ensure_story(channel, member), "memory", text, member)

    def note(self, channel: Channel) -> Note | None:
        """The story's author's note (None if never set; text "" once cleared)."""
        return self._note(channel, "note")

    def set_note(self, channel: Channel, member: Member, text: str) -> Note:
        """Set the standing direction given with every passage (a one-off direction replaces it for its
        request); "" clears it."""
        text = texts.one_line(text or "", MAX_NOTE_CHARS + 1)
        if len(text) > MAX_NOTE_CHARS:
            raise StoryError(
                f"the author's note is over the limit of {MAX_NOTE_CHARS:,} characters: say in a sentence "
                "or two where the story should go and how it should read"
            )
        return self.store.set_note(self.store.ensure_story(channel, member), "note", text, member)

    def _note(self, channel: Channel, kind: str) -> Note | None:
        story_id = self.store.active_story_id(channel.id)
        return self.store.note(story_id, kind) if story_id else None

    def lore(self, channel: Channel) -> list[LoreEntry]:
        """The story's lorebook, by name."""
        story_id = self.store.active_story_id(channel.id)
        return self.store.lore_entries(story_id) if story_id else []

    def lore_entry(self, channel: Channel, name: str) -> LoreEntry:
        """The entry named `name` (any case), or a StoryError that says how to see the names."""
        wanted = lorebook.name_key(name)
        found = next((e for e in self.lore(channel) if lorebook.name_key(e.name) == wanted), None)
        if found is None:
            raise StoryError(f"there is no lore entry named {name!r}: `/lore list` shows them")
        return found

    def lore_add(
        self, channel: Channel, member: Member, name: str, keywords: str | Sequence[str], text: str,
        always_on: bool = False,
    ) -> LoreEntry:  # fmt: skip
        """A new entry; keywords as "Mara, the smuggler" or a list. Names and keywords are unique."""
        try:
            name, text = lorebook.clean_name(name), lorebook.clean_text(_block(text))
            keys = lorebook.parse_keywords(keywords)
            lorebook.check_keywords(keys, always_on)
            story_id = self.store.ensure_story(channel, member)
            return self.store.add_lore(story_id, member, name, keys, text, always_on)
        except BadLore as exc:
            raise StoryError(str(exc)) from None

    def lore_edit(
        self, channel: Channel, member: Member, name: str, *, text: str | None = None,
        keywords: str | Sequence[str] | None = None, always_on: bool | None = None,
        new_name: str | None = None, version: int | None = None,
    ) -> LoreEntry:  # fmt: skip
        """Change the given fields of the entry named `name` (None keeps a field). Pass `version`, the
        entry's version the member saw (a Discord modal carries it), and an edit made meanwhile by someone
        else is not overwritten: the member is told to look again."""
        try:
            story_id = self._story_id(channel)
            return self.store.edit_lore(
                story_id, member, name,
                new_name=lorebook.clean_name(new_name) if new_name else None,
                keywords=None if keywords is None else lorebook.parse_keywords(keywords),
                text=None if text is None else lorebook.clean_text(_block(text)),
                always_on=always_on, version=version,
            )  # fmt: skip
        except BadLore as exc:
            raise StoryError(str(exc)) from None

    def lore_remove(
        self, channel: Channel, member: Member, name: str, may_manage: bool = False,
        version: int | None = None,
    ) -> LoreEntry:  # fmt: skip
        """Take an entry out of the lorebook (kept in the database). Another member's entry needs the
        Manage Messages permission."""
        story_id = self._story_id(channel)
        try:
            entry = self.lore_entry(channel, name)
            if entry.created_by != member.id and not may_manage:
                raise StoryError(
                    f"the entry {entry.name!r} was added by another member: removing it needs the Manage "
                    "Messages permission (or edit it with `/lore edit`)"
                )
            return self.store.remove_lore(story_id, name, version)
        except BadLore as exc:
            raise StoryError(str(exc)) from None

    def summary_state(self, channel: Channel) -> SummaryState:
        """The rolling summary the next context uses, and how the newest attempt went."""
        story_id = self.store.active_story_id(channel.id)
        if story_id is None:
            return SummaryState(None, 0, False, None)
        rows = self.store.summaries(story_id)
        passages = self.store.passages(story_id)
        current = summaries.current(rows, passages)
        covers = sum(p.position <= current.upto_position for p in passages) if current else 0
        failed = rows[0].error if rows and rows[0].status == Status.FAILED else None
        return SummaryState(current, covers, story_id in self._summaries, failed)

    async def context_preview(
        self, channel: Channel, member: Member, direction: str | None = None, length: str | None = None
    ) -> ContextPreview:
        """Exactly what the model would receive if a passage were asked now (with this direction and
        length). Like the memory, note, lore and summary it is built from, any member of the story may
        see it (they may change all of those)."""
        story_id = self._story_id(channel)
        passages = list(self.store.passages(story_id))
        if not passages:
            raise StoryError("the story is empty: write its opening first")
        try:
            length = writer_prompt.Length(str(length).lower()).value if length else None
        except ValueError:
            raise StoryError(f"unknown length {length!r}: use short, medium or long") from None
        try:
            prepared = await self._prepare(channel, story_id, passages, direction, length)
        except (LLMError, ContextTooSmall, writer_prompt.PromptError, serving.ServingError) as exc:
            raise StoryError(str(exc)) from None
        p = prepared
        return ContextPreview(p.model, p.request.user_text, p.record, p.window, p.num_predict)

    def _story_id(self, channel: Channel) -> int:
        story_id = self.store.active_story_id(channel.id)
        if story_id is None:
            raise StoryError("there is no story in this channel yet: write its opening line first")
        return story_id

    async def idle(self) -> None:
        """Wait until no summary is being written (tests, and a clean shutdown)."""
        while self._summaries:
            await asyncio.gather(*list(self._summaries.values()), return_exceptions=True)

    async def aclose(self) -> None:
        """Stop the background summaries (each is retried on the next start, when the story overflows),
        give up this service's leases and retire its owner name."""
        for task in list(self._summaries.values()):
            task.cancel()
        await self.idle()
        for key in list(self._leases):
            self._drop(key)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        retire(self.owner)

    def _generation(self, generation_id: int, channel_id: str | None):
        gen = self.store.generation(generation_id)
        if gen is None or (channel_id is not None and gen.channel_id != channel_id):
            raise StoryError("that passage is not part of this channel's story")
        return gen

    def _check_rateable(self, generation_id: int, channel_id: str | None) -> None:
        gen = self._generation(generation_id, channel_id)
        if gen.status != Status.DONE or gen.passage_id is None:
            raise StoryError("that passage did not make it into the story, so there is nothing to rate")
        passage, present = self.store.passage(gen.passage_id)
        if not present:
            raise StoryError("that passage was undone (or the story reset), so it can no longer be rated")
        if passage.generation_id != generation_id:
            raise StoryError("that version was replaced by a regeneration: rate the version shown now")

    # --- generations ---------------------------------------------------------------------------
    def continue_story(
        self, channel: Channel, member: Member, direction: str | None = None, length: str | None = None
    ) -> AsyncIterator[Event]:
        """The model writes the next passage; optional direction (a sentence) and length."""
        return self._run(channel, member, direction, length, regenerate=None)

    def regenerate(
        self, channel: Channel, member: Member, generation_id: int | None = None
    ) -> AsyncIterator[Event]:
        """Another take on the newest model passage (the earlier ones are kept as alternatives).

        `generation_id` (from a button) names the version the member saw; it must still be the newest.
        """
        return self._run(channel, member, None, None, regenerate=generation_id or 0)

    async def _run(self, channel, member, direction, length, regenerate: int | None) -> AsyncIterator[Event]:
        direction = writer_prompt.defuse_control(direction) if direction else direction
        try:
            length = writer_prompt.Length(str(length).lower()).value if length else None
        except ValueError:
            yield Failed(f"unknown length {length!r}: use short, medium or long")
            return
        gate = self._gates.setdefault(channel.id, _Gate())
        if gate.lock.locked():
            yield Queued(gate.waiting + 1, "story")
        gate.waiting += 1
        try:
            await gate.lock.acquire()
        finally:
            gate.waiting -= 1
        try:
            async with aclosing(self._story_lease(channel)) as waiting:  # another process's passage first
                async for event in waiting:
                    yield event
            if self._slots.locked() and not self._preempt():
                yield Queued(self._waiting_for_slot + 1, "server")
            self._waiting_for_slot += 1
            try:
                await self._slots.acquire()
            finally:
                self._waiting_for_slot -= 1
            try:
                # aclosing: a driver that stops listening closes the inner generators now, not at GC.
                async with aclosing(self._generate(channel, member, direction, length, regenerate)) as run:
                    async for event in run:
                        yield event
            finally:
                self._slots.release()
        finally:
            self._drop(f"story:{channel.id}")
            gate.lock.release()
            if gate.waiting == 0 and not gate.lock.locked():
                self._gates.pop(channel.id, None)

    async def _generate(self, channel, member, direction, length, regenerate) -> AsyncIterator[Event]:
        plan = self._plan(channel, regenerate, direction, length)
        if isinstance(plan, Failed):
            yield plan
            return
        story_id, passages, slot, direction, length = plan
        try:
            prepared = await self._prepare(channel, story_id, passages, direction, length)
        except (LLMError, ContextTooSmall, writer_prompt.PromptError, serving.ServingError) as exc:
            yield Failed(str(exc))
            return
        model, request = prepared.model, prepared.request
        if prepared.ctx.summarise_upto is not None:
            self._schedule_summary(channel, story_id, prepared.ctx.summarise_upto)
        options = {
            **self.limits.options,
            "num_ctx": prepared.window,
            "num_predict": prepared.num_predict,
            "stop": prepared.stop,
        }
        gen_id = self.store.begin_generation(
            story_id, member, model, user_text=request.user_text, prompt=request.prompt, raw=request.raw,
            options=options, context=prepared.record, direction=direction, length=length, slot=slot,
            owner=self.owner,
        )  # fmt: skip
        yield Started(gen_id, model)
        output, stats, shown, host = "", {}, ("", ""), None
        clock, last = asyncio.get_running_loop().time, -float("inf")
        parsed = None
        STORY.set(channel.id)  # a pool of hosts sends the story where its prompt is cached
        try:
            async with aclosing(self.backend.generate(model, request, options)) as pieces:
                async for piece in pieces:
                    if host is None and piece.host:  # which server writes it: `story-bot status`
                        host = piece.host
                        self.store.set_generation_host(gen_id, host)
                    output += piece.text
                    if piece.done:
                        stats = piece.stats
                        break
                    closed = writer_prompt.cut_at_answer_close(output)
                    if closed is not None:
                        # The answer is complete: close the stream (the server stops the model) even
                        # where the stop option was not honoured; what follows would not be used.
                        output, stats = closed, {**piece.stats, "done_reason": "stop"}
                    elif clock() - last < self.limits.delta_every:
                        continue  # coalesce: the next Delta (or Done) carries this text too
                    last = clock()
                    parsed = writer_prompt.parse_output(output, partial=True)
                    if (parsed.answer, parsed.reasoning) != shown:
                        shown = (parsed.answer, parsed.reasoning)
                        yield Delta(*shown)
                    if closed is not None:
                        break
            if stats.get("done_reason") == "stop":  # Ollama strips the </answer> stop: put it back
                output = writer_prompt.restore_stop(output)
            parsed = writer_prompt.parse_output(output)
            if not parsed.answer:
                raise EmptyAnswer(_empty_message(model, stats, parsed))
        except LLMError as exc:
            issues = [i.value for i in parsed.issues] if isinstance(exc, EmptyAnswer) and parsed else None
            self.store.fail_generation(gen_id, str(exc), output, issues)
            yield Failed(str(exc), gen_id)
            return
        except BaseException:  # the driver went away (cancelled, or closed the iterator)
            self.store.fail_generation(gen_id, CANCELLED, output)
            raise
        issues = [i.value for i in parsed.issues]
        passage = self.store.finish_generation(
            gen_id, requested_by=member, output=output, reasoning=parsed.reasoning, answer=parsed.answer,
            issues=issues, stats=stats,
        )  # fmt: skip
        if passage is None:
            yield Failed(
                "the story changed while the model was writing (a passage was undone or the story reset), "
                "so this passage was not added: ask again",
                gen_id,
            )
            return
        yield Done(passage, gen_id, parsed.reasoning, tuple(issues))

    async def _prepare(self, channel: Channel, story_id: int, passages: list[Passage], direction, length):
        """The context and request for the next passage: memory, summary, lore, passages, guidance.

        The guidance is the one-off direction if given, else the story's author's note.
        """
        model = self.model_for(channel)
        info = await self.backend.model_info(model)
        window = self.limits.num_ctx or info.num_ctx or self.limits.default_num_ctx
        num_predict = serving.num_predict(length)
        note = self.store.note(story_id, "note")
        source = "direction" if direction else ("note" if note and note.text else None)
        guidance = direction if direction else (note.text if source else None)
        valid = summaries.valid(self.store.summaries(story_id), passages, limit=3)
        ctx = build_story_context(
            passages, valid, self.counter, Budget(window, num_predict, serving.num_predict(None)), guidance,
            length, memory=self.store.note(story_id, "memory"), lore=self.store.lore_entries(story_id),
            mentions=direction, shares=self.limits.shares,
        )  # fmt: skip
        if valid and ctx.summarise_upto is not None and ctx.summarise_upto <= valid[0].upto_position:
            ctx.summarise_upto = None  # written already, waiting for its step
        request = serving.build_request(ctx.text, info.template, guidance, length, info.system)
        record = {**ctx.record(), "guidance": source, "note_id": note.id if source == "note" else None}
        stop = stop_sequences(info.stop, self.limits.options.get("stop"))
        return _Prepared(model, window, num_predict, ctx, request, record, stop)

    # --- rolling summaries (background) -----------------------------------------------------------
    def _schedule_summary(self, channel: Channel, story_id: int, upto: int) -> None:
        if story_id in self._summaries or time.monotonic() < self._retry_at.get(story_id, 0.0):
            return
        task = asyncio.create_task(self._summarise(channel, story_id, upto), name=f"summary-{story_id}")
        self._summaries[story_id] = task
        task.add_done_callback(lambda _: self._summaries.pop(story_id, None))

    def _preempt(self) -> bool:
        """A generation must wait for the server: a summary holding a slot gives it up (retried later)."""
        for task in self._holding:
            if not task.cancelling():
                task.cancel()
                return True
        return False

    async def _summarise(self, channel: Channel, story_id: int, upto: int) -> None:
        """Fold the passages up to position `upto` into the story's rolling summary, a request at a time
        (unless another process is writing this story's summary)."""
        await self._slots.acquire(background=True)
        me = asyncio.current_task()
        self._holding.add(me)
        try:
            if not self._hold(f"summary:{story_id}"):
                return
            for _ in range(8):  # a story far over its window is caught up in a few rounds
                done = await self._summary_round(channel, story_id, upto)
                if done is None or done >= upto:
                    return
        finally:
            self._drop(f"summary:{story_id}")
            self._holding.discard(me)
            self._slots.release()

    async def _summary_round(self, channel: Channel, story_id: int, upto: int) -> int | None:
        """One summary request; returns the position it reached, or None when there is nothing to do or
        it failed (the failure is recorded and a retry waits `summary_retry_s`)."""
        passages = self.store.passages(story_id)
        previous = summaries.current(self.store.summaries(story_id), passages)
        todo = [p for p in passages if (previous.upto_position if previous else 0) < p.position <= upto]
        if not todo:
            return None
        model = self.limits.summary_model or self.model_for(channel)
        summary_id = None
        try:
            info = await self.backend.model_info(model)
            window = self.limits.num_ctx or info.num_ctx or self.limits.default_num_ctx
            num_predict = serving.num_predict(self.limits.summary_words)
            todo = self._summary_input(todo, previous, window - num_predict - TEMPLATE_MARGIN)
            text = summaries.summary_prompt(previous and previous.text, [p.text for p in todo],
                                            self.limits.summary_words)  # fmt: skip
            request = summaries.summary_request(text, info.template, info.system)
            summary_id = self._begin_summary(story_id, passages, todo, previous, model)
            stop = stop_sequences(info.stop, self.limits.options.get("stop"))
            options = {**self.limits.options, "num_ctx": window, "num_predict": num_predict, "stop": stop}
            timeout = self.limits.summary_timeout
            output = await asyncio.wait_for(self._collect(model, request, options), timeout)
            result = summaries.clean_summary(output)
            if not result:
                raise EmptyAnswer(f"the model {model!r} answered with an empty summary")
        except asyncio.CancelledError:
            if summary_id is not None:
                self.store.fail_summary(summary_id, "set aside for a passage that needed the server")
            raise
        except Exception as exc:  # a background job: record it, keep the story usable, retry later
            message = _summary_error(exc, self.limits.summary_timeout)
            if summary_id is None:
                summary_id = self._begin_summary(story_id, passages, todo, previous, model)
            self.store.fail_summary(summary_id, message)
            self._retry_at[story_id] = time.monotonic() + self.limits.summary_retry_s
            log.warning("story %s: summary failed: %s", story_id, message)
            return None
        self._retry_at.pop(story_id, None)
        return todo[-1].position if self.store.finish_summary(summary_id, result) else None

    def _summary_input(self, todo: list[Passage], previous: Summary | None, room: int) -> list[Passage]:
        """The oldest passages of `todo` that fit in one summary request (at least one)."""
        frame = summaries.summary_prompt(previous and previous.text, [], self.limits.summary_words)
        used, out = self.counter.count(frame), []
        for p in todo:
            used += self.counter.count(p.text) + 1
            if out and used > room:
                break
            out.append(p)
        return out

    def _begin_summary(self, story_id, passages, todo, previous, model) -> int:
        upto = todo[-1].position
        covered = [p for p in passages if p.position <= upto]
        return self.store.begin_summary(story_id, upto, covered, previous and previous.id, model, self.owner)

    async def _collect(self, model: str, request: serving.GenerateRequest, options: dict) -> str:
        output = ""
        async with aclosing(self.backend.generate(model, request, options)) as pieces:
            async for piece in pieces:
                output += piece.text
                if piece.done:
                    break
        return output

    def _plan(self, channel: Channel, regenerate: int | None, direction, length):
        """What to generate from: (story id, passages for the context, slot, direction, length)."""
        story = self.show(channel)
        passages = list(story.passages)
        if regenerate is None:
            if not passages:
                return Failed("the story is empty: write its opening first, then ask the model to continue")
            return story.id, passages, None, direction, length
        last = story.last
        if regenerate:  # a button names the version it showed
            gen = self.store.generation(regenerate)
            if gen is None or gen.channel_id != channel.id:
                return Failed("that passage is not part of this channel's story")
            if last is None or gen.passage_id != last.id or last.generation_id != regenerate:
                return Failed("only the newest model passage, as shown now, can be regenerated")
        if last is None or not last.by_model:
            return Failed("the newest passage is not the model's, nothing to regenerate: continue")
        if len(passages) < 2:
            return Failed("there is no story before this passage to regenerate it from")
        original = self.store.generation(last.generation_id) if last.generation_id else None
        if original is not None:  # the same prompt again, so the alternatives can be compared
            direction, length = original.direction, original.length
        return story.id, passages[:-1], last.id, direction, length


def stop_sequences(
    model_stop: Sequence[str] = (), configured: Sequence[str] | str | None = None
) -> list[str]:
    """The `stop` option of a passage request: `</answer>` (the passage is complete there), the model's
    own stops and every supported chat format's (a request's stop list replaces the model's in Ollama,
    and a raw request must stop at the end of the turn whatever the model's parameters say)."""
    configured = [configured] if isinstance(configured, str) else list(configured or ())
    formats = [t for f in chat_formats.FORMATS.values() for t in f.stop]
    return list(dict.fromkeys([writer_prompt.ANSWER_CLOSE, *model_stop, *configured, *formats]))


def _block(text: str) -> str:
    """Member text that stands as one paragraph of the context: blank lines dropped."""
    return "\n".join(line for line in texts.clean_input(text or "").split("\n") if line.strip())


def _summary_error(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"the summary was not written within {timeout:g}s; it is tried again later"
    if isinstance(exc, LLMError | summaries.SummaryUnavailable):
        return str(exc)
    log.exception("summary failed", exc_info=exc)
    return f"the summary failed ({type(exc).__name__}: {exc}); it is tried again later"


def _empty_message(model: str, stats: dict, parsed: writer_prompt.ParsedOutput) -> str:
    if stats.get("done_reason") == "length":
        return (
            f"the model {model!r} spent its whole token budget before writing a passage (nothing was "
            "added): try again, or ask for a longer length"
        )
    marks = {writer_prompt.Issue.STRAY_TAG, writer_prompt.Issue.DEFUSED_TAG}
    if marks & set(parsed.issues):
        return (
            f"the model {model!r} answered with tags only, no story text (nothing was added): "
            "try again (regenerate)"
        )
    return f"the model {model!r} answered with no passage (nothing was added): try again"
