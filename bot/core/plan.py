"""The plan of one passage request: its context, the writer prompt, the request and its options.

:meth:`Assembler.plan` reads the story's parts from the store (memory, author's note, lorebook, rolling
summaries), fits them with the passages into the model's window (:func:`bot.core.context
.build_story_context`), renders the writer prompt once and builds the request from it. Whatever stops a
request being made (an unreachable server, a window too small, a prompt refused) is a :class:`StoryError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from contract import prompt as writer_prompt
from contract import serving

from ..llm import Backend, LLMError, ModelInfo
from ..store import Store
from . import summary as summaries
from .context import Budget, ContextRecord, ContextTooSmall, Counter, build_story_context
from .events import StoryError
from .limits import Limits
from .story import Channel, Passage

WORDS = range(10, 1001)  # a length in words a member may ask for


def parse_length(length: str | None) -> str | None:
    """A member's length ("short", "Medium", "60", ...) as the prompt spells it; None: the usual length."""
    text = str(length).strip().lower() if length else ""
    if text.isdigit() and int(text) in WORDS:
        return str(int(text))
    try:
        return writer_prompt.Length(text).value if text else None
    except ValueError as exc:
        raise StoryError(
            f"unknown length {length!r}: use short, medium, long or a number of words "
            f"({WORDS.start}–{WORDS.stop - 1})"
        ) from exc


@dataclass(frozen=True)
class Source:
    """What a passage is written from."""

    story_id: int
    passages: Sequence[Passage]  # the story before the passage
    slot: int | None = None  # the passage a regeneration writes another version of
    direction: str | None = None  # a one-off direction (it replaces the author's note)
    length: str | None = None


class GenerationRecord(ContextRecord):
    """The context's record with what else shaped the prompt: the guidance and where it came from (a
    direction, or the story's note), and the story's settings."""

    guidance: str | None  # "direction", "note" or None
    note_id: int | None
    settings: dict[str, Any]  # the settings' id and every value the story's members set


@dataclass(frozen=True)
class Plan:
    """Everything a generation needs before the model is asked."""

    source: Source
    model: str
    request: serving.GenerateRequest  # request.user_text: the writer prompt as the model reads it
    options: serving.Options
    record: GenerationRecord
    window: int
    num_predict: int
    summarise_upto: int | None  # a rolling summary is due up to this position (None: none is)


class Assembler:
    def __init__(
        self,
        store: Store,
        backend: Backend,
        model_of: Callable[[Channel, int], str],
        counter: Counter,
        limits: Limits,
    ):
        self.store = store
        self.backend = backend
        self.model_of = model_of  # (channel, story id) -> the story's model
        self.counter = counter
        self.limits = limits

    async def plan(self, channel: Channel, source: Source) -> Plan:
        """The plan for the next passage of `source`'s story (see the module's docstring)."""
        try:
            return await self._plan(channel, source)
        except (LLMError, ContextTooSmall, writer_prompt.PromptError, serving.ServingError) as exc:
            raise StoryError(str(exc)) from exc

    async def _plan(self, channel: Channel, source: Source) -> Plan:
        story_id, direction = source.story_id, source.direction
        settings = self.store.settings(story_id)
        length = source.length or settings.length  # the story's default length, unless one is asked
        model = self.model_of(channel, story_id)
        info = await self.backend.model_info(model)
        num_predict = serving.num_predict(length)
        note = self.store.note(story_id, "note")
        # The guidance: the one-off direction if given, else the story's author's note.
        if direction:
            guidance, given_by = direction, "direction"
        elif note is not None and note.text:
            guidance, given_by = note.text, "note"
        else:
            guidance, given_by = None, None
        valid = summaries.valid(self.store.summaries(story_id), source.passages, limit=3)
        budget = Budget(self.limits.window(info), num_predict, serving.num_predict(None))
        ctx = build_story_context(
            source.passages,
            valid,
            self.counter,
            budget,
            guidance,
            length,
            memory=self.store.note(story_id, "memory"),
            lore=self.store.lore_entries(story_id),
            mentions=direction,
            shares=self.limits.shares,
            cast=self.store.personas(story_id),
        )
        upto = ctx.summarise_upto
        if valid and upto is not None and upto <= valid[0].upto_position:
            upto = None  # written already, waiting for its step
        user_text = writer_prompt.render_prompt(ctx.text, guidance, length)
        record: GenerationRecord = {
            **ctx.record(),
            "guidance": given_by,
            "note_id": note.id if note is not None and given_by == "note" else None,
            "settings": {"id": settings.id, **settings.values()},  # what the story's members set
        }
        options: serving.Options = {**self.limits.request_options(info, num_predict), **settings.options()}
        return Plan(
            replace(source, length=length),
            model,
            _request(info, ctx.text, user_text, guidance, length),
            options,
            record,
            budget.window,
            num_predict,
            upto,
        )


def _request(
    info: ModelInfo, context: str, user_text: str, guidance: str | None, length: str | None
) -> serving.GenerateRequest:
    """The request for the rendered writer prompt, by contract.serving's builder. Only a model whose
    TEMPLATE holds a writer prompt not of ours is refused the rendered prompt: serving.build_request
    knows what such a model may still be sent (the bare context, when there is no guidance)."""
    try:
        return serving.request_for(info.template, user_text, model_system=info.system)
    except serving.ServingError:
        return serving.build_request(context, info.template, guidance, length, info.system)
