"""Rolling summaries, written in the background: never before a passage, never twice at once.

The context assembler says when a story's summary is due (:attr:`bot.core.plan.Plan.summarise_upto`);
:meth:`Summarizer.schedule` starts a task for it unless one is being written, or the last one failed less
than `Limits.summary_retry_s` ago. A task takes a server slot no passage is waiting for
(:meth:`bot.core.scheduler.Scheduler.background`) and is cancelled when a passage needs it (the attempt is
recorded as set aside, and asked again the next time the story overflows); it takes the story's summary
lease, so another process never writes the same summary.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from contract import serving

from ..llm import Backend, EmptyAnswer, LLMError
from ..store import Store
from . import summary as summaries
from .context import TEMPLATE_MARGIN, Counter
from .limits import Limits
from .scheduler import Scheduler
from .story import Channel, Passage, Summary
from .streaming import collect

log = logging.getLogger(__name__)
#: Requests one task makes at most: a story far over its window is caught up in a few rounds.
MAX_ROUNDS = 8


class Summarizer:
    def __init__(
        self,
        store: Store,
        backend: Backend,
        model_of: Callable[[Channel, int], str],
        counter: Counter,
        limits: Limits,
        scheduler: Scheduler,
    ):
        self.store = store
        self.backend = backend
        self.model_of = model_of  # (channel, story id) -> the story's model
        self.counter = counter
        self.limits = limits
        self.scheduler = scheduler
        self._tasks: dict[int, asyncio.Task] = {}  # story id -> its summary being written
        self._failed_at: dict[int, float] = {}  # story id -> when its last summary failed

    def schedule(self, channel: Channel, story_id: int, upto: int) -> None:
        """Fold the story's passages up to position `upto` into its rolling summary, in the background."""
        failed_at = self._failed_at.get(story_id)
        if self.store.summary_paused(story_id):
            return  # `/story summary pause`: the current summary serves, no new one is asked
        if story_id in self._tasks or (
            failed_at is not None and time.monotonic() < failed_at + self.limits.summary_retry_s
        ):
            return
        task = asyncio.create_task(self._summarise(channel, story_id, upto), name=f"summary-{story_id}")
        self._tasks[story_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(story_id, None))

    def writing(self, story_id: int) -> bool:
        return story_id in self._tasks

    async def idle(self) -> None:
        """Wait until no summary is being written."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def aclose(self) -> None:
        """Stop the summaries being written (each is asked again when its story next overflows)."""
        for task in list(self._tasks.values()):
            task.cancel()
        await self.idle()

    async def _summarise(self, channel: Channel, story_id: int, upto: int) -> None:
        async with self.scheduler.background():
            lease = f"summary:{story_id}"
            if not self.scheduler.leases.hold(lease):
                return  # another process writes it
            try:
                for _ in range(MAX_ROUNDS):
                    done = await self._round(channel, story_id, upto)
                    if done is None or done >= upto:
                        return
            finally:
                self.scheduler.leases.drop(lease)

    async def _round(self, channel: Channel, story_id: int, upto: int) -> int | None:
        """One summary request; returns the position it reached, or None when there is nothing to do or
        it failed (the failure is recorded, and a retry waits `summary_retry_s`)."""
        passages = self.store.passages(story_id)
        previous = summaries.current(self.store.summaries(story_id), passages)
        todo = [p for p in passages if (previous.upto_position if previous else 0) < p.position <= upto]
        if not todo:
            return None
        model = self.limits.summary_model or self.model_of(channel, story_id)
        summary_id = None
        try:
            info = await self.backend.model_info(model)
            num_predict = serving.num_predict(self.limits.summary_words)
            options = self.limits.request_options(info, num_predict)
            todo = self._input(todo, previous, options["num_ctx"] - num_predict - TEMPLATE_MARGIN)
            text = self._prompt(previous, todo)
            request = summaries.summary_request(text, info.template, info.system)
            summary_id = self._begin(story_id, passages, todo, previous, model)
            timeout = self.limits.summary_timeout
            output = await asyncio.wait_for(collect(self.backend, model, request, options), timeout)
            result = summaries.clean_summary(output)
            if not result:
                raise EmptyAnswer(f"the model {model!r} answered with an empty summary")
        except asyncio.CancelledError:
            if summary_id is not None:
                self.store.fail_summary(summary_id, "set aside for a passage that needed the server")
            raise
        except Exception as exc:  # a background job: record it, keep the story usable, retry later
            message = _error_line(exc, self.limits.summary_timeout)
            if summary_id is None:
                summary_id = self._begin(story_id, passages, todo, previous, model)
            self.store.fail_summary(summary_id, message)
            self._failed_at[story_id] = time.monotonic()
            log.warning("story %s: summary failed: %s", story_id, message)
            return None
        self._failed_at.pop(story_id, None)
        return todo[-1].position if self.store.finish_summary(summary_id, result) else None

    def _prompt(self, previous: Summary | None, todo: Sequence[Passage]) -> str:
        text = previous.text if previous else None
        return summaries.summary_prompt(text, [p.text for p in todo], self.limits.summary_words)

    def _input(self, todo: list[Passage], previous: Summary | None, room: int) -> list[Passage]:
        """The oldest passages of `todo` that fit in one summary request (at least one)."""
        used, out = self.counter.count(self._prompt(previous, [])), list[Passage]()
        for p in todo:
            used += self.counter.count(p.text) + 1
            if out and used > room:
                break
            out.append(p)
        return out

    def _begin(
        self,
        story_id: int,
        passages: Sequence[Passage],
        todo: Sequence[Passage],
        previous: Summary | None,
        model: str,
    ) -> int:
        upto = todo[-1].position
        covered = [p for p in passages if p.position <= upto]
        owner = self.scheduler.leases.owner
        return self.store.begin_summary(
            story_id, upto, covered, previous.id if previous else None, model, owner
        )


def _error_line(exc: BaseException, timeout: float) -> str:
    """What a failed summary records (and `/story show --summary` shows)."""
    if isinstance(exc, TimeoutError):
        return f"the summary was not written within {timeout:g}s; it is tried again later"
    if isinstance(exc, LLMError | summaries.SummaryUnavailable):
        return str(exc)
    log.exception("summary failed", exc_info=exc)
    return f"the summary failed ({type(exc).__name__}: {exc}); it is tried again later"
