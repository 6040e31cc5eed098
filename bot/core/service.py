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

One generation runs at a time per story; a global cap (`Limits.parallel`, the Ollama server's
parallelism) bounds generations in flight across all stories. Drivers never touch SQLite or Ollama.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field

from pipeline import prompt as writer_prompt
from pipeline import serving

from ..llm import EmptyAnswer, LLMError, OllamaBackend
from ..store import Interrupted, Store
from . import text as texts
from .context import Budget, CharCounter, ContextTooSmall, Counter, build_context
from .story import Channel, Member, Passage, Story, to_markdown

MAX_TITLE_CHARS = 100


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
        self._slots = asyncio.Semaphore(self.limits.parallel)
        self._waiting_for_slot = 0

    # --- quick operations ------------------------------------------------------------------------
    def recover(self) -> list[Interrupted]:
        """On start: generations a dead process left running, now failed; drivers edit their messages."""
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
        if gen.status != "done":
            raise StoryError("that passage did not finish, so there is no reasoning to show")
        return gen.reasoning or "(the model wrote no reasoning for this passage)"

    def attach_message(self, generation_id: int, ref: str) -> None:
        """Remember the driver's message for a generation, so a restart can mark it failed."""
        self.store.set_message_ref(generation_id, ref)

    def set_opt_out(self, member: Member, opted_out: bool) -> None:
        """Keep (or stop keeping) a member's passages and ratings out of the feedback export."""
        self.store.set_opt_out(member.id, opted_out)

    def opted_out(self, member: Member) -> bool:
        return self.store.opted_out(member.id)

    def _generation(self, generation_id: int, channel_id: str | None):
        gen = self.store.generation(generation_id)
        if gen is None or (channel_id is not None and gen.channel_id != channel_id):
            raise StoryError("that passage is not part of this channel's story")
        return gen

    def _check_rateable(self, generation_id: int, channel_id: str | None) -> None:
        gen = self._generation(generation_id, channel_id)
        if gen.status != "done" or gen.passage_id is None:
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
            if self._slots.locked():
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
            gate.lock.release()
            if gate.waiting == 0 and not gate.lock.locked():
                self._gates.pop(channel.id, None)

    async def _generate(self, channel, member, direction, length, regenerate) -> AsyncIterator[Event]:
        plan = self._plan(channel, regenerate, direction, length)
        if isinstance(plan, Failed):
            yield plan
            return
        story_id, passages, slot, direction, length = plan
        model = self.model_for(channel)
        try:
            info = await self.backend.model_info(model)
            window = self.limits.num_ctx or info.num_ctx or self.limits.default_num_ctx
            num_predict = serving.num_predict(length)
            ctx = build_context(passages, self.counter, Budget(window, num_predict), direction, length)
            request = serving.build_request(ctx.text, info.template, direction, length, info.system)
        except (LLMError, ContextTooSmall, writer_prompt.PromptError, serving.ServingError) as exc:
            yield Failed(str(exc))
            return
        options = {**self.limits.options, "num_ctx": window, "num_predict": num_predict}
        gen_id = self.store.begin_generation(
            story_id, member, model, user_text=request.user_text, prompt=request.prompt, raw=request.raw,
            options=options, context=ctx.record(), direction=direction, length=length, slot=slot,
        )  # fmt: skip
        yield Started(gen_id, model)
        output, stats, shown = "", {}, ("", "")
        clock, last = asyncio.get_running_loop().time, -float("inf")
        try:
            async with aclosing(self.backend.generate(model, request, options)) as pieces:
                async for piece in pieces:
                    output += piece.text
                    if piece.done:
                        stats = piece.stats
                        break
                    if clock() - last < self.limits.delta_every:
                        continue  # coalesce: the next Delta (or Done) carries this text too
                    last = clock()
                    parsed = writer_prompt.parse_output(output, partial=True)
                    if (parsed.answer, parsed.reasoning) != shown:
                        shown = (parsed.answer, parsed.reasoning)
                        yield Delta(*shown)
            parsed = writer_prompt.parse_output(output)
            if not parsed.answer:
                raise EmptyAnswer(_empty_message(model, stats))
        except LLMError as exc:
            self.store.fail_generation(gen_id, str(exc), output)
            yield Failed(str(exc), gen_id)
            return
        except BaseException:  # the driver went away (cancelled, or closed the iterator)
            self.store.fail_generation(gen_id, "cancelled before the model finished", output)
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


def _empty_message(model: str, stats: dict) -> str:
    if stats.get("done_reason") == "length":
        return (
            f"the model {model!r} spent its whole token budget before writing a passage (nothing was "
            "added): try again, or ask for a longer length"
        )
    return f"the model {model!r} answered with no passage (nothing was added): try again"
