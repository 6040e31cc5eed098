"""What the fake records: REST calls, messages and their revisions, interactions and what the bot
answered, syncs and protocol violations."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web

from .wire import attachment_payload, walk_components
from .world import EPHEMERAL, LINK, LOADING, SUPPRESS_EMBEDS, Channel, Guild, User, iso, wall_clock

if TYPE_CHECKING:
    from .fake import FakeDiscord


@dataclass
class Call:
    """One REST request as the fake received it."""

    t: float  # time.monotonic()
    method: str
    path: str  # without the /api/v10 prefix
    query: dict[str, str]
    body: Any
    files: list[str] = field(default_factory=list)  # attachment file names of a multipart request
    status: int = 0
    response: Any = None
    uploads: dict[str, bytes] = field(default_factory=dict)  # attachment file name -> its bytes


CALL = web.RequestKey("call", Call)


@dataclass
class Revision:
    """A message's state after its creation or one edit."""

    t: float
    content: str
    components: list
    embeds: list
    flags: int
    allowed_mentions: dict | None
    payload: dict  # the JSON body that made this revision


@dataclass
class Message:
    id: int
    channel_id: int
    guild_id: int | None
    author: User
    via: Literal["channel", "callback", "followup", "user"]
    interaction: Interaction | None = None
    reference: dict | None = None
    attachments: list[str] = field(default_factory=list)
    revisions: list[Revision] = field(default_factory=list)
    deleted: bool = False

    @property
    def created_at(self) -> float:
        return self.revisions[0].t

    @property
    def current(self) -> Revision:
        return self.revisions[-1]

    @property
    def content(self) -> str:
        return self.current.content

    @property
    def components(self) -> list:
        return self.current.components

    @property
    def flags(self) -> int:
        return self.current.flags

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & LOADING)

    @property
    def allowed_mentions(self) -> dict | None:
        return self.current.allowed_mentions

    @property
    def unfurled(self) -> list[str]:
        """The links Discord would turn into embeds: all of them, unless embeds are suppressed."""
        return [] if self.flags & SUPPRESS_EMBEDS else LINK.findall(self.content)

    @property
    def edits(self) -> list[Revision]:
        return self.revisions[1:]

    @property
    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in walk_components(self.components) if "custom_id" in c]

    def component(self, custom_id: str) -> dict | None:
        return next((c for c in walk_components(self.components) if c.get("custom_id") == custom_id), None)

    @property
    def pings(self) -> Pings:
        """Who any revision of this message would notify or highlight, given its allowed_mentions."""
        total = Pings()
        for rev in self.revisions:
            total |= pings_in(rev.content, rev.allowed_mentions)
        return total

    def payload(self, app_id: int) -> dict:
        rev = self.current
        pings = pings_in(rev.content, rev.allowed_mentions)
        data = {
            "id": str(self.id),
            "type": 20 if self.interaction and self.interaction.type == 2 else (19 if self.reference else 0),
            "channel_id": str(self.channel_id),
            "author": self.author.payload(),
            "content": rev.content,
            "timestamp": iso(wall_clock(self.created_at)),
            "edited_timestamp": iso(wall_clock(rev.t)) if len(self.revisions) > 1 else None,
            "tts": False,
            "mention_everyone": pings.everyone,
            "mentions": [
                {"id": str(u), "username": f"user{u}", "discriminator": "0", "avatar": None}
                for u in sorted(pings.users)
            ],
            "mention_roles": [str(r) for r in sorted(pings.roles)],
            "attachments": [attachment_payload(self.id, i, name) for i, name in enumerate(self.attachments)],
            "embeds": rev.embeds,
            "pinned": False,
            "flags": rev.flags,
            "components": rev.components,
        }
        if self.guild_id is not None:
            data["guild_id"] = str(self.guild_id)
        if self.reference:
            data["message_reference"] = self.reference
        if self.interaction is not None:
            data["webhook_id"] = str(app_id)
            data["application_id"] = str(app_id)
            data["interaction_metadata"] = {
                "id": str(self.interaction.id),
                "type": self.interaction.type,
                "user": self.interaction.user.payload(),
                "authorizing_integration_owners": {"0": str(self.guild_id)},
            }
        return data


@dataclass
class Pings:
    everyone: bool = False
    users: set[int] = field(default_factory=set)
    roles: set[int] = field(default_factory=set)

    def __or__(self, other: Pings) -> Pings:
        return Pings(self.everyone or other.everyone, self.users | other.users, self.roles | other.roles)

    def __bool__(self) -> bool:
        return self.everyone or bool(self.users) or bool(self.roles)


@dataclass
class Callback:
    """One POST /interactions/{id}/{token}/callback, accepted or not."""

    t: float
    delay: float  # seconds since the fake sent the INTERACTION_CREATE
    type: int  # 4 message, 5 deferred message, 6 deferred update, 7 update message, 8 autocomplete, 9 modal
    data: dict
    status: int = 0

    @property
    def ephemeral(self) -> bool:
        return bool(int(self.data.get("flags") or 0) & EPHEMERAL)

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class Violation:
    kind: str  # late_ack, double_ack, followup_before_ack, message_edit_rate, channel_edit_rate
    detail: str
    t: float
    interaction_id: int | None = None
    message_id: int | None = None
    channel_id: int | None = None


@dataclass
class Sync:
    """One bulk overwrite of the command set (PUT .../commands)."""

    t: float
    guild_id: int | None
    names: list[str]


@dataclass
class RateLimit:
    pattern: str  # fnmatch over "METHOD /path", e.g. "PATCH /webhooks/*/messages/*"
    times: int
    retry_after: float
    is_global: bool
    bucket: str = field(default_factory=lambda: secrets.token_hex(16))
    hits: list[float] = field(default_factory=list)


@dataclass
class Interaction:
    """An interaction the fake sent, and everything the bot answered to it."""

    fake: FakeDiscord = field(repr=False)
    id: int
    token: str
    type: int  # 2 application command, 3 component, 5 modal submit
    name: str  # "story new" or the custom_id
    user: User
    channel: Channel
    guild: Guild
    payload: dict = field(repr=False)
    sent_at: float = 0.0
    callbacks: list[Callback] = field(default_factory=list)
    source_message_id: int | None = None  # the message a component sits on
    original_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)

    @property
    def acked(self) -> Callback | None:
        return next((c for c in self.callbacks if c.accepted), None)

    @property
    def original(self) -> Message | None:
        return self.fake.messages.get(self.original_id) if self.original_id else None

    @property
    def messages(self) -> list[Message]:
        """Messages this interaction created (original response first, then followups), not the source."""
        ids = [i for i in [self.original_id, *self.followup_ids] if i and i != self.source_message_id]
        return [self.fake.messages[i] for i in dict.fromkeys(ids)]

    async def response(self, timeout: float = 5.0) -> Callback:
        """Wait for the first accepted callback."""
        return await self.fake.wait_until(lambda: self.acked, timeout, f"a callback to {self.name!r}")

    async def wait_messages(self, count: int = 1, timeout: float = 5.0) -> list[Message]:
        """Wait until this interaction has created `count` messages with content (not loading)."""

        def done() -> list[Message] | None:
            shown = [m for m in self.messages if not m.loading]
            return shown if len(shown) >= count else None

        return await self.fake.wait_until(done, timeout, f"{count} message(s) from {self.name!r}")


def new_revision(body: dict, previous: Revision | None) -> Revision:
    """A new state: fields present in the body replace the previous ones (PATCH semantics)."""

    def pick(key: str, default: Any) -> Any:
        if key in body and body[key] is not None:
            return body[key]
        if key in body:  # explicit null clears
            return default
        return getattr(previous, key) if previous else default

    return Revision(
        t=time.monotonic(),
        content=pick("content", ""),
        components=pick("components", []),
        embeds=pick("embeds", []),
        flags=int(pick("flags", 0)),
        allowed_mentions=body.get("allowed_mentions", previous.allowed_mentions if previous else None),
        payload=body,
    )


def pings_in(content: str, allowed: dict | None) -> Pings:
    """Who Discord would notify for this content under allowed_mentions (absent: parse everything)."""
    users = {int(u) for u in re.findall(r"<@!?(\d+)>", content)}
    roles = {int(r) for r in re.findall(r"<@&(\d+)>", content)}
    everyone = bool(re.search(r"@(everyone|here)\b", content))
    if allowed is None:
        return Pings(everyone, users, roles)
    parse = set(allowed.get("parse") or [])
    return Pings(
        everyone and "everyone" in parse,
        users if "users" in parse else users & {int(u) for u in allowed.get("users") or []},
        roles if "roles" in parse else roles & {int(r) for r in allowed.get("roles") or []},
    )
