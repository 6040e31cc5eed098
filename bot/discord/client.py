"""The Discord client: slash commands and buttons in, the story service's answers out.

Everything Discord-specific lives in this folder; the story rules live in `bot/core`. The client sends
with no mentions allowed (model output never pings), needs no privileged intents, registers the
passage buttons once (they outlive restarts). Slash commands are synced only by `story-bot sync`, never
on start.

The client is discord.py's AutoShardedClient: by default one process runs every shard Discord recommends.
Several processes may share one database (PostgreSQL across machines), each on its own range of shards
(`shard_ids` of `shard_count`; Discord sends a guild's events to one shard): a process whose shards overlap
a live one's refuses to start (:class:`InUse`), since Discord would send each interaction to both. The
store's leases keep the rest safe between them.

Delivery: a passage whose final render Discord refused (discord.py gives up after five 429s) is rendered
again in the background with backoff until it lands, and the member who asked is told it is late. On
start, and every `sweep_every` seconds after, the client fails generations whose owner is gone (a dead
process, or one whose lease lapsed; never a live process's) and delivers every finished generation whose
messages are still owed their final state and that no live process is delivering, from the store.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import Sequence
from typing import Any

import aiohttp
import discord
from discord import app_commands

from contract.store.status import DeliveryState

from ..core.ratelimit import MemberRateLimit, SlidingWindow
from ..core.service import StoryError, StoryService
from ..core.story import Channel, Member
from ..store.repository import gateway_key
from . import stream
from .stream import PassageStream, Poster, deliver, parse_ref, send_text, shown
from .views import DYNAMIC_ITEMS, passage_view

_log = logging.getLogger(__name__)
LATE = (
    "⏳ Discord is holding back the bot's messages: your passage is saved, and it will show here in full "
    "as soon as Discord lets it through."
)


class StoryTree(app_commands.CommandTree):
    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        original = getattr(error, "original", error)
        _log.error(
            "/%s failed", interaction.command and interaction.command.qualified_name, exc_info=original
        )
        await answer(interaction, "something went wrong on the bot's side; the story is unchanged: try again")


class InUse(RuntimeError):
    """Another live bot process on this database receives the same Discord events."""


def in_use_message(holder: str, shards: Sequence[int], shard_count: int, db: str, lease_s: float) -> str:
    host, pid, _ = holder.rsplit(":", 2)
    ids = gateway_key(shards, shard_count).rsplit(":", 1)[1]
    what = "its events" if shard_count == 1 else f"shards {ids} of {shard_count} of its events"
    return (
        f"another story-bot process (pid {pid} on {host.split('/')[0]}) already receives this bot's "
        f"Discord events on {db} (the one you start would take {what}): Discord would send every command "
        "to both and both would act on it. Stop that process first (one that died on another machine "
        f"lets go within {lease_s:g} s), or run each process on its own shards (STORY_BOT_SHARDS, or "
        "STORY_BOT_SHARD_ID, and STORY_BOT_SHARD_COUNT, the same count for all)"
    )


class StoryBot(discord.AutoShardedClient):
    def __init__(
        self,
        service: StoryService | None,
        *,
        shard_ids: Sequence[int] | None = None,
        shard_count: int | None = None,
        shard_id: int | None = None,  # one shard: shard_ids=[shard_id]
        edit_interval: float = 1.0,
        commands_per_minute: int = 10,
        recover: bool = True,
        token_lifetime: float = stream.TOKEN_LIFETIME,
        channel_budget: tuple[int, float] = (5, 5.25),
        redeliver_backoff: tuple[float, float] = (1.0, 60.0),
        sweep_every: float | None = None,
        **client_options: Any,
    ):
        intents = discord.Intents.none()
        intents.guilds = True  # channels and threads (a thread's parent picks its model); no message content
        if shard_id is not None:
            shard_ids = [shard_id]
        if shard_ids is not None:
            client_options["shard_ids"] = list(shard_ids)
        super().__init__(
            intents=intents, allowed_mentions=discord.AllowedMentions.none(), shard_count=shard_count,
            **client_options,
        )  # fmt: skip
        self._service = service
        self.edit_interval = edit_interval
        self.token_lifetime = token_lifetime
        self.limiter = MemberRateLimit(commands_per_minute)
        self.channel_budget = channel_budget
        self._windows: dict[int, SlidingWindow] = {}
        self.do_recover = recover
        self.recovery: asyncio.Task | None = None
        self.redeliver_backoff = redeliver_backoff  # first and longest wait between delivery attempts
        self.sweep_every = sweep_every  # default: the service's lease length
        self._sweeper: asyncio.Task | None = None
        self._active: set[asyncio.Task] = set()
        self._showing: dict[asyncio.Task, PassageStream] = {}
        self._deliveries: dict[int, asyncio.Task] = {}  # generation id -> its delivery in the background
        self.tree = StoryTree(self)
        from .commands import add_commands

        add_commands(self.tree)

    @property
    def service(self) -> StoryService:
        if self._service is None:
            raise RuntimeError("this client was made to sync commands only")
        return self._service

    async def setup_hook(self) -> None:
        """After login, before the gateway: take this process's shard of the events (or refuse), register
        the buttons, start recovery and the delivery sweep."""
        if self._service is not None:
            shards, count = self.shards_held()
            holder = self.service.hold_gateway(shards, count)
            if holder is not None:
                path, lease_s = self.service.store.path, self.service.limits.lease_s
                raise InUse(in_use_message(holder, shards, count, path, lease_s))
        self.add_dynamic_items(*DYNAMIC_ITEMS)
        if self.do_recover:
            self.recovery = asyncio.create_task(self._recover())
            self._sweeper = asyncio.create_task(self._sweep())

    def shards_held(self) -> tuple[list[int], int]:
        """(this process's shards, the shard count); ([0], 1) stands for all of them when Discord picks
        the count (it may pick another one on the next start)."""
        if self.shard_count is None:
            return [0], 1
        return list(self.shard_ids or range(self.shard_count)), self.shard_count

    async def close(self) -> None:
        """Passages still being written are stopped and their messages say so before we disconnect;
        summaries being written in the background are stopped (retried when the story next overflows)."""
        for task in self._active:
            task.cancel()
        if self._active:
            await asyncio.wait(self._active, timeout=5)
        background = [t for t in (self._sweeper, self.recovery, *self._deliveries.values()) if t]
        for task in background:  # an unfinished delivery is taken over by the next start
            task.cancel()
        if background:
            await asyncio.wait(background, timeout=5)
        if self._service is not None:
            await self._service.aclose()
        await super().close()

    # --- delivery and recovery -----------------------------------------------------------------------
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
        busy = set(self._deliveries) | {s.generation_id for s in self._showing.values()}
        started = []
        for gen in self.service.undelivered():
            if gen in busy or not self.service.claim_delivery(gen):
                continue
            d = self.service.delivery(gen)
            poster = Poster(self, None, None, channel_id=parse_ref(d.message_ref if d else None)[0])
            started.append(self._redeliver(gen, poster, {}, None, first_wait=0.0))
        return started

    def _redeliver(
        self, gen: int, poster: Poster, known: dict[int, str], late: discord.Interaction | None,
        first_wait: float,
    ) -> asyncio.Task:  # fmt: skip
        work = self._delivery(gen, poster, known, late, first_wait)
        task = asyncio.create_task(work, name=f"deliver-{gen}")
        self._deliveries[gen] = task
        task.add_done_callback(lambda _: self._deliveries.pop(gen, None))
        return task

    async def _delivery(
        self, gen: int, poster: Poster, known: dict[int, str], late: discord.Interaction | None,
        wait: float,
    ) -> None:  # fmt: skip
        """Deliver a generation's final state until Discord takes it, backing off between attempts; the
        member in `late` is told once (privately) that the passage is late."""
        first, longest = self.redeliver_backoff
        for attempt in itertools.count(1):
            if late is not None and not poster.expired:
                late = None if await self._tell_late(late) else late
            await asyncio.sleep(wait)
            try:
                await deliver(self, gen, poster, known)
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

    # --- helpers -------------------------------------------------------------------------------------
    def window(self, channel_id: int) -> SlidingWindow:
        """The channel's shared budget of public sends and edits."""
        win = self._windows.get(channel_id)
        if win is None:
            if len(self._windows) > 1000:
                self._windows = {k: w for k, w in self._windows.items() if not w.idle()}
            win = self._windows[channel_id] = SlidingWindow(*self.channel_budget)
        return win

    async def admit(self, interaction: discord.Interaction) -> bool:
        """The per-member flood guard: False (after telling them) when they must wait."""
        wait = self.limiter.take(str(interaction.user.id))
        if wait > 0:
            await answer(interaction, f"slow down: try again in {math.ceil(wait)} s")
            return False
        return True

    async def stream(
        self, interaction: discord.Interaction, events, deferred_id: int | None
    ) -> PassageStream:
        poster = Poster(self, interaction, deferred_id)
        shower = PassageStream(self, poster, self.edit_interval)
        task = asyncio.current_task()
        self._active.add(task)  # type: ignore[arg-type]
        self._showing[task] = shower  # type: ignore[index]
        try:
            await shower.run(events)
        finally:
            self._active.discard(task)  # type: ignore[arg-type]
            self._showing.pop(task, None)  # type: ignore[arg-type]
            gen = shower.generation_id
            if gen is not None and not shower.owed:
                self.service.delivered(gen)
            elif gen is not None and (shower.final or shower.failure) and not task.cancelling():
                known = {p.id: p.content for p in shower.parts if not p.has_view}
                self._redeliver(gen, poster, known, interaction, self.redeliver_backoff[0])
            elif gen is not None:  # shutting down: the next start delivers it
                self.service.release_delivery(gen)
        return shower

    # --- button actions (called by views.py) ----------------------------------------------------------
    async def rate(self, interaction: discord.Interaction, generation_id: int, value: int) -> None:
        if not await self.admit(interaction):
            return
        try:
            tally = self.service.rate(generation_id, member(interaction), value, str(interaction.channel_id))
        except StoryError as exc:
            await answer(interaction, str(exc))
            return
        # Update the counts on the message itself: the rater sees them change, so no extra message.
        self.window(interaction.channel_id or 0).note()
        await interaction.response.edit_message(view=passage_view(generation_id, tally.up, tally.down))

    async def regenerate(self, interaction: discord.Interaction, generation_id: int) -> None:
        if not await self.admit(interaction):
            return
        await interaction.response.defer()  # no "thinking" message: the new take is a new message
        events = self.service.regenerate(channel(interaction), member(interaction), generation_id)
        await self.stream(interaction, events, None)
        # The old take stays in the database as an alternative; the store now owes its messages the
        # "replaced" state (no buttons), delivered like any other.
        if generation_id in self.service.undelivered() and self.service.claim_delivery(generation_id):
            poster = Poster(self, None, None, channel_id=interaction.channel_id)
            self._redeliver(generation_id, poster, {}, None, first_wait=0.0)

    async def show_reasoning(self, interaction: discord.Interaction, generation_id: int) -> None:
        if not await self.admit(interaction):
            return
        try:
            reasoning = self.service.reasoning(generation_id, str(interaction.channel_id))
        except StoryError as exc:
            await answer(interaction, str(exc))
            return
        await send_text(Poster(self, interaction, None, ephemeral=True), f"💭 {shown(reasoning)}")


def member(interaction: discord.Interaction) -> Member:
    return Member(str(interaction.user.id), interaction.user.display_name)


def channel(interaction: discord.Interaction) -> Channel:
    where = interaction.channel
    parent = getattr(where, "parent_id", None)  # threads
    return Channel(
        str(interaction.channel_id), str(interaction.guild_id) if interaction.guild_id else None,
        str(parent) if parent else None,
    )  # fmt: skip


async def answer(interaction: discord.Interaction, text: str, ephemeral: bool = True) -> None:
    """A short reply to whoever acted: the interaction's response, or a followup once answered. Member
    text it quotes may hold links: they do not unfurl."""
    text = shown(text)[:2000]
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=ephemeral, suppress_embeds=True)
    else:
        await interaction.response.send_message(text, ephemeral=ephemeral, suppress_embeds=True)


async def sync_commands(token: str, guild_id: int | None = None) -> list[str]:
    """Log in, register the slash commands (in one guild: instant; globally: up to an hour), log out."""
    bot = StoryBot(None, recover=False)
    async with bot:
        await bot.login(token)
        guild = discord.Object(guild_id) if guild_id else None
        if guild:
            bot.tree.copy_global_to(guild=guild)
        synced = await bot.tree.sync(guild=guild)
    return sorted(c.name for c in synced)
