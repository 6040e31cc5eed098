"""The application: its bot user, and its slash commands as Discord keeps them (sync, register)."""

from __future__ import annotations

import secrets
import time

from aiohttp import web

from .records import CALL, Sync
from .wire import command_errors, form_error, reply
from .world import Guild


class Application:
    """The application's routes: its bot user, and the slash commands Discord keeps for it.
    (A part of FakeDiscord.)"""

    async def _get_me(self, request: web.Request) -> web.Response:
        return reply({**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "locale": "en-US"})

    async def _get_app(self, request: web.Request) -> web.Response:
        owner = self.users.get("mod", self.bot_user)
        return reply(
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

    def commands(self, guild: Guild | int | None = None) -> dict[str, dict]:
        """The registered command set: global (guild=None) or one guild's, by name."""
        gid = guild.id if isinstance(guild, Guild) else guild
        return self._commands.get(gid, {})

    def register_commands(self, commands: list[dict], guild: Guild | None = None) -> None:
        """Pre-seed commands as if synced by an earlier run (Discord keeps them across restarts)."""
        self._store_commands(guild.id if guild else None, commands)

    def _command_scope(self, request: web.Request) -> int | None | web.Response:
        if request.match_info["app"] != str(self.app_id):
            return reply({"message": "Unknown Application", "code": 10002}, 404)
        guild = request.match_info.get("guild")
        if guild is None:
            return None
        if not any(g.id == int(guild) for g in self.guilds.values()):
            return reply({"message": "Missing Access", "code": 50001}, 403)
        return int(guild)

    async def _get_commands(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        if isinstance(scope, web.Response):
            return scope
        return reply(list(self.commands(scope).values()))

    async def _put_commands(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        if isinstance(scope, web.Response):
            return scope
        body = request[CALL].body
        errors = {f"{i}.{k}": v for i, cmd in enumerate(body) for k, v in command_errors(cmd).items()}
        if len(body) > 100:
            errors["_"] = ("BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
        if errors:
            return form_error(errors)
        stored = self._store_commands(scope, body)
        self.syncs.append(Sync(time.monotonic(), scope, [c["name"] for c in body]))
        return reply(stored)

    async def _post_command(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        if isinstance(scope, web.Response):
            return scope
        body = request[CALL].body
        if errors := command_errors(body):
            return form_error(errors)
        existed = body["name"] in self.commands(scope)
        stored = self._store_commands(scope, list({**self.commands(scope), body["name"]: body}.values()))
        return reply(next(c for c in stored if c["name"] == body["name"]), 200 if existed else 201)

    async def _delete_command(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        if isinstance(scope, web.Response):
            return scope
        commands = self._commands.get(scope, {})
        name = next((n for n, c in commands.items() if c["id"] == request.match_info["command"]), None)
        if name is None:
            return reply({"message": "Unknown application command", "code": 10063}, 404)
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
