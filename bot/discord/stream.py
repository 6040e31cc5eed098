"""A generation's events, shown in Discord: queued notice, streamed text, final passage with buttons.

Pacing, as Discord wants it: one edit in flight (EditThrottle, newest text wins), each message edited at
most once per `interval` (counted from when the previous edit *finished*, so network jitter cannot bring
two edits closer), and every public send/edit in a channel through that channel's 5-per-5-s window.
Passing text never waits for that window (it is skipped, and keeps a slot spare), so the final text
never queues behind it.
Text past 2000 characters continues in further messages, cut at paragraphs or sentences. Every message
is sent with embeds suppressed (links in model output do not unfurl); the deferred "thinking…" message,
which a webhook edit cannot flag, gets the flag with its second edit, made through the channel (its
first, through the webhook, shows a status line: "writing…" or "queued").

Delivery converges: the ids of a generation's messages are stored with it (`message_ref`) as they are
sent, and its final state (every part, the stored text, the buttons) is owed until one render of it
succeeds. When discord.py gives up (it retries a 429 five times, then raises), :func:`deliver` renders the
final state again from the store later — editing the messages that exist, sending the missing ones,
deleting extra ones — so any number of attempts leaves the same messages.

An interaction's webhook token lives 15 minutes: after `token_lifetime` the stream edits and sends
through the channel instead (the bot's own messages, so it may).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import discord
from discord.http import handle_message_parameters

from contract.store.status import Status

from ..core import text as texts
from ..core.messages import STOPPED
from ..core.ratelimit import Pace, SlidingWindow
from ..core.service import Delta, Done, Event, Failed, Queued, Started, StoryService
from ..core.throttle import EditThrottle
from ..store import Delivery
from .views import passage_view

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

_log = logging.getLogger(__name__)

PART_LIMIT = 1900  # a part of a passage, leaving room for the footer line and the cursor
CURSOR = " ▌"
TOKEN_LIFETIME = 14 * 60.0  # Discord's 15 minutes, less a margin
REPLACED = "\n-# replaced by a regeneration (kept as an alternative)"
KEEP: Any = discord.utils.MISSING  # an edit that leaves the message's buttons as they are


def shown(text: str) -> str:
    """Model or member text as a channel shows it: no pings, no code fence swallowing what follows."""
    return texts.defuse_mentions(text.replace("```", "`\u200b``"))


def split(text: str, limit: int = PART_LIMIT) -> list[str]:
    return texts.split_message(text, limit) or [""]


def passage_text(
    answer: str,
    position: int,
    asked_by: str,
    alternatives: int,
    take: int | None = None,
    edited: bool = False,
) -> str:
    """A model passage as its messages show it: the text, then the footer line (which take of how many,
    and whether the text is an edit)."""
    take = alternatives if take is None else take
    takes = f" · take {take}/{alternatives}" if alternatives > 1 else ""
    mark = " · edited" if edited else ""
    return f"{shown(answer)}\n-# passage {position} · by the model, asked by {shown(asked_by)}{takes}{mark}"


def member_text(text: str, position: int, author: str, edited: bool = False) -> tuple[str, str]:
    """A member's passage as its messages show it: the text and the footer line."""
    return shown(text), f"\n-# passage {position} by {shown(author)}" + (" · edited" if edited else "")


def failure_text(message: str) -> str:
    return f"⚠️ {shown(message)}"[: texts.MESSAGE_LIMIT]


def message_ref(channel_id: int, ids: list[int]) -> str:
    return f"{channel_id}:{','.join(str(i) for i in ids)}"


def parse_ref(ref: str | None) -> tuple[int, list[int]]:
    channel_id, _, ids = (ref or "0:").partition(":")
    return int(channel_id), [int(i) for i in ids.split(",") if i]


@dataclass
class Pacing:
    """How fast this bot talks to Discord: seconds between edits of a message, an interaction token's
    usable life, and each channel's shared budget of public sends and edits (`budget`: n per s)."""

    edit_interval: float = Pace.edit_interval
    token_lifetime: float = TOKEN_LIFETIME
    budget: tuple[int, float] = (5, 5.25)
    _windows: dict[int, SlidingWindow] = field(default_factory=dict, init=False, repr=False)

    def window(self, channel_id: int) -> SlidingWindow:
        """The channel's shared budget of public sends and edits."""
        win = self._windows.get(channel_id)
        if win is None:
            if len(self._windows) > 1000:
                self._windows = {k: w for k, w in self._windows.items() if not w.idle()}
            win = self._windows[channel_id] = SlidingWindow(*self.budget)
        return win


@dataclass
class Part:
    id: int
    content: str
    done_at: float = -float("inf")  # when its latest send/edit finished
    has_view: bool = False
    suppressed: bool = True  # sent with embeds suppressed (the deferred message is not, at first)


class Poster:
    """Sends and edits the messages of one interaction: its webhook while the token lives, else the
    channel. `deferred_id` is the "thinking…" message of a type-5 defer (the stream's first part).
    Without an interaction (a restart delivering what the last run could not), only the channel."""

    def __init__(
        self,
        client: discord.Client,
        pacing: Pacing,
        interaction: discord.Interaction | None,
        deferred_id: int | None,
        ephemeral: bool = False,
        channel_id: int | None = None,
    ):
        self.client, self.pacing, self.interaction = client, pacing, interaction
        self.deferred_id, self.ephemeral = deferred_id, ephemeral
        self.channel_id = channel_id or (interaction and interaction.channel_id) or 0
        self.window: SlidingWindow | None = None if ephemeral else pacing.window(self.channel_id)
        self.expires = -float("inf")
        if interaction is not None:
            age = (discord.utils.utcnow() - interaction.created_at).total_seconds()
            self.expires = time.monotonic() + pacing.token_lifetime - max(0.0, age)
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
        """A new message (the interaction's response, if not answered yet); returns its id."""
        kw: dict[str, Any] = {"view": view} if view is not None else {}
        kw["suppress_embeds"] = True
        it = self.interaction
        if it is not None and not it.response.is_done():  # answer the interaction with this message
            if self.window is not None:
                self.window.note()
            self.requests += 1
            response = await it.response.send_message(content, ephemeral=self.ephemeral, **kw)
            assert response.message_id is not None  # a message response always names its message
            return response.message_id
        await self._slot(spare)
        if self.expired or it is None:
            return (await self._channel().send(content, **kw)).id
        sent = await it.followup.send(content, wait=True, ephemeral=self.ephemeral, **kw)
        return sent.id

    async def edit(
        self,
        message_id: int,
        content: str,
        view: discord.ui.View | None = KEEP,
        spare: int = 0,
        suppress: bool = False,
    ) -> None:
        """Edit a message; `view=None` takes its buttons off. `suppress`: also flag its embeds suppressed,
        which only the channel's edit can (a webhook edit carries no flags)."""
        await self._slot(spare)
        if self.expired or self.interaction is None or (suppress and not self.ephemeral):
            flags = discord.MessageFlags(suppress_embeds=True)  # fresh: the helper may add to it
            params = handle_message_parameters(
                content=content, view=view, flags=flags, allowed_mentions=self.client.allowed_mentions
            )
            with params:
                await self.client.http.edit_message(self.channel_id, message_id, params=params)
            return
        await self.interaction.followup.edit_message(message_id, content=content, view=view)

    async def delete(self, message_id: int) -> None:
        self.requests += 1
        try:
            if self.expired or self.interaction is None:
                await self._channel().get_partial_message(message_id).delete()
            else:
                await self.interaction.followup.delete_message(message_id)
        except discord.NotFound:  # gone already: what we wanted
            pass

    def _channel(self) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(self.channel_id)


class PassageStream:
    """Shows one generation. `run(events)` returns the finished generation id, or None.

    Afterwards `owed` says whether its messages still lack the final state (a failed render): the
    deliveries (delivery.py) then deliver it again in the background."""

    def __init__(self, service: StoryService, poster: Poster):
        self.service, self.poster, self.interval = service, poster, poster.pacing.edit_interval
        self.parts: list[Part] = []
        if poster.deferred_id is not None:  # the "thinking…" message is the first part, from the start
            self.parts.append(Part(poster.deferred_id, "", suppressed=False))
            poster.deferred_id = None
        self.generation_id: int | None = None
        self.final: tuple[str, discord.ui.View] | None = None
        self.failure: str | None = None
        self.delivered = False  # the final text (or failure) went through whole
        self.pacing_wait = 0.0  # seconds from Done to the final text shown, less its requests' own time
        self._final_requests = 0.0
        self.done_at: float | None = None  # when the service said Done, and when Discord had it all
        self.shown_at: float | None = None

    @property
    def owed(self) -> bool:
        """A generation whose messages do not show its end (the final render failed, or never ran)."""
        return self.generation_id is not None and not self.delivered

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
                        self.service.claim_delivery(generation_id)  # a new generation: always ours
                        throttle.update(f"✍️ *{shown(model)} is writing…*")
                        self._attach()
                    case Delta(answer):
                        throttle.update(shown(answer) + CURSOR if answer else "💭 *thinking…*")
                    case Done(passage, generation_id):
                        self.done_at = time.monotonic()
                        text = passage_text(
                            passage.text,
                            passage.position,
                            passage.author_name,
                            passage.alternatives,
                            passage.take,
                            passage.edited,
                        )
                        takes = self.service.take_ids(passage.id)
                        self.final = (text, passage_view(generation_id, takes=takes))
                        await throttle.close(text)
                        if self.delivered:
                            self.shown_at = time.monotonic()
                            self.pacing_wait = self.shown_at - self.done_at - self._final_requests
                        result = generation_id
                    case Failed(message):
                        self.failure = failure_text(message)
                        await throttle.close(self.failure)
        except asyncio.CancelledError:  # the bot is shutting down: the service marked it failed
            if self.final is not None:  # unless it was done already: then it is in the story
                raise
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
        """Store the messages' ids with the generation (none yet is fine: a delivery sends them all)."""
        if self.generation_id is not None and not self.poster.ephemeral:
            ref = message_ref(self.poster.channel_id, [p.id for p in self.parts])
            self.service.attach_message(self.generation_id, ref)

    async def _render(self, text: str) -> None:
        """Make the messages show `text` (split into parts); the final text gets the buttons."""
        final_view = self.final[1] if self.final is not None and text == self.final[0] else None
        final = final_view is not None
        failure = text == self.failure
        if failure and not self.parts:
            self.poster.ephemeral, self.poster.window = True, None  # nothing shown yet: tell only them
        pieces = [text] if failure else split(text)
        spare = 0 if final or failure else 1  # passing text leaves the channel room for the final one
        if spare and self.poster.window and self.poster.window.delay(spare):
            return  # the channel is busy: skip this passing text (newer text will come, or the final)
        in_requests, paced = 0.0, self.poster.paced
        for i, content in enumerate(pieces):
            view = final_view if i == len(pieces) - 1 else None
            if i < len(self.parts):
                part = self.parts[i]
                if part.content == content and view is None and not part.has_view:
                    continue
                wait = part.done_at + self.interval - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                sent = time.monotonic()
                keep = view if view is not None else KEEP
                # The deferred message: its first fill through the webhook (that ends its loading
                # state), and the next edit through the channel, which flags its embeds suppressed.
                flag = not part.suppressed and part.done_at > -float("inf")
                await self.poster.edit(part.id, content, keep, spare, suppress=flag)
                part.content, part.done_at, part.has_view = content, time.monotonic(), view is not None
                part.suppressed = part.suppressed or flag
                in_requests += part.done_at - sent
            else:
                sent = time.monotonic()
                mid = await self.poster.send(content, view, spare)
                self.parts.append(Part(mid, content, time.monotonic(), view is not None))
                in_requests += time.monotonic() - sent
                self._attach()
        while len(self.parts) > len(pieces):  # the text got shorter (a failure, or a revised parse)
            await self.poster.delete(self.parts[-1].id)
            self.parts.pop()
            self._attach()
        if final or failure:
            self.delivered = True
        if final:  # time in requests, less any wait for the channel's window (that is pacing)
            self._final_requests = in_requests - (self.poster.paced - paced)


def final_pieces(d: Delivery, tally: tuple[int, int]) -> tuple[list[str], discord.ui.View | None]:
    """What a generation's messages show once it is over: the parts, and the buttons of the last one."""
    if d.status != Status.DONE:
        return [failure_text(d.text)], None
    if not d.current:  # a regeneration replaced it: the text stays, the buttons go
        return split(shown(d.text) + REPLACED), None
    text = passage_text(d.text, d.position or 0, d.asked_by or "", d.alternatives, d.take, d.edited)
    return split(text), passage_view(d.shown_id or d.generation_id, *tally, takes=d.takes)


async def deliver(service: StoryService, generation_id: int, poster: Poster, known: dict[int, str]) -> None:
    """Make a finished generation's messages show its final state, from the store: edit the messages
    that exist, send the missing ones (their ids stored at once, so a retry never sends one twice),
    delete extra ones. `known` (message id -> content shown) skips edits that would change nothing;
    it is kept up to date. Raises discord's HTTPException when Discord refuses; calling again resumes."""
    d = service.delivery(generation_id)
    if d is None or not d.message_ref:
        return
    channel_id, ids = parse_ref(d.message_ref)
    pieces, view = final_pieces(d, service.tally(d.shown_id or generation_id))
    await render(
        poster,
        ids,
        pieces,
        view,
        known,
        lambda ids: service.attach_message(generation_id, message_ref(channel_id, ids)),
    )


async def render(
    poster: Poster,
    ids: list[int],
    pieces: list[str],
    view: discord.ui.View | None,
    known: dict[int, str],
    store_ids: Callable[[list[int]], None],
) -> None:
    """Make the messages `ids` show `pieces` (the buttons under the last): edit those that exist, send the
    missing ones (`store_ids` keeps their ids at once, so a retry never sends one twice), delete extras."""
    for i, content in enumerate(pieces):
        last = view if i == len(pieces) - 1 else None
        if i < len(ids):
            if known.get(ids[i]) == content and last is None:
                continue
            # Buttons off every part but the last; the first part may be the unflagged deferred message.
            await poster.edit(ids[i], content, last, suppress=i == 0)
        else:
            ids.append(await poster.send(content, last))
            store_ids(ids)
        known[ids[i]] = content
    for mid in ids[len(pieces) :]:
        await poster.delete(mid)
    if len(ids) > len(pieces):
        store_ids(ids[: len(pieces)])


async def send_text(
    poster: Poster, text: str, footer: str = "", view: discord.ui.View | None = None
) -> list[int]:
    """Post a (possibly long) text as consecutive messages; the footer goes under the last one."""
    pieces = split(text)
    pieces[-1] += footer
    return [await poster.send(p, view if i == len(pieces) - 1 else None) for i, p in enumerate(pieces)]
