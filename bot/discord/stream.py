"""A generation's events, shown in Discord: queued notice, streamed text, final passage with buttons.

Pacing, as Discord wants it: one edit in flight (EditThrottle, newest text wins), each message edited at
most once per `interval` (counted from when the previous edit *finished*, so network jitter cannot bring
two edits closer), and every public send/edit in a channel through that channel's 5-per-5-s window.
Passing text never waits for that window (it is skipped, and keeps a slot spare), so the final text
never queues behind it.
Text past 2000 characters continues in further messages, cut at paragraphs or sentences.

An interaction's webhook token lives 15 minutes: after `token_lifetime` the stream edits and sends
through the channel instead (the bot's own messages, so it may).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord

from ..core import text as texts
from ..core.ratelimit import SlidingWindow
from ..core.service import Delta, Done, Event, Failed, Queued, Started
from ..core.throttle import EditThrottle
from .views import passage_view

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .client import StoryBot

_log = logging.getLogger(__name__)

PART_LIMIT = 1900  # a part of a passage, leaving room for the footer line and the cursor
CURSOR = " ▌"
TOKEN_LIFETIME = 14 * 60.0  # Discord's 15 minutes, less a margin
STOPPED = "the bot stopped while the model was writing this passage; nothing was added: ask again"


def shown(text: str) -> str:
    """Model or member text as a channel shows it: no pings, no code fence swallowing what follows."""
    return texts.defuse_mentions(text.replace("```", "`\u200b``"))


def split(text: str, limit: int = PART_LIMIT) -> list[str]:
    return texts.split_message(text, limit) or [""]


@dataclass
class Part:
    id: int
    content: str
    done_at: float = -float("inf")  # when its latest send/edit finished
    has_view: bool = False


class Poster:
    """Sends and edits the messages of one interaction: its webhook while the token lives, else the
    channel. `deferred_id` is the "thinking…" message of a type-5 defer, which the first send fills."""

    def __init__(
        self,
        bot: StoryBot,
        interaction: discord.Interaction,
        deferred_id: int | None,
        ephemeral: bool = False,
    ):
        self.bot, self.interaction = bot, interaction
        self.deferred_id, self.ephemeral = deferred_id, ephemeral
        self.channel_id = interaction.channel_id or 0
        self.window: SlidingWindow | None = None if ephemeral else bot.window(self.channel_id)
        age = (discord.utils.utcnow() - interaction.created_at).total_seconds()
        self.expires = time.monotonic() + bot.token_lifetime - max(0.0, age)
        self.requests = 0
        self.paced = 0.0  # seconds spent waiting for the channel's window
        if deferred_id is not None and self.window is not None:
            self.window.note()  # the "thinking…" message was a send

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.expires

    async def _slot(self, spare: int) -> None:
        if self.window is not None:
            wait = self.window.reserve(spare)
            if wait > 0:
                self.paced += wait
                await asyncio.sleep(wait)
        self.requests += 1

    async def send(self, content: str, view: discord.ui.View | None = None, spare: int = 0) -> int:
        """A new message (or the deferred one filled in); returns its id."""
        kw = {"view": view} if view is not None else {}
        if not self.interaction.response.is_done():  # answer the interaction with this message
            if self.window is not None:
                self.window.note()
            self.requests += 1
            sent = await self.interaction.response.send_message(content, ephemeral=self.ephemeral, **kw)
            return sent.message_id
        if self.deferred_id is not None:
            mid, self.deferred_id = self.deferred_id, None
            await self.edit(mid, content, view, spare)  # the "thinking…" message gets its first content
            return mid
        await self._slot(spare)
        if self.expired:
            return (await self._channel().send(content, **kw)).id
        sent = await self.interaction.followup.send(content, wait=True, ephemeral=self.ephemeral, **kw)
        return sent.id

    async def edit(
        self, message_id: int, content: str, view: discord.ui.View | None = None, spare: int = 0
    ) -> None:
        kw = {"view": view} if view is not None else {}
        await self._slot(spare)
        if self.expired:
            await self._channel().get_partial_message(message_id).edit(content=content, **kw)
        else:
            await self.interaction.followup.edit_message(message_id, content=content, **kw)

    async def delete(self, message_id: int) -> None:
        self.requests += 1
        if self.expired:
            await self._channel().get_partial_message(message_id).delete()
        else:
            await self.interaction.followup.delete_message(message_id)

    def _channel(self) -> discord.PartialMessageable:
        return self.bot.get_partial_messageable(self.channel_id)


class PassageStream:
    """Shows one generation. `run(events)` returns the finished generation id, or None."""

    def __init__(self, bot: StoryBot, poster: Poster, interval: float):
        self.bot, self.poster, self.interval = bot, poster, interval
        self.parts: list[Part] = []
        self.generation_id: int | None = None
        self.final: tuple[str, discord.ui.View] | None = None
        self.failure: str | None = None
        self.pacing_wait = 0.0  # seconds from Done to the final text shown, less its requests' own time
        self._final_requests = 0.0
        self.done_at: float | None = None  # when the service said Done, and when Discord had it all
        self.shown_at: float | None = None

    async def run(self, events: AsyncIterator[Event]) -> int | None:
        throttle = EditThrottle(self._render, interval=self.interval)
        result = None
        try:
            async for event in events:
                match event:
                    case Queued(position, waiting_for):
                        what = "another passage of this story" if waiting_for == "story" else "a free model"
                        throttle.update(f"⏳ Queued: {position} ahead (waiting for {what}).")
                    case Started(generation_id, model):
                        self.generation_id = generation_id
                        throttle.update(f"✍️ *{shown(model)} is writing…*")
                        self._attach()
                    case Delta(answer):
                        throttle.update(shown(answer) + CURSOR if answer else "💭 *thinking…*")
                    case Done(passage, generation_id):
                        self.done_at = time.monotonic()
                        take = f" · take {passage.alternatives}" if passage.alternatives > 1 else ""
                        footer = (f"\n-# passage {passage.position} · by the model, asked by "
                                  f"{shown(passage.author_name)}{take}")  # fmt: skip
                        text = shown(passage.text) + footer
                        self.final = (text, passage_view(generation_id))
                        await throttle.close(text)
                        self.shown_at = time.monotonic()
                        self.pacing_wait = self.shown_at - self.done_at - self._final_requests
                        result = generation_id
                    case Failed(message):
                        self.failure = f"⚠️ {shown(message)}"[:2000]
                        await throttle.close(self.failure)
        except asyncio.CancelledError:  # the bot is shutting down: the service marked it failed
            self.failure = f"⚠️ {STOPPED}"
            try:
                await throttle.close(self.failure)
            except Exception as exc:  # the connection may already be going
                _log.warning("could not mark a stopped passage: %s", exc)
            raise
        finally:
            await throttle.close()
        for error in throttle.errors:
            _log.warning("a streaming edit failed: %s", error)
        return result

    def _attach(self) -> None:
        if self.generation_id is not None and self.parts:
            ref = f"{self.poster.channel_id}:{','.join(str(p.id) for p in self.parts)}"
            self.bot.service.attach_message(self.generation_id, ref)

    async def _render(self, text: str) -> None:
        """Make the messages show `text` (split into parts); the final text gets the buttons."""
        final = self.final is not None and text == self.final[0]
        failure = text == self.failure
        if failure and not self.parts and self.poster.deferred_id is None:
            self.poster.ephemeral, self.poster.window = True, None  # nothing shown yet: tell only them
        pieces = [text] if failure else split(text)
        spare = 0 if final or failure else 1  # passing text leaves the channel room for the final one
        if spare and self.poster.window and self.poster.window.delay(spare):
            return  # the channel is busy: skip this passing text (newer text will come, or the final)
        in_requests, paced = 0.0, self.poster.paced
        for i, content in enumerate(pieces):
            view = self.final[1] if final and i == len(pieces) - 1 else None
            if i < len(self.parts):
                part = self.parts[i]
                if part.content == content and view is None and not part.has_view:
                    continue
                wait = part.done_at + self.interval - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                sent = time.monotonic()
                await self.poster.edit(part.id, content, view, spare)
                part.content, part.done_at, part.has_view = content, time.monotonic(), view is not None
                in_requests += part.done_at - sent
            else:
                sent = time.monotonic()
                mid = await self.poster.send(content, view, spare)
                self.parts.append(Part(mid, content, time.monotonic(), view is not None))
                in_requests += time.monotonic() - sent
                if self.generation_id is not None:
                    self._attach()
        while len(self.parts) > len(pieces):  # the text got shorter (a failure, or a revised parse)
            await self.poster.delete(self.parts.pop().id)
        if final:  # time in requests, less any wait for the channel's window (that is pacing)
            self._final_requests = in_requests - (self.poster.paced - paced)


async def send_text(
    poster: Poster, text: str, footer: str = "", view: discord.ui.View | None = None
) -> list[int]:
    """Post a (possibly long) text as consecutive messages; the footer goes under the last one."""
    pieces = split(text)
    pieces[-1] += footer
    return [await poster.send(p, view if i == len(pieces) - 1 else None) for i, p in enumerate(pieces)]
