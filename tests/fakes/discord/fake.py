"""The fake Discord: its state, world builders, lifecycle and queries; each route family and what users do
live in the classes it is built from (application, gateway, users, interactions, channels, ratelimits)."""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, Literal

import discord
import yarl
from aiohttp import web

from .application import Application
from .channels import ChannelRoutes
from .gateway import Gateway, GatewayConnection
from .interactions import InteractionRoutes
from .ratelimits import RateLimits
from .records import CALL, Call, Callback, Interaction, Message, RateLimit, Revision, Sync, Violation
from .users import Users
from .wire import read_body, reply
from .world import DISCORD_EPOCH_MS, MANAGE_MESSAGES, MEMBER_PERMISSIONS, Channel, Guild, Role, Upload, User


class FakeDiscord(Application, Gateway, Users, InteractionRoutes, ChannelRoutes, RateLimits):
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
        body, uploads = await read_body(request)
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
            return reply({"message": "401: Unauthorized", "code": 0}, 401)
        return None

    async def _unknown(self, request: web.Request) -> web.Response:
        return reply({"message": "404: Not Found (the fake does not serve this route)", "code": 0}, 404)

    async def _attachment(self, request: web.Request) -> web.Response:
        """The CDN: an uploaded attachment's bytes."""
        upload = self.uploads.get(int(request.match_info["id"]))
        if upload is None or upload.filename != request.match_info["name"]:
            return web.Response(status=404)
        self.downloads.append(upload.id)
        self._touch()
        return web.Response(body=upload.data, content_type=upload.content_type)

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

    def _user_by_id(self, user_id: int) -> User:
        return next(u for u in self.users.values() if u.id == user_id)
