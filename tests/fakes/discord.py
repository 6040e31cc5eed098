"""A stand-in Discord for end-to-end tests: REST and gateway on loopback sockets, for the real discord.py.

discord.py builds every REST URL (interaction callbacks and webhooks included) from `discord.http.Route.BASE`,
and a plain `Client` opens its first gateway connection at `DiscordWebSocket.DEFAULT_GATEWAY` (only
`AutoShardedClient` asks `GET /gateway/bot`; both are served). Entering the fake patches those two class
attributes and restores them on exit, so only one fake may be active at a time.

What a test gets:
- a small world: one guild with #general and #stories, roles @everyone and Moderator (Manage Messages), users
  alice (writer) and mod (Moderator), and the bot's own user; `add_user`, `add_channel`, `add_guild` for more;
- injection: `send_slash_command("story new", {"title": "x"})` (an attachment option takes an `Upload`),
  `press_button(message_id, custom_id)`,
  `choose(message_id, custom_id, values)`, `post_message(channel, content)`; each returns a handle; the
  event goes to the newest live connection on the guild's shard (identify's `shard`, as Discord routes);
- records: every REST call (`calls`), messages with every revision and timestamp (`messages_in`, `edits_of`),
  interaction callbacks (`callbacks`), command syncs (`syncs`, `commands`), and protocol `violations`;
- Discord's limits: 2000-char content, 4096-char embed descriptions, custom_id <= 100, 5 rows of 5 components,
  empty messages, acknowledgement within 3 s and only once, followups only after the acknowledgement; injected
  429s (`rate_limit`: the next N matching requests, with `retry_after`, the `X-RateLimit-*` headers and the
  `global` flag as Discord sends them; a global one also refuses the bot's other requests, interactions
  and webhooks excepted, until it is over) and an optional edit-rate check (`edit_rate="record"` or
  `"enforce"`);
- message flags as Discord keeps them: an edit changes only SUPPRESS_EMBEDS; links in a message without
  it unfurl (`Message.unfurled`).

    async with FakeDiscord() as fake:
        async with fake.running(MyBot()):
            run = await fake.send_slash_command("story new", {"title": "Rain"})
            await run.response()                                  # first successful callback
            message = (await run.wait_messages(1))[0]
            assert fake.edits_of(message.id)[-1].content.endswith("rain.")
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fnmatch
import itertools
import json
import re
import secrets
import time
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Literal

import discord
import yarl
from aiohttp import WSMsgType, web

DISCORD_EPOCH_MS = 1_420_070_400_000
CONTENT_LIMIT = 2000
EMBED_DESCRIPTION_LIMIT = 4096
CUSTOM_ID_LIMIT = 100
SUPPRESS_EMBEDS, EPHEMERAL, LOADING = 1 << 2, 1 << 6, 1 << 7
LINK = re.compile(r"https?://[^\s<>]+")
MANAGE_MESSAGES = 1 << 13
PUBLIC_THREAD = 11
CREATE_PUBLIC_THREADS, SEND_MESSAGES_IN_THREADS = 1 << 35, 1 << 38
# View channel, send messages, embed links, attach files, read history, add reactions, use app commands.
MEMBER_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 6) | (1 << 31)


# ----------------------------------------------------------------------------------------------- the world
@dataclass
class User:
    id: int
    name: str
    bot: bool = False

    def payload(self) -> dict:
        return {
            "id": str(self.id),
            "username": self.name,
            "global_name": None if self.bot else self.name.title(),
            "discriminator": "0",
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
            "flags": 0,
        }


@dataclass
class Role:
    id: int
    name: str
    permissions: int
    position: int = 0

    def payload(self) -> dict:
        return {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }


@dataclass
class Channel:
    id: int
    name: str
    guild_id: int
    position: int = 0
    type: int = 0  # GUILD_TEXT; PUBLIC_THREAD (11) for a thread
    parent_id: int | None = None  # a thread's channel
    owner_id: int | None = None  # a thread's creator

    def payload(self) -> dict:
        data = {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": self.position,
            "permission_overwrites": [],
            "topic": None,
            "nsfw": False,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "parent_id": None if self.parent_id is None else str(self.parent_id),
        }
        if self.type == PUBLIC_THREAD:
            data |= {
                "owner_id": str(self.owner_id), "message_count": 0, "member_count": 1, "flags": 0,
                "thread_metadata": {"archived": False, "auto_archive_duration": 10080, "locked": False,
                                    "archive_timestamp": _iso(time.time())},
            }  # fmt: skip
        return data


@dataclass
class Guild:
    id: int
    name: str
    roles: dict[str, Role] = field(default_factory=dict)
    channels: dict[str, Channel] = field(default_factory=dict)
    members: dict[int, list[int]] = field(default_factory=dict)  # user id -> role ids (without @everyone)

    @property
    def everyone(self) -> Role:
        return next(r for r in self.roles.values() if r.id == self.id)

    def permissions(self, user: User) -> int:
        """What Discord computes for `member.permissions` in an interaction (no channel overwrites here)."""
        perms = self.everyone.permissions
        for role in self.roles.values():
            if role.id in self.members.get(user.id, []):
                perms |= role.permissions
        return perms

    def member_payload(self, user: User, with_permissions: bool = False) -> dict:
        data = {
            "user": user.payload(),
            "roles": [str(r) for r in self.members.get(user.id, [])],
            "joined_at": _iso(time.time() - 86_400),
            "nick": None,
            "avatar": None,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
        }
        if with_permissions:
            data["permissions"] = str(self.permissions(user))
        return data


@dataclass
class Upload:
    """A file a user attaches to a slash command's attachment option (`send_slash_command(..., {"file":
    Upload("story.json", data)})`). Discord reports its `size` in the interaction and serves its bytes from
    its CDN (here: GET /attachments/<id>/<name>, no authorisation, as the CDN)."""

    filename: str
    data: bytes
    content_type: str = "application/json"
    size: int | None = None  # what the interaction says (None: the real size)
    id: int = 0


# ----------------------------------------------------------------------------------------------- records
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
        return [c["custom_id"] for c in _walk_components(self.components) if "custom_id" in c]

    def component(self, custom_id: str) -> dict | None:
        return next((c for c in _walk_components(self.components) if c.get("custom_id") == custom_id), None)

    @property
    def pings(self) -> Pings:
        """Who any revision of this message would notify or highlight, given its allowed_mentions."""
        total = Pings()
        for rev in self.revisions:
            total |= _pings(rev.content, rev.allowed_mentions)
        return total

    def payload(self, app_id: int) -> dict:
        rev = self.current
        pings = _pings(rev.content, rev.allowed_mentions)
        data = {
            "id": str(self.id),
            "type": 20 if self.interaction and self.interaction.type == 2 else (19 if self.reference else 0),
            "channel_id": str(self.channel_id),
            "author": self.author.payload(),
            "content": rev.content,
            "timestamp": _iso(_wall(self.created_at)),
            "edited_timestamp": _iso(_wall(rev.t)) if len(self.revisions) > 1 else None,
            "tts": False,
            "mention_everyone": pings.everyone,
            "mentions": [
                {"id": str(u), "username": f"user{u}", "discriminator": "0", "avatar": None}
                for u in sorted(pings.users)
            ],
            "mention_roles": [str(r) for r in sorted(pings.roles)],
            "attachments": [_attachment(self.id, i, name) for i, name in enumerate(self.attachments)],
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


# ----------------------------------------------------------------------------------------------- the fake
class FakeDiscord:
    """Discord's REST API and gateway on 127.0.0.1 for one bot application.

    ack_deadline: seconds the bot has to acknowledge an interaction (Discord: 3).
    edit_rate: "off", "record" (violations when a message is edited more than once per second or a channel
        gets more than 5 sends/edits in 5 s) or "enforce" (also answer those requests with 429).
    strict_commands: slash commands must have been synced (or `register_commands`) before a user can run them.
    """

    def __init__(
        self,
        *,
        ack_deadline: float = 3.0,
        edit_rate: Literal["off", "record", "enforce"] = "off",
        strict_commands: bool = True,
        heartbeat_interval_ms: int = 41_250,
        token: str = "fake-bot-token",
    ):
        self.ack_deadline, self.edit_rate, self.strict_commands = ack_deadline, edit_rate, strict_commands
        self.heartbeat_interval_ms, self.token = heartbeat_interval_ms, token
        self._seq = itertools.count()
        self.bot_user = User(self.snowflake(), "StoryBot", bot=True)
        self.app_id = self.bot_user.id  # a bot's user id is its application id
        self.users: dict[str, User] = {"StoryBot": self.bot_user}
        self.guilds: dict[str, Guild] = {}
        self.guild = self.add_guild("Story Circle")
        self.general, self.stories = self.channel("general"), self.add_channel("stories")
        self.alice = self.add_user("alice")
        self.mod = self.add_user("mod", roles=("Moderator",))
        # records
        self.calls: list[Call] = []
        self.messages: dict[int, Message] = {}
        self.interactions: dict[int, Interaction] = {}
        self.violations: list[Violation] = []
        self.syncs: list[Sync] = []
        self.connections: list[GatewayConnection] = []
        self._commands: dict[int | None, dict[str, dict]] = {None: {}}
        self.uploads: dict[int, Upload] = {}  # attachments users sent, by id
        self.downloads: list[int] = []  # the attachment ids the bot fetched from the "CDN", in order
        self._rate_limits: list[RateLimit] = []
        self._global_until = 0.0  # a global 429 refuses the bot's requests until then
        self._changed: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._saved: tuple | None = None
        self.port = 0

    # --- world ---------------------------------------------------------------------------------------
    def snowflake(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return (ms << 22) | (1 << 17) | (next(self._seq) & 0xFFF)

    def add_guild(self, name: str) -> Guild:
        guild = Guild(self.snowflake(), name)
        guild.roles["@everyone"] = Role(guild.id, "@everyone", MEMBER_PERMISSIONS)
        guild.roles["Moderator"] = Role(
            self.snowflake(), "Moderator", MEMBER_PERMISSIONS | MANAGE_MESSAGES, 1
        )
        guild.channels["general"] = Channel(self.snowflake(), "general", guild.id)
        guild.members[self.bot_user.id] = []
        for user in self.users.values():
            guild.members.setdefault(user.id, [])
        self.guilds[name] = guild
        return guild

    def add_user(self, name: str, roles: tuple[str, ...] = (), guild: Guild | None = None) -> User:
        user = self.users.get(name) or User(self.snowflake(), name)
        self.users[name] = user
        for g in self.guilds.values():
            g.members.setdefault(user.id, [])
        target = guild or self.guild
        target.members[user.id] = [target.roles[r].id for r in roles]
        return user

    def add_role(self, name: str, permissions: int = MEMBER_PERMISSIONS, guild: Guild | None = None) -> Role:
        """A role of the guild (give it to users with `add_user(..., roles=(name,))`), before the bot
        connects: the guild's roles reach the bot with GUILD_CREATE."""
        guild = guild or self.guild
        role = Role(self.snowflake(), name, permissions, len(guild.roles))
        guild.roles[name] = role
        return role

    def add_channel(self, name: str, guild: Guild | None = None) -> Channel:
        guild = guild or self.guild
        channel = Channel(self.snowflake(), name, guild.id, position=len(guild.channels))
        guild.channels[name] = channel
        return channel

    def allow_bot(self, permissions: int, guild: Guild | None = None) -> None:
        """Give the bot a role with `permissions` (say CREATE_PUBLIC_THREADS | SEND_MESSAGES_IN_THREADS)."""
        guild = guild or self.guild
        role = Role(self.snowflake(), "StoryBot", permissions, 2)
        guild.roles[role.name] = role
        guild.members[self.bot_user.id] = [*guild.members.get(self.bot_user.id, []), role.id]

    def threads_of(self, channel: Channel) -> list[Channel]:
        guild = self._find_channel(channel.id)[0]  # type: ignore[index]
        return [c for c in guild.channels.values() if c.parent_id == channel.id]

    def user(self, name: str) -> User:
        return self.users[name]

    def channel(self, name: str, guild: Guild | None = None) -> Channel:
        return (guild or self.guild).channels[name]

    def role(self, name: str, guild: Guild | None = None) -> Role:
        return (guild or self.guild).roles[name]

    def _find_channel(self, channel_id: int) -> tuple[Guild, Channel] | None:
        for guild in self.guilds.values():
            for channel in guild.channels.values():
                if channel.id == channel_id:
                    return guild, channel
        return None

    # --- lifecycle ------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def start(self) -> FakeDiscord:
        self._changed = asyncio.Event()
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_get("/", self._gateway)
        app.router.add_get("/attachments/{id}/{name}", self._attachment)
        for version in ("v9", "v10"):
            self._routes(app, f"/api/{version}")
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._patch()
        return self

    async def stop(self) -> None:
        self._unpatch()
        for conn in self.connections:
            if not conn.ws.closed:
                await conn.ws.close(code=1001)
        if self._runner:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def _patch(self) -> None:
        gateway_cls = discord.gateway.DiscordWebSocket
        self._saved = (discord.http.Route.BASE, gateway_cls.DEFAULT_GATEWAY)
        discord.http.Route.BASE = self.api_base
        gateway_cls.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)

    def _unpatch(self) -> None:
        if self._saved:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._saved
            self._saved = None

    @asynccontextmanager
    async def running(
        self, client: discord.Client, *, wait_ready: bool = False, timeout: float = 10.0
    ) -> AsyncIterator[discord.Client]:
        """Start `client`; yield once it has its guilds (or on_ready with wait_ready); close it after.

        on_ready fires `guild_ready_timeout` (discord.py default 2 s) after the last GUILD_CREATE, so pass
        `guild_ready_timeout=0.05` to the client if a test needs wait_ready.
        """
        before = len(self.connections)
        task = asyncio.create_task(client.start(self.token))
        try:
            await self.wait_until(
                lambda: task.done() or any(c.ready for c in self.connections[before:]),
                timeout,
                "the client to connect",
            )
            if task.done():
                task.result()  # raises the login or connection error
                raise RuntimeError("the client stopped before it connected")
            if wait_ready:
                await asyncio.wait_for(client.wait_until_ready(), timeout)
            yield client
        finally:
            await client.close()
            await asyncio.wait({task}, timeout=timeout)
        if task.done() and not task.cancelled() and task.exception():
            raise task.exception()  # type: ignore[misc]

    # --- waiting ----------------------------------------------------------------------------------------
    def _touch(self) -> None:
        if self._changed:
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], Any], timeout: float = 5.0, what: str = "a condition"):
        """Wait until predicate() is truthy (re-checked after every request or gateway message); return it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (result := predicate()):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
            event = self._changed
            assert event is not None, "start the fake first"
            with suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, 0.25))
        return result

    # --- queries ----------------------------------------------------------------------------------------
    def messages_in(
        self, channel: Channel | int, *, ephemeral: bool = True, deleted: bool = False
    ) -> list[Message]:
        """Messages in a channel in creation order; ephemeral ones (seen only by their user) included."""
        cid = channel if isinstance(channel, int) else channel.id
        return [
            m
            for m in sorted(self.messages.values(), key=lambda m: m.id)
            if m.channel_id == cid and (ephemeral or not m.ephemeral) and (deleted or not m.deleted)
        ]

    def message(self, message_id: int) -> Message:
        return self.messages[message_id]

    def edits_of(self, message: Message | int) -> list[Revision]:
        mid = message if isinstance(message, int) else message.id
        return self.messages[mid].edits

    def callbacks(self, interaction: Interaction) -> list[Callback]:
        return interaction.callbacks

    def calls_to(self, pattern: str) -> list[Call]:
        """REST calls whose "METHOD /path" matches an fnmatch pattern, e.g. "PATCH /webhooks/*"."""
        return [c for c in self.calls if fnmatch.fnmatchcase(f"{c.method} {c.path}", pattern)]

    def commands(self, guild: Guild | int | None = None) -> dict[str, dict]:
        """The registered command set: global (guild=None) or one guild's, by name."""
        gid = guild.id if isinstance(guild, Guild) else guild
        return self._commands.get(gid, {})

    def register_commands(self, commands: list[dict], guild: Guild | None = None) -> None:
        """Pre-seed commands as if synced by an earlier run (Discord keeps them across restarts)."""
        self._store_commands(guild.id if guild else None, commands)

    # --- knobs --------------------------------------------------------------------------------------------
    def rate_limit(
        self, pattern: str, *, times: int = 1, retry_after: float = 0.25, is_global: bool = False
    ) -> RateLimit:
        """Answer the next `times` requests matching "METHOD /path" (fnmatch) with a 429."""
        rule = RateLimit(pattern, times, retry_after, is_global)
        self._rate_limits.append(rule)
        return rule

    # --- injecting events ---------------------------------------------------------------------------------
    async def drop_connection(self, code: int = 4000) -> None:
        """Close the bot's gateway socket as Discord does on trouble (4000: unknown error, resumable)."""
        await self.connection.ws.close(code=code, message=b"fake-discord dropped the connection")

    @property
    def connection(self) -> GatewayConnection:
        live = [c for c in self.connections if c.ready and not c.ws.closed]
        if not live:
            raise RuntimeError(
                "no bot is connected to the fake gateway: start it with `fake.running(client)`"
            )
        return live[-1]

    def connection_for(self, guild: Guild) -> GatewayConnection:
        """The newest live connection whose shard holds the guild (Discord: (guild_id >> 22) % count)."""
        live = [c for c in self.connections if c.ready and not c.ws.closed and c.serves(guild)]
        if not live:
            raise RuntimeError(f"no bot connected to the fake gateway serves guild {guild.name!r}'s shard")
        return live[-1]

    async def send_slash_command(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user: User | None = None,
        channel: Channel | None = None,
        guild: Guild | None = None,
    ) -> Interaction:
        """A user runs `/name` ("story new" for a subcommand): INTERACTION_CREATE type 2 to the bot."""
        guild = guild or (self._find_channel(channel.id)[0] if channel else self.guild)  # type: ignore[index]
        channel = channel or guild.channels["general"]
        root, *path = name.split()
        command = self.commands(guild).get(root) or self.commands(None).get(root)
        if command is None and self.strict_commands:
            raise LookupError(
                f"/{root} is not registered (synced) globally or for {guild.name!r}: users cannot "
                f"run it. Sync the command tree or call fake.register_commands()."
            )
        schema = command.get("options", []) if command else None
        data: dict[str, Any] = {
            "id": command["id"] if command else str(self.snowflake()),
            "name": root,
            "type": 1,
        }
        if command and command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        resolved: dict[str, dict] = {}
        data["options"] = self._options(path, options or {}, schema, guild, resolved)
        if resolved:
            data["resolved"] = resolved
        return await self._interact(2, name, data, user or self.alice, channel, guild)

    async def press_button(
        self, message: Message | int, custom_id: str, *, user: User | None = None
    ) -> Interaction:
        """A user clicks a button on a stored message: INTERACTION_CREATE type 3 carrying that message."""
        return await self._component(message, custom_id, user, values=None)

    async def choose(
        self, message: Message | int, custom_id: str, values: list[str], *, user: User | None = None
    ) -> Interaction:
        """A user picks values in a select menu on a stored message."""
        return await self._component(message, custom_id, user, values=values)

    async def submit_modal(
        self, shown: Interaction, values: dict[str, str], *, user: User | None = None
    ) -> Interaction:
        """A user submits the modal that `shown` was answered with (a type-9 callback), its text inputs
        holding `values` by custom_id (others keep their prefilled value): INTERACTION_CREATE type 5."""
        modal = next((c.data for c in shown.callbacks if c.type == 9 and c.accepted), None)
        if modal is None:
            raise LookupError(f"{shown.name!r} was not answered with a modal")
        inputs = {c["custom_id"]: c for c in _walk_components(modal.get("components", [])) if c["type"] == 4}
        inputs.update({c["component"]["custom_id"]: c["component"] for c in modal.get("components", [])
                       if c["type"] == 18 and c["component"]["type"] == 4})  # fmt: skip
        if unknown := set(values) - set(inputs):
            raise LookupError(f"the modal has no text input(s) {sorted(unknown)}; it has {sorted(inputs)}")

        def filled(comp: dict) -> dict:
            value = values.get(comp["custom_id"], comp.get("value") or "")
            if comp.get("required", True) and not value:
                raise ValueError(f"text input {comp['custom_id']!r} is required: Discord would not submit")
            if len(value) > comp.get("max_length", 4000) or len(value) < comp.get("min_length", 0):
                raise ValueError(
                    f"text input {comp['custom_id']!r}: {len(value)} characters is out of bounds"
                )
            return {"type": 4, "custom_id": comp["custom_id"], "value": value}

        rows = []
        for comp in modal.get("components", []):
            if comp["type"] == 1:
                rows.append(
                    {"type": 1, "components": [filled(c) for c in comp["components"] if c["type"] == 4]}
                )
            elif comp["type"] == 18 and comp["component"]["type"] == 4:
                rows.append({"type": 18, "component": filled(comp["component"])})
        data = {"custom_id": modal["custom_id"], "components": rows}
        source = self.messages.get(shown.source_message_id) if shown.source_message_id else None
        return await self._interact(
            5, modal["custom_id"], data, user or shown.user, shown.channel, shown.guild, source
        )

    async def post_message(self, channel: Channel, content: str, *, user: User | None = None) -> Message:
        """A user writes in a channel: stored and sent as MESSAGE_CREATE."""
        user = user or self.alice
        msg = Message(self.snowflake(), channel.id, channel.guild_id, user, "user")
        msg.revisions.append(Revision(time.monotonic(), content, [], [], 0, None, {"content": content}))
        self.messages[msg.id] = msg
        guild = self._find_channel(channel.id)[0]  # type: ignore[index]
        payload = msg.payload(self.app_id)
        payload["member"] = {k: v for k, v in guild.member_payload(user).items() if k != "user"}
        await self.connection_for(guild).dispatch("MESSAGE_CREATE", payload)
        return msg

    async def _component(
        self, message: Message | int, custom_id: str, user: User | None, values: list[str] | None
    ) -> Interaction:
        msg = self.messages[message if isinstance(message, int) else message.id]
        comp = msg.component(custom_id)
        if comp is None:
            raise LookupError(f"message {msg.id} has no component {custom_id!r}; it has {msg.custom_ids}")
        if comp.get("disabled"):
            raise ValueError(f"component {custom_id!r} is disabled: a user cannot use it")
        user = user or self.alice
        if msg.ephemeral and msg.interaction and msg.interaction.user.id != user.id:
            raise ValueError(f"message {msg.id} is ephemeral: only {msg.interaction.user.name} can see it")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": comp["type"]}
        if values is not None:
            data["values"] = values
        guild, channel = self._find_channel(msg.channel_id)  # type: ignore[misc]
        return await self._interact(3, custom_id, data, user, channel, guild, msg)

    async def _interact(
        self,
        itype: int,
        name: str,
        data: dict,
        user: User,
        channel: Channel,
        guild: Guild,
        source: Message | None = None,
    ) -> Interaction:
        conn = self.connection_for(guild)
        iid, token = self.snowflake(), "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48)
        payload = {
            "id": str(iid),
            "application_id": str(self.app_id),
            "type": itype,
            "data": data,
            "guild_id": str(guild.id),
            "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
            "channel_id": str(channel.id),
            "channel": channel.payload(),
            "member": guild.member_payload(user, with_permissions=True),
            "token": token,
            "version": 1,
            "app_permissions": str(guild.permissions(self.bot_user)),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild.id)},
            "context": 0,
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        if source is not None:
            payload["message"] = source.payload(self.app_id)
        inter = Interaction(
            self,
            iid,
            token,
            itype,
            name,
            user,
            channel,
            guild,
            payload,
            source_message_id=source.id if source else None,
        )
        self.interactions[iid] = inter
        inter.sent_at = time.monotonic()
        await conn.dispatch("INTERACTION_CREATE", payload)
        return inter

    def _options(
        self, path: list[str], given: dict[str, Any], schema: list | None, guild: Guild, resolved: dict
    ) -> list[dict]:
        if path:
            sub = next((o for o in schema or [] if o["name"] == path[0] and o["type"] in (1, 2)), None)
            if schema is not None and sub is None:
                raise LookupError(f"no subcommand {path[0]!r}; known: {[o['name'] for o in schema]}")
            kind = sub["type"] if sub else (1 if len(path) == 1 else 2)
            inner = self._options(path[1:], given, sub.get("options", []) if sub else None, guild, resolved)
            return [{"type": kind, "name": path[0], "options": inner}]
        if schema is not None:
            known = {o["name"]: o for o in schema}
            unknown = set(given) - set(known)
            if unknown:
                raise LookupError(f"unknown option(s) {sorted(unknown)}; the command takes {sorted(known)}")
            missing = [n for n, o in known.items() if o.get("required") and n not in given]
            if missing:
                raise ValueError(f"required option(s) {missing} missing: Discord would not send the command")
        out = []
        for key, value in given.items():
            spec = (schema and next(o for o in schema if o["name"] == key)) or {}
            kind = spec.get("type") or _guess_type(value)
            choices = [c["value"] for c in spec.get("choices", [])]
            if choices and value not in choices:
                raise ValueError(f"{value!r} is not one of the choices {choices} of option {key!r}")
            out.append({"type": kind, "name": key, "value": self._resolve(value, guild, resolved)})
        return out

    def _resolve(self, value: Any, guild: Guild, resolved: dict) -> Any:
        if isinstance(value, User):
            resolved.setdefault("users", {})[str(value.id)] = value.payload()
            member = guild.member_payload(value, with_permissions=True)
            member.pop("user")
            resolved.setdefault("members", {})[str(value.id)] = member
            return str(value.id)
        if isinstance(value, Channel):
            ch = value.payload()
            ch["permissions"] = str(MEMBER_PERMISSIONS)
            resolved.setdefault("channels", {})[str(value.id)] = ch
            return str(value.id)
        if isinstance(value, Upload):
            value.id = value.id or self.snowflake()
            self.uploads[value.id] = value
            url = f"{self.url}/attachments/{value.id}/{value.filename}"
            resolved.setdefault("attachments", {})[str(value.id)] = {
                "id": str(value.id), "filename": value.filename, "content_type": value.content_type,
                "size": len(value.data) if value.size is None else value.size, "url": url, "proxy_url": url,
                "ephemeral": True,
            }  # fmt: skip
            return str(value.id)
        if isinstance(value, Role):
            resolved.setdefault("roles", {})[str(value.id)] = value.payload()
            return str(value.id)
        return value

    # --- HTTP plumbing --------------------------------------------------------------------------------------
    def _routes(self, app: web.Application, api: str) -> None:
        r = app.router
        r.add_get(f"{api}/gateway", self._get_gateway)
        r.add_get(f"{api}/gateway/bot", self._get_gateway)
        r.add_get(f"{api}/users/@me", self._get_me)
        r.add_get(f"{api}/oauth2/applications/@me", self._get_app)
        r.add_get(f"{api}/applications/@me", self._get_app)
        for prefix in (f"{api}/applications/{{app}}", f"{api}/applications/{{app}}/guilds/{{guild}}"):
            r.add_get(f"{prefix}/commands", self._get_commands)
            r.add_put(f"{prefix}/commands", self._put_commands)
            r.add_post(f"{prefix}/commands", self._post_command)
            r.add_delete(f"{prefix}/commands/{{command}}", self._delete_command)
        r.add_post(f"{api}/interactions/{{id}}/{{token}}/callback", self._callback)
        r.add_post(f"{api}/webhooks/{{app}}/{{token}}", self._followup)
        r.add_get(f"{api}/webhooks/{{app}}/{{token}}/messages/{{message}}", self._webhook_message)
        r.add_patch(f"{api}/webhooks/{{app}}/{{token}}/messages/{{message}}", self._webhook_message)
        r.add_delete(f"{api}/webhooks/{{app}}/{{token}}/messages/{{message}}", self._webhook_message)
        r.add_get(f"{api}/channels/{{channel}}", self._get_channel)
        r.add_get(f"{api}/channels/{{channel}}/messages", self._history)
        r.add_post(f"{api}/channels/{{channel}}/messages", self._post_message)
        r.add_post(f"{api}/channels/{{channel}}/threads", self._start_thread)
        r.add_get(f"{api}/channels/{{channel}}/messages/{{message}}", self._channel_message)
        r.add_patch(f"{api}/channels/{{channel}}/messages/{{message}}", self._channel_message)
        r.add_delete(f"{api}/channels/{{channel}}/messages/{{message}}", self._channel_message)
        r.add_route("*", f"{api}/{{tail:.*}}", self._unknown)

    @web.middleware
    async def _middleware(self, request: web.Request, handler) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        path = "/" + request.path.split("/", 3)[3]
        body, uploads = await _read_body(request)
        call = Call(
            time.monotonic(), request.method, path, dict(request.query), body, list(uploads), 0, None, uploads
        )
        request[CALL] = call
        self.calls.append(call)
        try:
            response = self._injected_429(call) or self._auth(request, path) or await handler(request)
        except web.HTTPException as exc:  # aiohttp's own 405s and the like
            response = exc
        call.status = response.status
        if isinstance(response, web.Response) and response.content_type == "application/json":
            call.response = json.loads(response.body)  # type: ignore[arg-type]
        response.headers["Via"] = "1.1 google"  # discord.py treats a 429 without Via as a Cloudflare ban
        self._touch()
        return response

    def _auth(self, request: web.Request, path: str) -> web.Response | None:
        if path.startswith(("/webhooks/", "/interactions/")):
            return None  # authorised by the interaction token in the path
        if request.headers.get("Authorization") != f"Bot {self.token}":
            return _json({"message": "401: Unauthorized", "code": 0}, 401)
        return None

    def _injected_429(self, call: Call) -> web.Response | None:
        # Discord's global limit covers the bot's requests, not interaction callbacks and webhooks.
        exempt = call.path.startswith(("/interactions/", "/webhooks/"))
        if not exempt and call.t < self._global_until:
            return _too_many(self._global_until - call.t, True, "global")
        for rule in self._rate_limits:
            if rule.times > 0 and fnmatch.fnmatchcase(f"{call.method} {call.path}", rule.pattern):
                rule.times -= 1
                rule.hits.append(call.t)
                if rule.is_global:
                    self._global_until = max(self._global_until, call.t + rule.retry_after)
                return _too_many(rule.retry_after, rule.is_global, rule.bucket)
        return None

    async def _unknown(self, request: web.Request) -> web.Response:
        return _json({"message": "404: Not Found (the fake does not serve this route)", "code": 0}, 404)

    # --- REST: identity, gateway, commands -----------------------------------------------------------------
    async def _attachment(self, request: web.Request) -> web.Response:
        """The CDN: an uploaded attachment's bytes."""
        upload = self.uploads.get(int(request.match_info["id"]))
        if upload is None or upload.filename != request.match_info["name"]:
            return web.Response(status=404)
        self.downloads.append(upload.id)
        self._touch()
        return web.Response(body=upload.data, content_type=upload.content_type)

    async def _get_gateway(self, request: web.Request) -> web.Response:
        data: dict[str, Any] = {"url": self.gateway_url.rstrip("/")}
        if request.path.endswith("/bot"):
            data["shards"] = 1
            data["session_start_limit"] = {
                "total": 1000,
                "remaining": 999,
                "reset_after": 14_400_000,
                "max_concurrency": 1,
            }
        return _json(data)

    async def _get_me(self, request: web.Request) -> web.Response:
        return _json({**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "locale": "en-US"})

    async def _get_app(self, request: web.Request) -> web.Response:
        owner = self.users.get("mod", self.bot_user)
        return _json(
            {
                "id": str(self.app_id),
                "name": self.bot_user.name,
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": owner.payload(),
                "team": None,
                "verify_key": secrets.token_hex(32),
                "flags": 0,
                "rpc_origins": [],
                "tags": [],
                "redirect_uris": [],
                "interactions_endpoint_url": None,
                "bot": self.bot_user.payload(),
                "approximate_guild_count": len(self.guilds),
            }
        )

    def _command_scope(self, request: web.Request) -> int | None | web.Response:
        if request.match_info["app"] != str(self.app_id):
            return _json({"message": "Unknown Application", "code": 10002}, 404)
        guild = request.match_info.get("guild")
        if guild is None:
            return None
        if not any(g.id == int(guild) for g in self.guilds.values()):
            return _json({"message": "Missing Access", "code": 50001}, 403)
        return int(guild)

    async def _get_commands(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        if isinstance(scope, web.Response):
            return scope
        return _json(list(self.commands(scope).values()))

    async def _put_commands(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        if isinstance(scope, web.Response):
            return scope
        body = request[CALL].body
        errors = {f"{i}.{k}": v for i, cmd in enumerate(body) for k, v in _command_errors(cmd).items()}
        if len(body) > 100:
            errors["_"] = ("BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
        if errors:
            return _form_error(errors)
        stored = self._store_commands(scope, body)
        self.syncs.append(Sync(time.monotonic(), scope, [c["name"] for c in body]))
        return _json(stored)

    async def _post_command(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        if isinstance(scope, web.Response):
            return scope
        body = request[CALL].body
        if errors := _command_errors(body):
            return _form_error(errors)
        existed = body["name"] in self.commands(scope)
        stored = self._store_commands(scope, list({**self.commands(scope), body["name"]: body}.values()))
        return _json(next(c for c in stored if c["name"] == body["name"]), 200 if existed else 201)

    async def _delete_command(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        if isinstance(scope, web.Response):
            return scope
        commands = self._commands.get(scope, {})
        name = next((n for n, c in commands.items() if c["id"] == request.match_info["command"]), None)
        if name is None:
            return _json({"message": "Unknown application command", "code": 10063}, 404)
        del commands[name]
        return web.Response(status=204)

    def _store_commands(self, scope: int | None, commands: list[dict]) -> list[dict]:
        old = self._commands.get(scope, {})
        new: dict[str, dict] = {}
        for cmd in commands:
            previous = old.get(cmd["name"])
            stored = {
                "type": 1,
                "description": "",
                "options": [],
                "default_member_permissions": None,
                "dm_permission": True,
                "nsfw": False,
                **cmd,
                "id": previous["id"] if previous else str(self.snowflake()),
                "application_id": str(self.app_id),
                "version": str(self.snowflake()),
            }
            if scope is not None:
                stored["guild_id"] = str(scope)
            new[cmd["name"]] = stored
        self._commands[scope] = new
        return list(new.values())

    # --- REST: interactions -------------------------------------------------------------------------------
    def _interaction_for(self, request: web.Request) -> Interaction | None:
        if "id" in request.match_info:
            inter = self.interactions.get(int(request.match_info["id"]))
            return inter if inter and inter.token == request.match_info["token"] else None
        if request.match_info.get("app") != str(self.app_id):
            return None
        return next((i for i in self.interactions.values() if i.token == request.match_info["token"]), None)

    async def _callback(self, request: web.Request) -> web.Response:
        inter = self._interaction_for(request)
        if inter is None:
            return _json({"message": "Unknown interaction", "code": 10062}, 404)
        body = request[CALL].body or {}
        now = time.monotonic()
        cb = Callback(now, now - inter.sent_at, int(body.get("type", 0)), body.get("data") or {})
        inter.callbacks.append(cb)
        cb.status, response = self._answer_callback(inter, cb, body, request[CALL])
        return response

    def _answer_callback(
        self, inter: Interaction, cb: Callback, body: dict, call: Call
    ) -> tuple[int, web.Response]:
        if inter.acked:
            self._violate("double_ack", f"{inter.name!r} acknowledged again (type {cb.type})", inter)
            return 400, _json({"message": "Interaction has already been acknowledged.", "code": 40060}, 400)
        if cb.delay > self.ack_deadline:
            self._violate(
                "late_ack",
                f"{inter.name!r} acknowledged after {cb.delay:.2f}s (limit {self.ack_deadline:.2f}s)",
                inter,
            )
            return 404, _json({"message": "Unknown interaction", "code": 10062}, 404)
        allowed = {2: (4, 5, 9), 3: (4, 5, 6, 7, 9), 5: (4, 5, 6, 7)}.get(inter.type, ())
        if cb.type not in allowed:
            return 400, _form_error({"type": ("BASE_TYPE_CHOICES", f"Value must be one of {allowed}.")})
        data = cb.data
        if cb.type in (4, 7) and (error := _message_errors(data, require_body=cb.type == 4)):
            return 400, error
        message: Message | None = None
        if cb.type == 4:
            message = self._create(inter.channel, "callback", data, inter, files=call.files)
            inter.original_id = message.id
        elif cb.type == 5:
            flags = LOADING | (int(data.get("flags") or 0) & EPHEMERAL)
            message = self._create(inter.channel, "callback", {"content": "", "flags": flags}, inter)
            inter.original_id = message.id
        elif cb.type in (6, 7):
            inter.original_id = inter.source_message_id
            if cb.type == 7:
                message = self.messages[inter.source_message_id]  # type: ignore[index]
                if limited := self._revise(message, data):
                    return 429, limited
        result: dict[str, Any] = {
            "interaction": {
                "id": str(inter.id),
                "type": inter.type,
                "response_message_loading": cb.type == 5,
                "response_message_ephemeral": bool(message and message.ephemeral),
            }
        }
        if message is not None:
            result["interaction"]["response_message_id"] = str(message.id)
        result["resource"] = {"type": cb.type}
        if message is not None:
            result["resource"]["message"] = message.payload(self.app_id)
        if call.query.get("with_response") in ("1", "true", "True"):
            return 200, _json(result)
        return 204, web.Response(status=204)

    async def _followup(self, request: web.Request) -> web.Response:
        inter = self._interaction_for(request)
        if inter is None:
            return _json({"message": "Unknown Webhook", "code": 10015}, 404)
        if not inter.acked:
            self._violate("followup_before_ack", f"followup to {inter.name!r} before any callback", inter)
            return _json({"message": "Unknown Webhook", "code": 10015}, 404)
        body = request[CALL].body or {}
        if error := _message_errors(body, require_body=True, files=request[CALL].files):
            return error
        original = inter.original
        if original is not None and original.loading and original.via == "callback":
            # After a type-5 defer the first followup edits the loading message (Discord's documented
            # backwards-compatible behaviour), keeping the ephemeral flag chosen when deferring.
            data = {
                **body,
                "flags": (int(body.get("flags") or 0) & ~EPHEMERAL) | (original.flags & EPHEMERAL),
            }
            if limited := self._revise(original, data, clear_loading=True):
                return limited
            original.attachments.extend(request[CALL].files)
            message = original
        else:
            if limited := self._channel_budget(inter.channel.id):
                return limited
            message = self._create(inter.channel, "followup", body, inter, files=request[CALL].files)
            inter.followup_ids.append(message.id)
        if request.query.get("wait") in ("1", "true", "True"):
            return _json(message.payload(self.app_id))
        return web.Response(status=204)

    async def _webhook_message(self, request: web.Request) -> web.Response:
        inter = self._interaction_for(request)
        if inter is None:
            return _json({"message": "Unknown Webhook", "code": 10015}, 404)
        ref = request.match_info["message"]
        mid = inter.original_id if ref == "@original" else int(ref)
        mine = {inter.original_id, *inter.followup_ids}
        message = self.messages.get(mid) if mid in mine else None  # type: ignore[arg-type]
        if message is None or message.deleted:
            return _json({"message": "Unknown Message", "code": 10008}, 404)
        return self._message_verb(request, message)

    def _message_verb(self, request: web.Request, message: Message) -> web.Response:
        if request.method == "GET":
            return _json(message.payload(self.app_id))
        if request.method == "DELETE":
            message.deleted = True
            return web.Response(status=204)
        body = request[CALL].body or {}
        if error := _message_errors(body, require_body=False, files=request[CALL].files):
            return error
        if limited := self._revise(message, body, clear_loading=True):
            return limited
        return _json(message.payload(self.app_id))

    # --- REST: channels -----------------------------------------------------------------------------------
    def _channel_or_404(self, request: web.Request) -> Channel | web.Response:
        found = self._find_channel(int(request.match_info["channel"]))
        if found is None:
            return _json({"message": "Unknown Channel", "code": 10003}, 404)
        return found[1]

    async def _get_channel(self, request: web.Request) -> web.Response:
        channel = self._channel_or_404(request)
        return channel if isinstance(channel, web.Response) else _json(channel.payload())

    async def _history(self, request: web.Request) -> web.Response:
        channel = self._channel_or_404(request)
        if isinstance(channel, web.Response):
            return channel
        limit = int(request.query.get("limit", 50))
        before, after = int(request.query.get("before", 1 << 63)), int(request.query.get("after", 0))
        found = [m for m in self.messages_in(channel, ephemeral=False) if after < m.id < before]
        found = found[:limit] if "after" in request.query else found[-limit:]
        return _json([m.payload(self.app_id) for m in reversed(found)])

    async def _post_message(self, request: web.Request) -> web.Response:
        channel = self._channel_or_404(request)
        if isinstance(channel, web.Response):
            return channel
        body = request[CALL].body or {}
        if error := _message_errors(body, require_body=True, files=request[CALL].files):
            return error
        if limited := self._channel_budget(channel.id):
            return limited
        message = self._create(channel, "channel", body, None, files=request[CALL].files)
        return _json(message.payload(self.app_id))

    async def _start_thread(self, request: web.Request) -> web.Response:
        """A thread without a starter message (public; Discord needs Create Public Threads)."""
        channel = self._channel_or_404(request)
        if isinstance(channel, web.Response):
            return channel
        guild = self._find_channel(channel.id)[0]  # type: ignore[index]
        body = request[CALL].body or {}
        if not guild.permissions(self.bot_user) & CREATE_PUBLIC_THREADS:
            return _json({"message": "Missing Permissions", "code": 50013}, 403)
        if channel.type != 0 or body.get("type", PUBLIC_THREAD) != PUBLIC_THREAD:
            return _form_error({"type": ("BASE_TYPE_CHOICES", "only public threads in a text channel")})
        if not 1 <= len(body.get("name") or "") <= 100:
            return _form_error({"name": ("BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")})
        thread = Channel(self.snowflake(), body["name"], guild.id, type=PUBLIC_THREAD, parent_id=channel.id,
                         owner_id=self.bot_user.id)  # fmt: skip
        guild.channels[f"{thread.name}#{thread.id}"] = thread
        return _json(thread.payload(), 201)

    async def _channel_message(self, request: web.Request) -> web.Response:
        channel = self._channel_or_404(request)
        if isinstance(channel, web.Response):
            return channel
        message = self.messages.get(int(request.match_info["message"]))
        if message is None or message.deleted or message.channel_id != channel.id or message.ephemeral:
            return _json({"message": "Unknown Message", "code": 10008}, 404)
        if request.method == "PATCH" and message.author.id != self.bot_user.id:
            return _json({"message": "Cannot edit a message authored by another user", "code": 50005}, 403)
        return self._message_verb(request, message)

    # --- messages -------------------------------------------------------------------------------------------
    def _create(
        self,
        channel: Channel,
        via: str,
        body: dict,
        inter: Interaction | None,
        files: list[str] | None = None,
    ) -> Message:
        msg = Message(
            self.snowflake(),
            channel.id,
            channel.guild_id,
            self.bot_user,
            via,  # type: ignore[arg-type]
            inter,
            body.get("message_reference"),
            list(files or []),
        )
        msg.revisions.append(_revision(body, None))
        self.messages[msg.id] = msg
        return msg

    def _revise(self, message: Message, body: dict, clear_loading: bool = False) -> web.Response | None:
        """Apply an edit, or answer 429 when edit_rate="enforce" and the edit breaks the budget."""
        if limited := self._edit_budget(message):
            return limited
        rev = _revision(body, message.current)
        # An edit may set or clear SUPPRESS_EMBEDS only; every other flag stays as it was.
        rev.flags = (message.flags & ~SUPPRESS_EMBEDS) | (rev.flags & SUPPRESS_EMBEDS)
        if clear_loading:
            rev.flags &= ~LOADING
        message.revisions.append(rev)
        return None

    def _edit_budget(self, message: Message) -> web.Response | None:
        if self.edit_rate == "off" or message.loading:
            return None  # the first edit of a deferred response replaces its loading state
        now = time.monotonic()
        recent = [r.t for r in message.edits if now - r.t < 1.0]
        if recent:
            self._violate(
                "message_edit_rate", f"message {message.id} edited twice within 1 s", message=message
            )
            if self.edit_rate == "enforce":
                return _too_many(1.0 - (now - recent[0]), False, f"edit-{message.id}")
        return self._channel_budget(message.channel_id, message)

    def _channel_budget(self, channel_id: int, message: Message | None = None) -> web.Response | None:
        if self.edit_rate == "off" or (message and message.ephemeral):
            return None
        now = time.monotonic()
        times = sorted(
            r.t
            for m in self.messages.values()
            if m.channel_id == channel_id and not m.ephemeral and m.author.id == self.bot_user.id
            for r in m.revisions
            if now - r.t < 5.0
        )
        if len(times) >= 5:
            self._violate(
                "channel_edit_rate",
                f"channel {channel_id}: a 6th send/edit within 5 s",
                channel_id=channel_id,
            )
            if self.edit_rate == "enforce":
                return _too_many(5.0 - (now - times[-5]), False, f"channel-{channel_id}")
        return None

    def _violate(
        self,
        kind: str,
        detail: str,
        inter: Interaction | None = None,
        *,
        message: Message | None = None,
        channel_id: int | None = None,
    ) -> None:
        self.violations.append(
            Violation(
                kind,
                detail,
                time.monotonic(),
                inter.id if inter else None,
                message.id if message else None,
                channel_id or (message.channel_id if message else None),
            )
        )

    # --- gateway --------------------------------------------------------------------------------------------
    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        conn = GatewayConnection(self, ws, dict(request.query))
        self.connections.append(conn)
        self._touch()
        if conn.query.get("encoding", "json") != "json":
            await ws.close(code=4002, message=b"the fake speaks encoding=json only")
            return ws
        await conn.send({"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}})
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                await ws.close(code=4002, message=b"Error while decoding payload.")
                break
            await conn.receive(json.loads(msg.data))
            self._touch()
        self._touch()
        return ws

    def _ready_payload(self, conn: GatewayConnection) -> dict:
        return {
            "v": 10,
            "user": {**self.bot_user.payload(), "verified": True, "mfa_enabled": False},
            "guilds": [
                {"id": str(g.id), "unavailable": True} for g in self.guilds.values() if conn.serves(g)
            ],
            "session_id": conn.session_id,
            "resume_gateway_url": self.gateway_url.rstrip("/"),
            "shard": conn.identify.get("shard", [0, 1]),
            "application": {"id": str(self.app_id), "flags": 0},
            "private_channels": [],
            "presences": [],
            "_trace": ["fake-discord"],
        }

    def _guild_payload(self, guild: Guild) -> dict:
        members = [guild.member_payload(self._user_by_id(uid)) for uid in guild.members]
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": str(self.users.get("mod", self.bot_user).id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "roles": [r.payload() for r in guild.roles.values()],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "joined_at": _iso(time.time() - 86_400),
            "large": False,
            "unavailable": False,
            "member_count": len(members),
            "members": members,
            "voice_states": [],
            "presences": [],
            "channels": [c.payload() for c in guild.channels.values() if c.type != PUBLIC_THREAD],
            "threads": [c.payload() for c in guild.channels.values() if c.type == PUBLIC_THREAD],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    def _user_by_id(self, user_id: int) -> User:
        return next(u for u in self.users.values() if u.id == user_id)


class GatewayConnection:
    """One websocket client of the fake gateway (plain JSON text frames, or zlib-stream when asked)."""

    def __init__(self, fake: FakeDiscord, ws: web.WebSocketResponse, query: dict[str, str]):
        self.fake, self.ws, self.query = fake, ws, query
        self.seq = 0
        self.session_id = secrets.token_hex(16)
        self.identify: dict = {}
        self.ready = False
        self.heartbeats = 0
        self.received: list[dict] = []
        # discord.py asks for zstd-stream when zstandard is importable, zlib-stream otherwise; it only
        # decompresses binary frames, so anything but zlib-stream is answered with plain text frames.
        self._zlib = zlib.compressobj() if query.get("compress") == "zlib-stream" else None

    async def send(self, payload: dict) -> None:
        payload = {"op": 0, "s": None, "t": None, **payload}
        text = json.dumps(payload, separators=(",", ":"))
        if self._zlib is None:
            await self.ws.send_str(text)
        else:
            await self.ws.send_bytes(self._zlib.compress(text.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH))

    async def dispatch(self, event: str, data: dict) -> None:
        self.seq += 1
        await self.send({"op": 0, "s": self.seq, "t": event, "d": data})

    async def receive(self, msg: dict) -> None:
        self.received.append(msg)
        op, data = msg.get("op"), msg.get("d")
        if op == 1:
            self.heartbeats += 1
            await self.send({"op": 11})
        elif op == 2:
            await self._identify(data or {})
        elif op == 6:
            await self._resume(data or {})
        elif op == 8:
            guild = next(g for g in self.fake.guilds.values() if str(g.id) == str(data["guild_id"]))
            members = [guild.member_payload(self.fake._user_by_id(u)) for u in guild.members]
            await self.dispatch(
                "GUILD_MEMBERS_CHUNK",
                {
                    "guild_id": str(guild.id),
                    "members": members,
                    "chunk_index": 0,
                    "chunk_count": 1,
                    "nonce": data.get("nonce"),
                },
            )
        elif op in (3, 4):
            pass  # presence and voice state updates: nothing to answer
        else:
            await self.ws.close(code=4001, message=b"Unknown opcode.")

    async def _identify(self, data: dict) -> None:
        if data.get("token") != self.fake.token:
            await self.ws.close(code=4004, message=b"Authentication failed.")
            return
        self.identify = data
        await self.dispatch("READY", self.fake._ready_payload(self))
        for guild in self.fake.guilds.values():
            if self.serves(guild):
                await self.dispatch("GUILD_CREATE", self.fake._guild_payload(guild))
        self.ready = True

    def serves(self, guild: Guild) -> bool:
        """Whether the guild is on this connection's shard (identify's [shard_id, shard_count])."""
        shard, count = self.identify.get("shard") or [0, 1]
        return (guild.id >> 22) % count == shard

    async def _resume(self, data: dict) -> None:
        previous = next((c for c in self.fake.connections if c.session_id == data.get("session_id")), None)
        if previous is None or data.get("token") != self.fake.token:
            await self.send({"op": 9, "d": False})  # invalid session: discord.py identifies afresh
            return
        self.session_id, self.seq, self.identify = previous.session_id, previous.seq, previous.identify
        await self.dispatch("RESUMED", {"_trace": ["fake-discord"]})
        self.ready = True


# ----------------------------------------------------------------------------------------------- helpers
def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat()


def _wall(monotonic: float) -> float:
    return time.time() - (time.monotonic() - monotonic)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # Exactly "application/json": discord.py's json_or_text compares the header verbatim (no charset).
    body = json.dumps(data, separators=(",", ":")).encode()
    return web.Response(
        body=body, status=status, headers={"Content-Type": "application/json", **(headers or {})}
    )


def _too_many(retry_after: float, is_global: bool, bucket: str) -> web.Response:
    retry_after = round(max(retry_after, 0.001), 3)
    headers = {
        "Retry-After": str(max(1, int(retry_after + 0.999))),
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
        "X-RateLimit-Reset-After": f"{retry_after:.3f}",
        "X-RateLimit-Bucket": bucket,
        "X-RateLimit-Scope": "global" if is_global else "user",
    }
    if is_global:
        headers["X-RateLimit-Global"] = "true"
    body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": is_global}
    return _json(body, 429, headers)


def _form_error(errors: dict[str, tuple[str, str]]) -> web.Response:
    """Discord's 50035 Invalid Form Body: errors nested by the dotted path of each bad field."""
    nested: dict = {}
    for path, (code, message) in errors.items():
        node = nested
        for part in path.split("."):
            node = node.setdefault(part, {})
        node.setdefault("_errors", []).append({"code": code, "message": message})
    return _json({"message": "Invalid Form Body", "code": 50035, "errors": nested}, 400)


def _walk_components(components: list) -> list[dict]:
    out = []
    for comp in components or []:
        out.append(comp)
        out.extend(_walk_components(comp.get("components", [])))
        if isinstance(comp.get("accessory"), dict):
            out.extend(_walk_components([comp["accessory"]]))
    return out


def _message_errors(body: dict, *, require_body: bool, files: list[str] | None = None) -> web.Response | None:
    errors: dict[str, tuple[str, str]] = {}
    content = body.get("content")
    if content is not None and len(content) > CONTENT_LIMIT:
        errors["content"] = ("BASE_TYPE_MAX_LENGTH", f"Must be {CONTENT_LIMIT} or fewer in length.")
    embeds = body.get("embeds") or []
    if len(embeds) > 10:
        errors["embeds"] = ("BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    for i, embed in enumerate(embeds):
        if len(embed.get("description") or "") > EMBED_DESCRIPTION_LIMIT:
            errors[f"embeds.{i}.description"] = (
                "BASE_TYPE_MAX_LENGTH",
                f"Must be {EMBED_DESCRIPTION_LIMIT} or fewer in length.",
            )
        if len(embed.get("title") or "") > 256:
            errors[f"embeds.{i}.title"] = ("BASE_TYPE_MAX_LENGTH", "Must be 256 or fewer in length.")
    components = body.get("components") or []
    classic = all(c.get("type") == 1 for c in components)
    if classic and len(components) > 5:
        errors["components"] = ("BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
    seen: set[str] = set()
    for r, row in enumerate(components if classic else []):
        if len(row.get("components", [])) > 5:
            errors[f"components.{r}.components"] = ("BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
        for c, comp in enumerate(row.get("components", [])):
            where = f"components.{r}.components.{c}"
            custom_id = comp.get("custom_id")
            if custom_id is not None and len(custom_id) > CUSTOM_ID_LIMIT:
                errors[f"{where}.custom_id"] = (
                    "BASE_TYPE_MAX_LENGTH",
                    f"Must be {CUSTOM_ID_LIMIT} or fewer in length.",
                )
            if custom_id is not None and custom_id in seen:
                errors[f"{where}.custom_id"] = (
                    "COMPONENT_CUSTOM_ID_DUPLICATED",
                    "Component custom id cannot be duplicated",
                )
            seen.add(custom_id) if custom_id is not None else None
            if comp.get("type") == 2 and comp.get("style") != 5 and custom_id is None:
                errors[f"{where}.custom_id"] = ("BASE_TYPE_REQUIRED", "This field is required")
            if len(comp.get("label") or "") > 80:
                errors[f"{where}.label"] = ("BASE_TYPE_MAX_LENGTH", "Must be 80 or fewer in length.")
    if errors:
        return _form_error(errors)
    if require_body and not (
        content or embeds or components or files or body.get("sticker_ids") or body.get("poll")
    ):
        return _json({"message": "Cannot send an empty message", "code": 50006}, 400)
    return None


def _revision(body: dict, previous: Revision | None) -> Revision:
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


def _pings(content: str, allowed: dict | None) -> Pings:
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


def _guess_type(value: Any) -> int:
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return 4
    if isinstance(value, float):
        return 10
    if isinstance(value, User):
        return 6
    if isinstance(value, Channel):
        return 7
    if isinstance(value, Role):
        return 8
    if isinstance(value, Upload):
        return 11
    return 3


_NAME = re.compile(r"^[-_'\w]{1,32}$")


def _command_errors(cmd: dict) -> dict[str, tuple[str, str]]:
    errors = {}
    name = cmd.get("name", "")
    if not _NAME.match(name) or name != name.lower():
        errors["name"] = ("APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
    if cmd.get("type", 1) == 1 and not 1 <= len(cmd.get("description", "")) <= 100:
        errors["description"] = ("BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
    if len(cmd.get("options") or []) > 25:
        errors["options"] = ("BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    return errors


def _attachment(message_id: int, index: int, name: str) -> dict:
    url = f"https://cdn.discordapp.com/attachments/0/{message_id}/{name}"
    return {"id": str(message_id + index + 1), "filename": name, "size": 0, "url": url, "proxy_url": url}


async def _read_body(request: web.Request) -> tuple[Any, dict[str, bytes]]:
    """JSON bodies, or discord.py's multipart form (payload_json plus files[n]) when files are attached;
    the files as name -> bytes."""
    if request.content_type.startswith("multipart/"):
        form = await request.post()
        files = {
            f.filename: f.file.read()
            for k, f in form.items()
            if k.startswith("files[") and hasattr(f, "filename")
        }
        return json.loads(str(form.get("payload_json", "{}"))), files
    raw = await request.read()
    return (json.loads(raw) if raw else None), {}
