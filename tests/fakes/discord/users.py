"""What users do: slash commands, buttons, selects, modals and messages, sent to the bot as gateway events."""

from __future__ import annotations

import secrets
import time
from typing import Any

from .records import Interaction, Message, Revision
from .wire import guess_type, walk_components
from .world import MEMBER_PERMISSIONS, Channel, Guild, Role, Upload, User


class Users:
    """What a user does, sent to the bot as gateway events: slash commands, buttons, selects, modals and
    messages. (A part of FakeDiscord.)"""

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
        inputs = {c["custom_id"]: c for c in walk_components(modal.get("components", [])) if c["type"] == 4}
        inputs.update(
            {
                c["component"]["custom_id"]: c["component"]
                for c in modal.get("components", [])
                if c["type"] == 18 and c["component"]["type"] == 4
            }
        )
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
            kind = spec.get("type") or guess_type(value)
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
                "id": str(value.id),
                "filename": value.filename,
                "content_type": value.content_type,
                "size": len(value.data) if value.size is None else value.size,
                "url": url,
                "proxy_url": url,
                "ephemeral": True,
            }
            return str(value.id)
        if isinstance(value, Role):
            resolved.setdefault("roles", {})[str(value.id)] = value.payload()
            return str(value.id)
        return value
