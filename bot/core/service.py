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

A generation reads top to bottom in :meth:`StoryService._run`: it waits for its turn
(:mod:`bot.core.scheduler`: one generation at a time per story, across processes too through the story's
lease in the store, and at most `Limits.parallel` in flight per process), assembles its plan
(:mod:`bot.core.plan`: the context within the model's window and the request), then streams the model's
answer (:mod:`bot.core.streaming`) into the store. Drivers never touch SQLite or Ollama.

Long stories: each story has a memory (pinned at the start of the context), an author's note (the
prompt's guidance; a one-off direction replaces it for its request), a lorebook (entries brought in by
their keywords) and rolling summaries of the passages that no longer fit, written in the background by
:mod:`bot.core.summarizer`. :meth:`StoryService.context_preview` shows what the model would read. A summary
never delays a passage: it takes a server slot only when no generation waits for one, and gives it up
(to be retried later) when one does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace

from contract import prompt as writer_prompt
from contract.store.status import DeliveryState, Status
from contract.target import Target

from ..llm import STORY, Backend, LLMError, Stats
from ..store import Delivery, GenerationRow, Interrupted, Store
from ..store.leases import new_owner, retire
from . import files, history, lorefiles, messages, storyfile
from . import lore as lorebook
from . import settings as story_settings
from . import summary as summaries
from . import text as texts
from .context import CharCounter, Counter
from .events import Delta, Done, Event, Failed, Queued, Started, StoryError, Tally
from .leases import Leases
from .limits import Limits
from .lore import BadLore, LoreEntry
from .messages import CANCELLED, NOT_IN_STORY, STORY_CHANGED
from .plan import Assembler, GenerationRecord, Plan, Source, parse_length
from .scheduler import Scheduler
from .settings import StorySettings
from .story import (
    MAX_CAST,
    MAX_PERSONA_CHARS,
    MAX_PERSONA_NAME,
    Channel,
    Member,
    Note,
    Passage,
    Persona,
    Story,
    StoryInfo,
    Summary,
    to_markdown,
)
from .streaming import Output, stream
from .summarizer import Summarizer

__all__ = [
    "ContextPreview",
    "Delta",
    "Done",
    "Event",
    "Failed",
    "Limits",
    "Queued",
    "Started",
    "StoryError",
    "StoryService",
    "SummaryState",
    "Tally",
]

MAX_TITLE_CHARS = 100
MAX_NOTE_CHARS = writer_prompt.MAX_GUIDANCE_CHARS  # the author's note is the prompt's guidance
MAX_SUMMARY_CHARS = 4000  # a summary a member writes (a Discord form holds 4,000)


@dataclass(frozen=True)
class SummaryState:
    """What `/story show --summary` shows."""

    current: Summary | None  # the newest summary (one written ahead comes into the context with a step)
    covers: int  # how many of the story's passages it tells
    writing: bool  # a new one is being written now
    last_error: str | None  # why the newest attempt failed (or was dropped), when it did
    paused: bool = False  # `/story summary pause`: no new summaries
    versions: int = 0  # the summaries kept (the model's and the writers')


@dataclass(frozen=True)
class ContextPreview:
    """What the model will receive for the next passage (`/story context`)."""

    model: str
    user_text: str  # the writer prompt exactly as the model will read it
    record: GenerationRecord  # what the generation record will keep: parts, ids, sizes
    window: int
    num_predict: int
    settings_line: str = ""  # the story's settings as `/story settings` shows them


@dataclass(frozen=True)
class Retake:
    """Another take on the story's newest model passage. `shown` is the take a button showed, which must
    still be the newest; None (a command) takes whichever is."""

    shown: int | None = None


class StoryService:
    def __init__(
        self,
        store: Store,
        backend: Backend,
        model_for: Callable[[Channel], str],
        counter: Counter | None = None,
        limits: Limits | None = None,
        models_allowed: Callable[[Channel], Sequence[str]] | None = None,
    ):
        self.store = store
        self.backend = backend
        self.model_for = model_for
        #: The models a story's settings may pick in a channel (the operator's list; its default first).
        self.models_allowed = models_allowed or (lambda channel: [model_for(channel)])
        self.counter: Counter = counter or CharCounter()
        self.limits = limits or Limits()
        self.owner = new_owner()  # this service's name on its leases
        self.leases = Leases(store, self.owner, self.limits.lease_s)
        self.scheduler = Scheduler(self.limits.parallel, self.leases)
        self.assembler = Assembler(store, backend, self.model_of, self.counter, self.limits)
        self.summarizer = Summarizer(store, backend, self.model_of, self.counter, self.limits, self.scheduler)

    def model_of(self, channel: Channel, story_id: int) -> str:
        """The model a story uses: its settings' own while the channel may still use it, else the
        channel's."""
        chosen = self.store.settings(story_id).model
        return chosen if chosen and chosen in self.allowed_models(channel) else self.model_for(channel)

    def allowed_models(self, channel: Channel) -> list[str]:
        return list(dict.fromkeys([self.model_for(channel), *self.models_allowed(channel)]))

    # --- generations ---------------------------------------------------------------------------
    def continue_story(
        self, channel: Channel, member: Member, direction: str | None = None, length: str | None = None
    ) -> AsyncIterator[Event]:
        """The model writes the next passage; optional direction (a sentence) and length."""
        return self._run(channel, member, direction, length, retake=None)

    def regenerate(
        self, channel: Channel, member: Member, generation_id: int | None = None
    ) -> AsyncIterator[Event]:
        """Another take on the newest model passage (the earlier ones are kept as alternatives).

        `generation_id` (from a button) names the version the member saw; it must still be the newest.
        """
        return self._run(channel, member, None, None, retake=Retake(generation_id))

    async def _run(
        self,
        channel: Channel,
        member: Member,
        direction: str | None,
        length: str | None,
        retake: Retake | None,
    ) -> AsyncGenerator[Event, None]:
        """A generation: its turn, its plan, then the model's stream (a new passage, or `retake`)."""
        direction = writer_prompt.defuse_control(direction) if direction else direction
        try:
            length = parse_length(length)
        except StoryError as exc:
            yield Failed(str(exc))
            return
        async with self.scheduler.turn(channel.id) as turn:
            async for queued in turn.wait():
                yield queued
            try:  # the story as it is now that its turn has come
                source = self._source(channel, retake, direction, length)
                plan = await self.assembler.plan(channel, source)
            except StoryError as exc:
                yield Failed(str(exc))
                return
            plan = self._new_draw(plan)
            if plan.summarise_upto is not None:
                self.summarizer.schedule(channel, plan.source.story_id, plan.summarise_upto)
            # aclosing: a driver that stops listening closes the model's stream now, not at GC.
            async with aclosing(self._generate(channel, member, plan)) as events:
                async for event in events:
                    yield event

    def _source(
        self, channel: Channel, retake: Retake | None, direction: str | None, length: str | None
    ) -> Source:
        """What to write from: the whole story (a new passage), or the story before its newest model
        passage (a retake)."""
        story = self.show(channel)
        passages = list(story.passages)
        if retake is None:
            if not passages:
                raise StoryError(
                    "the story is empty: write its opening first, then ask the model to continue"
                )
            return Source(story.id, passages, None, direction, length)
        last = story.last
        if retake.shown is not None:  # a button names the version it showed
            gen = self.store.generation(retake.shown)
            if gen is None or gen.channel_id != channel.id:
                raise StoryError(NOT_IN_STORY)
            if last is None or gen.passage_id != last.id or last.generation_id != retake.shown:
                raise StoryError("only the newest model passage, as shown now, can be regenerated")
        if last is None or not last.by_model:
            raise StoryError("the newest passage is not the model's, nothing to regenerate: continue")
        if len(passages) < 2:
            raise StoryError("there is no story before this passage to regenerate it from")
        original = self.store.generation(last.generation_id) if last.generation_id else None
        if original is not None:  # the same prompt again, so the alternatives can be compared
            direction, length = original.direction, original.length
        return Source(story.id, passages[:-1], last.id, direction, length)

    def _new_draw(self, plan: Plan) -> Plan:
        """Each take is a new draw: with a seed fixed in the options, a regeneration would repeat the take
        it replaces, so take k of a slot is asked with the seed plus the attempts before it (recorded in
        the generation's options)."""
        seed, slot = plan.options.get("seed"), plan.source.slot
        if slot is None or not isinstance(seed, int):
            return plan
        return replace(plan, options={**plan.options, "seed": seed + self.store.attempts(slot)})

    async def _generate(self, channel: Channel, member: Member, plan: Plan) -> AsyncGenerator[Event, None]:
        """The generation's record, the model's answer as it grows (Delta), then the passage (Done)."""
        source, request = plan.source, plan.request
        gen_id = self.store.begin_generation(
            source.story_id,
            member,
            plan.model,
            user_text=request.user_text,
            prompt=request.prompt,
            raw=request.raw,
            options=plan.options,
            context=plan.record,
            direction=source.direction,
            length=source.length,
            slot=source.slot,
            owner=self.owner,
        )
        yield Started(gen_id, plan.model)
        output, host, shown = Output(), None, ("", "")
        clock, last = asyncio.get_running_loop().time, -float("inf")
        STORY.set(channel.id)  # a pool of hosts sends the story where its prompt is cached
        try:
            outputs = stream(self.backend, plan.model, request, plan.options, until_answer_closes=True)
            async with aclosing(outputs):
                async for output in outputs:
                    if host is None and output.host:  # which server writes it: `story-bot status`
                        host = output.host
                        self.store.set_generation_host(gen_id, host)
                    if output.done and not output.cut:
                        break  # the server's last piece: the answer is read whole below
                    if not output.cut and clock() - last < self.limits.delta_every:
                        continue  # coalesce: the next Delta (or Done) carries this text too
                    last = clock()
                    parsed = request.target.parse(output.text, partial=True)
                    if (parsed.answer, parsed.reasoning) != shown:
                        shown = (parsed.answer, parsed.reasoning)
                        yield Delta(*shown)
        except LLMError as exc:
            self.store.fail_generation(gen_id, str(exc), output.text)
            yield Failed(str(exc), gen_id)
            return
        except BaseException:  # the driver went away (cancelled, or closed the iterator)
            self.store.fail_generation(gen_id, CANCELLED, output.text)
            raise
        yield self._finish(gen_id, member, plan.model, output, request.target)

    def _finish(
        self,
        gen_id: int,
        member: Member,
        model: str,
        output: Output,
        target: Target = Target.REASONING_ANSWER,
    ) -> Done | Failed:
        """The answer into the story (Done), or why it added nothing (Failed); the output is read as
        the model's target writes it (an answer-target model writes no reasoning, and that is no issue)."""
        text = output.text
        if output.stats.get("done_reason") == "stop":  # Ollama strips the </answer> stop: put it back
            text = writer_prompt.restore_stop(text)
        parsed = target.parse(text)
        issues = [i.value for i in parsed.issues]
        if not parsed.answer:
            message = _empty_message(model, output.stats, parsed)
            self.store.fail_generation(gen_id, message, text, issues)
            return Failed(message, gen_id)
        passage = self.store.finish_generation(
            gen_id,
            requested_by=member,
            output=text,
            reasoning=parsed.reasoning,
            answer=parsed.answer,
            issues=issues,
            stats=output.stats,
        )
        if passage is None:
            return Failed(
                f"{STORY_CHANGED} (a passage was undone or the story reset), so this passage was not added: "
                "ask again",
                gen_id,
            )
        return Done(passage, gen_id, parsed.reasoning, tuple(issues))

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

    def export_json(self, channel: Channel) -> str:
        """The story as one JSON file (bot/core/storyfile.py; docs/story-files.md)."""
        return files.dumps(self.store.story_document(self._story_id(channel)).model_dump())

    def import_story(
        self, channel: Channel, member: Member, data: bytes
    ) -> tuple[Story, lorefiles.Report, list[str]]:
        """A story file as the channel's new story (the one there is archived, kept): the story, the
        report on its lore entries, and notes on what could not come along (a model not allowed here).
        A file that cannot be read whole is refused (BadFile) and nothing is written."""
        doc = storyfile.read(
            files.load_json(data),
            max_passage_chars=self.limits.max_passage_chars,
            max_memory_chars=self.limits.max_memory_chars,
            max_note_chars=MAX_NOTE_CHARS,
        )
        try:
            settings = story_settings.check_imported(doc.settings, self.allowed_models(channel))
        except StoryError as exc:
            raise files.BadFile(f"settings: {exc}") from exc
        notes = []
        if doc.settings.get("model") and settings.model is None:
            notes.append(
                f"the model {doc.settings['model']!r} is not one this channel may use: the story uses "
                f"the channel's ({self.model_for(channel)})"
            )
        lore = [
            lorefiles.Candidate(i, e.name, tuple(e.keywords), e.text, e.always_on)
            for i, e in enumerate(doc.lore, 1)
        ]
        story_id, outcomes = self.store.import_story(channel, member, doc, settings, lore)
        return self.store.story(story_id), lorefiles.Report("its lorebook", outcomes), notes

    def import_lore(self, channel: Channel, member: Member, data: bytes) -> lorefiles.Report:
        """A lorebook file (ours, SillyTavern World Info, NovelAI) into the story's lorebook, entry by
        entry: what was kept, merged or skipped, and why."""
        kind, candidates = lorefiles.read(files.load_json(data))
        story_id = self.store.ensure_story(channel, member)
        return lorefiles.Report(kind, self.store.import_lore(story_id, candidates, member))

    def export_lore(self, channel: Channel, fmt: str = "ours") -> str:
        """The lorebook as a file: ours, or SillyTavern's World Info (`sillytavern`)."""
        entries = self.lore(channel)
        return files.dumps(lorefiles.tavern(entries) if fmt == "sillytavern" else lorefiles.ours(entries))

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

    # --- history: edits, takes, erase and redo, forks, the library --------------------------------
    def passage(self, channel: Channel, position: int) -> Passage:
        """The passage the story shows at `position` (a StoryError says why there is none)."""
        return self.store.passage_at(self._story_id(channel), position)

    def edit(
        self,
        channel: Channel,
        member: Member,
        position: int,
        text: str,
        may_manage: bool = False,
        revision: int | None = None,
        story_id: int | None = None,
    ) -> Passage:
        """Replace the text of passage `position` (its author, the member who asked the model for it, or
        Manage Messages); every version is kept. `revision` and `story_id`: the passage's revision and
        story the member saw (a Discord form carries them): an edit made meanwhile is not overwritten
        (bot/core/history.py)."""
        text = history.check_text(texts.clean_input(text or ""), self.limits.max_passage_chars)
        current = self._story_id(channel)
        if story_id is not None and story_id != current:
            raise StoryError("this channel's story changed while you were editing: nothing was changed")
        return self.store.edit_passage(current, position, member, text, revision, may_manage)

    def passage_of(self, generation_id: int, channel: Channel) -> Passage:
        """The passage a take (a button's generation) stands in, while the story shows it."""
        gen = self._generation(generation_id, channel.id)
        if gen.passage_id is None:
            raise StoryError("that passage did not make it into the story")
        passage, present = self.store.passage(gen.passage_id)
        if not present:
            raise StoryError("that passage was taken out of the story (undone or erased)")
        return passage

    def takes(self, channel: Channel, position: int | None = None) -> tuple[Passage, list[str]]:
        """A model passage (default: the newest) and the texts of its takes, oldest first."""
        passage = self._model_passage(channel, position)
        return passage, [self.store.take_text(passage.id, g) for g in self.store.takes(passage.id)]

    def choose_take(
        self,
        channel: Channel,
        member: Member,
        k: int,
        position: int | None = None,
        revision: int | None = None,
    ) -> Passage:
        """Show take `k` of a model passage (default: the newest) for everyone; who chose it is kept."""
        passage = self._model_passage(channel, position)
        return self.store.choose_take(passage.story_id, passage.position, member, k, revision)

    def choose_generation(self, channel: Channel, member: Member, generation_id: int) -> Passage:
        """Show the take `generation_id` (a ◀ ▶ button names the take it leads to)."""
        gen = self._generation(generation_id, channel.id)
        if gen.status != Status.DONE or gen.passage_id is None:
            raise StoryError("that take did not make it into the story")
        passage, present = self.store.passage(gen.passage_id)
        if not present:
            raise StoryError("that passage was taken out of the story, so its takes cannot be shown")
        k = self.store.takes(passage.id).index(generation_id) + 1
        return self.store.choose_take(passage.story_id, passage.position, member, k)

    def take_ids(self, passage_id: int) -> list[int]:
        """The finished takes of a model passage (generation ids, oldest first)."""
        return self.store.takes(passage_id)

    def _model_passage(self, channel: Channel, position: int | None) -> Passage:
        if position is not None:
            return self.passage(channel, position)
        for p in reversed(self.show(channel).passages):
            if p.by_model:
                return p
        raise StoryError("the model has not written a passage in this story yet: continue first")

    def erase(
        self, channel: Channel, member: Member, from_position: int, may_manage: bool = False
    ) -> list[Passage]:
        """Take passage `from_position` and everything after it out of the story, as one run `redo` can
        bring back (kept, never deleted). Other members' passages need Manage Messages."""
        story_id = self._story_id(channel)
        later = [p for p in self.store.passages(story_id) if p.position >= from_position]
        others = {p.author_name for p in later if p.author_id != member.id}
        if others and not may_manage:
            raise StoryError(
                f"passages {from_position} and after include passages by {', '.join(sorted(others))}: "
                "erasing them needs the Manage Messages permission"
            )
        return self.store.erase(story_id, from_position, member)

    def redo(self, channel: Channel, member: Member) -> list[Passage]:
        """Bring back the most recently erased run, while nothing new was added after it and no passage
        is being written (a dead process's generation is failed first, so it does not count)."""
        self.recover()
        return self.store.redo(self._story_id(channel), member)

    def fork(
        self,
        channel: Channel,
        member: Member,
        upto: int,
        title: str | None = None,
        into: Channel | None = None,
    ) -> Story:
        """A new story holding copies of passages 1..`upto` with the story's memory, note, lore and
        summary; the original is untouched. `into`: the channel (a new thread) it becomes the story of;
        `channel` itself makes it the channel's story (archiving the original); None keeps it aside in
        the channel's library (`open` brings it in)."""
        story = self.show(channel)
        if not story.id:
            raise StoryError("there is no story in this channel yet: nothing to fork")
        title = texts.one_line(title, MAX_TITLE_CHARS) if title else None
        title = title or f"{story.title or 'Untitled'} (fork at {upto})"[:MAX_TITLE_CHARS]
        target = into or Channel(channel.id, channel.guild_id, channel.parent_id)
        new = self.store.fork(story.id, upto, target, member, title, archived=into is None)
        return self.store.story(new)

    def library(self, channel: Channel) -> list[StoryInfo]:
        """The stories of this channel and its threads (`/story list`), oldest first."""
        return self.store.library(channel.parent_id or channel.id)

    def open(self, channel: Channel, story_id: int) -> Story:
        """Make an archived story of this channel's library active again (the one in its place archived)."""
        return self.store.open_story(story_id, channel.parent_id or channel.id)

    def passage_message(self, passage: Passage, ref: str | None = None) -> str | None:
        """A member passage's messages (Discord): remember them (`ref`), or read them back."""
        if ref is not None:
            self.store.set_passage_message(passage.id, ref)
        return self.store.passage_message(passage.id)

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
        return self.leases.hold(f"delivery:{generation_id}")

    def delivered(self, generation_id: int, state: DeliveryState = DeliveryState.DONE) -> None:
        """The messages show the final state ('done'), or never can ('lost'); the delivery lease goes."""
        self.leases.forget(f"delivery:{generation_id}")
        self.store.set_delivery(generation_id, state, self.owner)

    def release_delivery(self, generation_id: int) -> None:
        """Stop delivering without finishing (shutting down): whoever starts next takes it over."""
        self.leases.drop(f"delivery:{generation_id}")

    def undelivered(self) -> list[int]:
        """Finished generations owed their final state that no live process is delivering."""
        return self.store.undelivered()

    def delivery(self, generation_id: int) -> Delivery | None:
        return self.store.delivery(generation_id)

    # --- leases --------------------------------------------------------------------------------
    def hold_gateway(self, shards: Sequence[int] = (0,), shard_count: int = 1) -> str | None:
        """Take (and keep renewing) the lease on shards of the Discord events; None, or the live owner
        ("host:pid:token") of an overlapping one, in which case nothing is taken."""
        return self.leases.hold_gateway(shards, shard_count)

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

    def lore_add(self, channel: Channel, member: Member, change: lorebook.LoreChange) -> LoreEntry:
        """A new entry; its name and keywords are unique in the story."""
        try:
            entry = lorebook.new_entry(_lore_block(change), member.id)  # checked before a story is made
            return self.store.add_lore(self.store.ensure_story(channel, member), entry)
        except BadLore as exc:
            raise StoryError(str(exc)) from exc

    def lore_edit(
        self,
        channel: Channel,
        member: Member,
        name: str,
        change: lorebook.LoreChange,
        version: int | None = None,
    ) -> LoreEntry:
        """Change the entry named `name` as `change` says (None keeps a field). Pass `version`, the
        entry's version the member saw (a Discord modal carries it), and an edit made meanwhile by someone
        else is not overwritten: the member is told to look again."""
        try:
            story_id = self._story_id(channel)
            return self.store.edit_lore(story_id, member, name, _lore_block(change), version)
        except BadLore as exc:
            raise StoryError(str(exc)) from exc

    def lore_remove(
        self,
        channel: Channel,
        member: Member,
        name: str,
        may_manage: bool = False,
        version: int | None = None,
    ) -> LoreEntry:
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
            raise StoryError(str(exc)) from exc

    def summary_state(self, channel: Channel) -> SummaryState:
        """The rolling summary the next context uses, and how the newest attempt went."""
        story_id = self.store.active_story_id(channel.id)
        if story_id is None:
            return SummaryState(None, 0, False, None)
        rows = self.store.summaries(story_id)
        passages = self.store.passages(story_id)
        current = summaries.current(rows, passages)
        covers = sum(p.position <= current.upto_position for p in passages) if current else 0
        newest = next((r for r in rows if not r.edited_by), None)  # the model's newest attempt
        dropped = newest is not None and newest.error in (messages.SUMMARY_EDITED, messages.SUMMARY_PAUSED)
        failed = newest.error if newest and (newest.status == Status.FAILED or dropped) else None
        paused = self.store.summary_paused(story_id)
        return SummaryState(current, covers, self.summarizer.writing(story_id), failed, paused, len(rows))

    # --- settings, the summary written by hand, the cast ------------------------------------------
    def settings(self, channel: Channel) -> tuple[StorySettings, str]:
        """The story's settings and the model its next passage uses."""
        story_id = self.store.active_story_id(channel.id)
        if story_id is None:
            return StorySettings(), self.model_for(channel)
        return self.store.settings(story_id), self.model_of(channel, story_id)

    def set_settings(
        self, channel: Channel, member: Member, may_configure: bool, reset: bool = False, **changes
    ) -> StorySettings:
        """Change the story's settings (model, temperature, top_p, repeat_penalty, length; None keeps
        one); `may_configure`: the member holds the role the operator named (Discord: see the cog)."""
        if not may_configure:
            raise StoryError(
                "changing the story's settings needs the role the operator named for it (by default, the "
                "Manage Messages permission)"
            )
        story_id = self.store.ensure_story(channel, member)
        new = story_settings.change(
            self.store.settings(story_id), self.allowed_models(channel), reset=reset, **changes
        )
        return self.store.set_settings(story_id, new, member)

    def edit_summary(self, channel: Channel, member: Member, text: str, seen: int | None = None) -> Summary:
        """A member's summary in place of the current one (every version kept). One being written now is
        dropped when it lands (the edit wins; `/story show summary:True` says so)."""
        text = " ".join(texts.clean_input(text or "").split())
        if not text:
            raise StoryError("the summary is empty: write what happened so far, in a paragraph")
        if len(text) > MAX_SUMMARY_CHARS:
            raise StoryError(
                f"the summary has {len(text):,} characters, over the limit of {MAX_SUMMARY_CHARS:,}: keep "
                "the names and events, leave out the style"
            )
        return self.store.edit_summary(
            self._story_id(channel), writer_prompt.defuse_control(text), member, seen
        )

    def restore_summary(self, channel: Channel, member: Member) -> Summary:
        """Set the current summary aside (kept): the version before it stands again."""
        return self.store.restore_summary(self._story_id(channel), member)

    def pause_summaries(self, channel: Channel, member: Member, paused: bool) -> None:
        """No new summaries while paused (the current one still serves); resume lets them be written."""
        self.store.pause_summaries(self.store.ensure_story(channel, member), paused)

    def cast(self, channel: Channel) -> list[Persona]:
        story_id = self.store.active_story_id(channel.id)
        return self.store.personas(story_id) if story_id else []

    def set_persona(self, channel: Channel, member: Member, name: str, description: str) -> Persona:
        """The character `member` writes in this story, pinned in the context with the rest of the cast."""
        name = texts.one_line(name or "", MAX_PERSONA_NAME + 1)
        description = texts.one_line(description or "", MAX_PERSONA_CHARS + 1)
        if not name or not description:
            raise StoryError("give the persona a name and a description: `/persona set name description`")
        if len(name) > MAX_PERSONA_NAME or len(description) > MAX_PERSONA_CHARS:
            raise StoryError(
                f"a persona's name may have {MAX_PERSONA_NAME} characters and its description "
                f"{MAX_PERSONA_CHARS}: say who they are in a sentence or two"
            )
        story_id = self.store.ensure_story(channel, member)
        clean = writer_prompt.defuse_control
        return self.store.set_persona(story_id, member, clean(name), clean(description), MAX_CAST)

    def clear_persona(self, channel: Channel, member: Member) -> bool:
        story_id = self.store.active_story_id(channel.id)
        return story_id is not None and self.store.clear_persona(story_id, member)

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
        source = Source(story_id, passages, direction=direction, length=parse_length(length))
        p = await self.assembler.plan(channel, source)
        line = story_settings.describe(self.store.settings(story_id), p.model)
        return ContextPreview(p.model, p.request.user_text, p.record, p.window, p.num_predict, line)

    def _story_id(self, channel: Channel) -> int:
        story_id = self.store.active_story_id(channel.id)
        if story_id is None:
            raise StoryError("there is no story in this channel yet: write its opening line first")
        return story_id

    async def idle(self) -> None:
        """Wait until no summary is being written (tests, and a clean shutdown)."""
        await self.summarizer.idle()

    async def aclose(self) -> None:
        """Stop the background summaries (each is retried on the next start, when the story overflows),
        give up this service's leases and retire its owner name."""
        await self.summarizer.aclose()
        self.leases.close()
        retire(self.owner)

    def _generation(self, generation_id: int, channel_id: str | None) -> GenerationRow:
        gen = self.store.generation(generation_id)
        if gen is None or (channel_id is not None and gen.channel_id != channel_id):
            raise StoryError(NOT_IN_STORY)
        return gen

    def _check_rateable(self, generation_id: int, channel_id: str | None) -> None:
        gen = self._generation(generation_id, channel_id)
        if gen.status != Status.DONE or gen.passage_id is None:
            raise StoryError("that passage did not make it into the story, so there is nothing to rate")
        passage, present = self.store.passage(gen.passage_id)
        if not present:
            raise StoryError("that passage was undone (or the story reset), so it can no longer be rated")
        if passage.generation_id != generation_id:
            raise StoryError(
                "that take was replaced by a regeneration (or another take chosen): rate the take shown now"
            )


def _block(text: str) -> str:
    """Member text that stands as one paragraph of the context: blank lines dropped."""
    return "\n".join(line for line in texts.clean_input(text or "").split("\n") if line.strip())


def _lore_block(change: lorebook.LoreChange) -> lorebook.LoreChange:
    """The change with its text as one paragraph of the context."""
    return change if change.text is None else replace(change, text=_block(change.text))


def _empty_message(model: str, stats: Stats, parsed: writer_prompt.ParsedOutput) -> str:
    """Why an answer with no passage in it added nothing, and what to do."""
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
