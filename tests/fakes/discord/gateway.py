"""The gateway: the websocket the bot connects to, READY and GUILD_CREATE, and the live connections."""

from __future__ import annotations

import json
import secrets
import time
import zlib
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from .wire import reply
from .world import PUBLIC_THREAD, Guild, iso

if TYPE_CHECKING:
    from .fake import FakeDiscord


class Gateway:
    """The gateway's routes and the bot's live connections (READY, GUILD_CREATE, shards).
    (A part of FakeDiscord.)"""

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
        return reply(data)

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
            "joined_at": iso(time.time() - 86_400),
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

    async def drop_connection(self, code: int = 4000) -> None:
        """Close the bot's gateway socket as Discord does on trouble (4000: unknown error, resumable)."""
        await self.connection.ws.close(code=code, message=b"fake-discord dropped the connection")


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
