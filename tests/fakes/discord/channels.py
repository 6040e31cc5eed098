"""REST: channels, their messages and threads; a message is created and revised here."""

from __future__ import annotations

from aiohttp import web

from .records import CALL, Interaction, Message, new_revision
from .wire import form_error, message_errors, reply
from .world import CREATE_PUBLIC_THREADS, LOADING, PUBLIC_THREAD, SUPPRESS_EMBEDS, Channel


class ChannelRoutes:
    """The channel routes: messages (created and revised here), history and threads.
    (A part of FakeDiscord.)"""

    def _channel_or_404(self, request: web.Request) -> Channel | web.Response:
        found = self._find_channel(int(request.match_info["channel"]))
        if found is None:
            return reply({"message": "Unknown Channel", "code": 10003}, 404)
        return found[1]

    async def _get_channel(self, request: web.Request) -> web.Response:
        channel = self._channel_or_404(request)
        return channel if isinstance(channel, web.Response) else reply(channel.payload())

    async def _history(self, request: web.Request) -> web.Response:
        channel = self._channel_or_404(request)
        if isinstance(channel, web.Response):
            return channel
        limit = int(request.query.get("limit", 50))
        before, after = int(request.query.get("before", 1 << 63)), int(request.query.get("after", 0))
        found = [m for m in self.messages_in(channel, ephemeral=False) if after < m.id < before]
        found = found[:limit] if "after" in request.query else found[-limit:]
        return reply([m.payload(self.app_id) for m in reversed(found)])

    async def _post_message(self, request: web.Request) -> web.Response:
        channel = self._channel_or_404(request)
        if isinstance(channel, web.Response):
            return channel
        body = request[CALL].body or {}
        if error := message_errors(body, require_body=True, files=request[CALL].files):
            return error
        if limited := self._channel_budget(channel.id):
            return limited
        message = self._create(channel, "channel", body, None, files=request[CALL].files)
        return reply(message.payload(self.app_id))

    async def _start_thread(self, request: web.Request) -> web.Response:
        """A thread without a starter message (public; Discord needs Create Public Threads)."""
        channel = self._channel_or_404(request)
        if isinstance(channel, web.Response):
            return channel
        guild = self._find_channel(channel.id)[0]  # type: ignore[index]
        body = request[CALL].body or {}
        if not guild.permissions(self.bot_user) & CREATE_PUBLIC_THREADS:
            return reply({"message": "Missing Permissions", "code": 50013}, 403)
        if channel.type != 0 or body.get("type", PUBLIC_THREAD) != PUBLIC_THREAD:
            return form_error({"type": ("BASE_TYPE_CHOICES", "only public threads in a text channel")})
        if not 1 <= len(body.get("name") or "") <= 100:
            return form_error({"name": ("BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")})
        thread = Channel(
            self.snowflake(),
            body["name"],
            guild.id,
            type=PUBLIC_THREAD,
            parent_id=channel.id,
            owner_id=self.bot_user.id,
        )
        guild.channels[f"{thread.name}#{thread.id}"] = thread
        return reply(thread.payload(), 201)

    async def _channel_message(self, request: web.Request) -> web.Response:
        channel = self._channel_or_404(request)
        if isinstance(channel, web.Response):
            return channel
        message = self.messages.get(int(request.match_info["message"]))
        if message is None or message.deleted or message.channel_id != channel.id or message.ephemeral:
            return reply({"message": "Unknown Message", "code": 10008}, 404)
        if request.method == "PATCH" and message.author.id != self.bot_user.id:
            return reply({"message": "Cannot edit a message authored by another user", "code": 50005}, 403)
        return self._message_verb(request, message)

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
        msg.revisions.append(new_revision(body, None))
        self.messages[msg.id] = msg
        return msg

    def _revise(self, message: Message, body: dict, clear_loading: bool = False) -> web.Response | None:
        """Apply an edit, or answer 429 when edit_rate="enforce" and the edit breaks the budget."""
        if limited := self._edit_budget(message):
            return limited
        rev = new_revision(body, message.current)
        # An edit may set or clear SUPPRESS_EMBEDS only; every other flag stays as it was.
        rev.flags = (message.flags & ~SUPPRESS_EMBEDS) | (rev.flags & SUPPRESS_EMBEDS)
        if clear_loading:
            rev.flags &= ~LOADING
        message.revisions.append(rev)
        return None
