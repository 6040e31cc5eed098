"""The Discord client: slash commands and buttons in, the story service's answers out.

Everything Discord-specific lives in this folder; the story rules live in `bot/core`. The client sends
with no mentions allowed (model output never pings), needs no privileged intents, registers the
passage buttons once (they outlive restarts), and on start marks the messages of generations a dead
process left running as failed. Slash commands are synced only by `story-bot sync`, never on start.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import discord
from discord import app_commands

from ..core.ratelimit import MemberRateLimit, SlidingWindow
from ..core.service import StoryError, StoryService
from ..core.story import Channel, Member
from ..store.repository import INTERRUPTED
from . import stream
from .stream import PassageStream, Poster, send_text, shown
from .views import DYNAMIC_ITEMS, passage_view

_log = logging.getLogger(__name__)


class StoryTree(app_commands.CommandTree):
    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        original = getattr(error, "original", error)
        _log.error(
            "/%s failed", interaction.command and interaction.command.qualified_name, exc_info=original
        )
        await answer(interaction, "something went wrong on the bot's side; the story is unchanged: try again")


class StoryBot(discord.Client):
    def __init__(
        self,
        service: StoryService | None,
        *,
        edit_interval: float = 1.0,
        commands_per_minute: int = 10,
        recover: bool = True,
        token_lifetime: float = stream.TOKEN_LIFETIME,
        channel_budget: tuple[int, float] = (5, 5.25),
        **client_options: Any,
    ):
        intents = discord.Intents.none()
        intents.guilds = True  # channels and threads (a thread's parent picks its model); no message content
        super().__init__(intents=intents, allowed_mentions=discord.AllowedMentions.none(), **client_options)
        self._service = service
        self.edit_interval = edit_interval
        self.token_lifetime = token_lifetime
        self.limiter = MemberRateLimit(commands_per_minute)
        self.channel_budget = channel_budget
        self._windows: dict[int, SlidingWindow] = {}
        self.do_recover = recover
        self.recovery: asyncio.Task | None = None
        self._active: set[asyncio.Task] = set()
        self.tree = StoryTree(self)
        from .commands import add_commands

        add_commands(self.tree)

    @property
    def service(self) -> StoryService:
        if self._service is None:
            raise RuntimeError("this client was made to sync commands only")
        return self._service

    async def setup_hook(self) -> None:
        self.add_dynamic_items(*DYNAMIC_ITEMS)
        if self.do_recover:
            self.recovery = asyncio.create_task(self._recover())

    async def close(self) -> None:
        """Passages still being written are stopped and their messages say so before we disconnect;
        summaries being written in the background are stopped (retried when the story next overflows)."""
        for task in self._active:
            task.cancel()
        if self._active:
            await asyncio.wait(self._active, timeout=5)
        if self._service is not None:
            await self._service.aclose()
        await super().close()

    async def _recover(self) -> None:
        """Generations left running by a dead process are failed now; say so where they were shown."""
        for lost in self.service.recover():
            if not lost.message_ref:
                continue
            channel_id, _, ids = lost.message_ref.partition(":")
            first, *rest = (int(i) for i in ids.split(","))
            channel = self.get_partial_messageable(int(channel_id))
            try:
                await channel.get_partial_message(first).edit(content=f"⚠️ {INTERRUPTED}", view=None)
                for mid in rest:
                    await channel.get_partial_message(mid).delete()
            except discord.HTTPException as exc:  # deleted meanwhile, or no access any more
                _log.warning("could not mark message %s as failed: %s", lost.message_ref, exc)

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
        try:
            await shower.run(events)
        finally:
            self._active.discard(task)  # type: ignore[arg-type]
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
        shower = await self.stream(interaction, events, None)
        if shower.shown_at is None or interaction.message is None:
            return
        # The old take stays in the database as an alternative; its message loses the buttons.
        body = interaction.message.content.rsplit("\n-# ", 1)[0]
        content = body[:1900] + "\n-# replaced by a regeneration (kept as an alternative)"
        try:
            await self.window(interaction.channel_id or 0).acquire()
            if shower.poster.expired:
                await interaction.message.edit(content=content, view=None)
            else:  # after a deferred update, the original response is the message the button is on
                await interaction.edit_original_response(content=content, view=None)
        except discord.HTTPException as exc:
            _log.warning("could not mark the replaced passage: %s", exc)

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
    """A short reply to whoever acted: the interaction's response, or a followup once answered."""
    text = shown(text)[:2000]
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=ephemeral)
    else:
        await interaction.response.send_message(text, ephemeral=ephemeral)


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
