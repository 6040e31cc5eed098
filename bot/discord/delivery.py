"""Passages that land: shown as they are written, delivered again until Discord takes their final state.

A passage whose final render Discord refused (discord.py gives up after five 429s) is rendered again in
the background with backoff until it lands, and the member who asked is told it is late. On start, and
every `sweep_every` seconds after, generations whose owner is gone (a dead process, or one whose lease
lapsed; never a live process's) are failed, and every finished generation whose messages are still owed
their final state and that no live process is delivering is delivered, from the store.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator

import aiohttp
import discord

from contract.store.status import DeliveryState

from ..core.service import Event, StoryService
from .stream import Pacing, PassageStream, Poster, deliver, parse_ref

_log = logging.getLogger(__name__)
LATE = (
    "⏳ Discord is holding back the bot's messages: your passage is saved, and it will show here in full "
    "as soon as Discord lets it through."
)


class Deliveries:
    """The passages this process is showing, and those it is delivering in the background."""

    def __init__(
        self,
        client: discord.Client,
        service: StoryService,
        pacing: Pacing,
        backoff: tuple[float, float] = (1.0, 60.0),
        sweep_every: float | None = None,
    ):
        self.client, self.service, self.pacing = client, service, pacing
        self.backoff = backoff  # first and longest wait between delivery attempts
        self.sweep_every = sweep_every  # default: the service's lease length
        self.recovery: asyncio.Task | None = None
        self._sweeper: asyncio.Task | None = None
        self._showing: dict[asyncio.Task, PassageStream] = {}
        self._background: dict[int, asyncio.Task] = {}  # generation id -> its delivery in the background

    def poster(
        self,
        interaction: discord.Interaction | None,
        deferred_id: int | None = None,
        ephemeral: bool = False,
        channel_id: int | None = None,
    ) -> Poster:
        return Poster(self.client, self.pacing, interaction, deferred_id, ephemeral, channel_id)

    async def show(
        self, interaction: discord.Interaction, events: AsyncIterator[Event], deferred_id: int | None
    ) -> PassageStream:
        """Stream a generation's events into the channel; a final render that failed is delivered
        again in the background (the member told it is late)."""
        poster = self.poster(interaction, deferred_id)
        shower = PassageStream(self.service, poster)
        task = asyncio.current_task()
        assert task is not None
        self._showing[task] = shower
        try:
            await shower.run(events)
        finally:
            self._showing.pop(task, None)
            gen = shower.generation_id
            if gen is not None and not shower.owed:
                self.service.delivered(gen)
            elif gen is not None and (shower.final or shower.failure) and not task.cancelling():
                known = {p.id: p.content for p in shower.parts if not p.has_view}
                self.redeliver(gen, poster, known, interaction, self.backoff[0])
            elif gen is not None:  # shutting down: the next start delivers it
                self.service.release_delivery(gen)
        return shower

    def redeliver(
        self,
        gen: int,
        poster: Poster,
        known: dict[int, str] | None = None,
        late: discord.Interaction | None = None,
        first_wait: float = 0.0,
    ) -> asyncio.Task:
        work = self._deliver(gen, poster, known or {}, late, first_wait)
        task = asyncio.create_task(work, name=f"deliver-{gen}")
        self._background[gen] = task
        task.add_done_callback(lambda _: self._background.pop(gen, None))
        return task

    def start(self) -> None:
        """Recovery now (what the last run could not finish), and the sweep every `sweep_every` s."""
        self.recovery = asyncio.create_task(self._recover())
        self._sweeper = asyncio.create_task(self._sweep())

    async def close(self) -> None:
        """Passages still being written are stopped and their messages say so; an unfinished delivery
        is taken over by the next start."""
        showing = list(self._showing)
        for task in showing:
            task.cancel()
        if showing:
            await asyncio.wait(showing, timeout=5)
        background = [t for t in (self._sweeper, self.recovery, *self._background.values()) if t]
        for task in background:
            task.cancel()
        if background:
            await asyncio.wait(background, timeout=5)

    async def _recover(self) -> None:
        """On start: finish what the last run could not (its deliveries run to their end here)."""
        started = self._catch_up()
        if started:
            await asyncio.wait(started)

    async def _sweep(self) -> None:
        every = self.sweep_every or self.service.limits.lease_s
        while True:
            await asyncio.sleep(every)
            try:
                self._catch_up()
            except Exception:  # a locked database, say: the next sweep tries again
                _log.exception("the delivery sweep failed")

    def _catch_up(self) -> list[asyncio.Task]:
        """Fail generations whose owner is gone, then deliver every owed one nobody is delivering."""
        self.service.recover()
        return self.deliver_owed()

    def deliver_owed(self) -> list[asyncio.Task]:
        """Deliver, in the background, every finished generation owed its final state that nobody is
        delivering: a passage just edited, a take chosen, the take a regeneration replaced."""
        busy = set(self._background) | {s.generation_id for s in self._showing.values()}
        started = []
        for gen in self.service.undelivered():
            if gen in busy or not self.service.claim_delivery(gen):
                continue
            d = self.service.delivery(gen)
            channel_id = parse_ref(d.message_ref if d else None)[0]
            started.append(self.redeliver(gen, self.poster(None, channel_id=channel_id)))
        return started

    async def _deliver(
        self,
        gen: int,
        poster: Poster,
        known: dict[int, str],
        late: discord.Interaction | None,
        wait: float,
    ) -> None:
        """Deliver a generation's final state until Discord takes it, backing off between attempts; the
        member in `late` is told once (privately) that the passage is late."""
        first, longest = self.backoff
        for attempt in itertools.count(1):
            if late is not None and not poster.expired:
                late = None if await self._tell_late(late) else late
            await asyncio.sleep(wait)
            try:
                await deliver(self.service, gen, poster, known)
            except discord.HTTPException as exc:
                if exc.status != 429 and exc.status < 500:  # deleted, no access: it never will land
                    _log.warning("generation %s cannot be shown (%s): giving up", gen, exc)
                    self.service.delivered(gen, DeliveryState.LOST)
                    return
                _log.warning("delivery %s of generation %s refused: %s", attempt, gen, exc)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                _log.warning("delivery %s of generation %s failed: %s", attempt, gen, exc)
            else:
                self.service.delivered(gen)
                return
            wait = min(longest, max(first, wait * 2))

    async def _tell_late(self, interaction: discord.Interaction) -> bool:
        try:
            await interaction.followup.send(LATE, ephemeral=True)
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            _log.warning("could not tell the member their passage is late: %s", exc)
            return False
        return True
