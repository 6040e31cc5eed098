"""The Discord bot: one process's connection to Discord, serving the story cog.

Everything Discord-specific lives in this folder; the story rules live in `bot/core`. Modules import
downward only: client -> cog (commands, buttons' actions, the guard) -> delivery -> stream -> views.
The bot sends with no mentions allowed (model output never pings), needs no privileged intents,
registers the passage buttons once (they outlive restarts). Slash commands are synced only by
`story-bot sync`, never on start.

The bot is discord.py's AutoShardedBot: by default one process runs every shard Discord recommends.
Several processes may share one database (PostgreSQL across machines), each on its own range of shards
(`shard_ids` of `shard_count`; Discord sends a guild's events to one shard): a process whose shards overlap
a live one's refuses to start (:class:`InUse`), since Discord would send each interaction to both. The
store's leases keep the rest safe between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from ..core.ratelimit import Pace
from ..core.service import StoryService
from ..store.leases import gateway_key
from . import stream
from .cog import StoryCog
from .delivery import Deliveries
from .stream import Pacing
from .views import DYNAMIC_ITEMS


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


class StoryTree(app_commands.CommandTree["StoryBot"]):
    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """Every command's failure (and the tree's own: an unknown command) gets the story cog's reply."""
        await self.client.story.failed(interaction, error)


class StoryBot(commands.AutoShardedBot):
    """`StoryBot(None)` only registers the commands (`story-bot sync`)."""

    def __init__(
        self,
        service: StoryService | None,
        *,
        shard_ids: Sequence[int] | None = None,
        shard_count: int | None = None,
        shard_id: int | None = None,  # one shard: shard_ids=[shard_id]
        edit_interval: float = Pace.edit_interval,
        commands_per_minute: int = Pace.commands_per_minute,
        settings_role: str | None = None,
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
            command_prefix=commands.when_mentioned,
            help_command=None,
            tree_cls=StoryTree,
            intents=intents,
            allowed_mentions=discord.AllowedMentions.none(),
            shard_count=shard_count,
            **client_options,
        )
        pacing = Pacing(edit_interval, token_lifetime, channel_budget)
        deliveries = None
        if service is not None:
            deliveries = Deliveries(self, service, pacing, redeliver_backoff, sweep_every)
        self.story = StoryCog(deliveries, commands_per_minute, settings_role)
        self._service, self.do_recover = service, recover

    async def setup_hook(self) -> None:
        """After login, before the gateway: the story cog (closing the bot closes it from here on), this
        process's shard of the events (or refuse), the buttons, then recovery and the delivery sweep."""
        await self.add_cog(self.story)
        self.add_dynamic_items(*DYNAMIC_ITEMS)
        service = self._service
        if service is None:  # only syncing commands
            return
        shards, count = self.shards_held()
        holder = service.hold_gateway(shards, count)
        if holder is not None:
            raise InUse(in_use_message(holder, shards, count, service.store.path, service.limits.lease_s))
        if self.do_recover:
            self.story.deliveries.start()

    def shards_held(self) -> tuple[list[int], int]:
        """(this process's shards, the shard count); ([0], 1) stands for all of them when Discord picks
        the count (it may pick another one on the next start)."""
        if self.shard_count is None:
            return [0], 1
        return list(self.shard_ids or range(self.shard_count)), self.shard_count


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
