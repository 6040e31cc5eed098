"""REST: interaction callbacks, followups and the interaction webhook's messages."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from .records import CALL, Call, Callback, Interaction, Message
from .wire import form_error, message_errors, reply
from .world import EPHEMERAL, LOADING


class InteractionRoutes:
    """The routes of an interaction's token: its callback, followups and its webhook's messages.
    (A part of FakeDiscord.)"""

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
            return reply({"message": "Unknown interaction", "code": 10062}, 404)
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
            return 400, reply({"message": "Interaction has already been acknowledged.", "code": 40060}, 400)
        if cb.delay > self.ack_deadline:
            self._violate(
                "late_ack",
                f"{inter.name!r} acknowledged after {cb.delay:.2f}s (limit {self.ack_deadline:.2f}s)",
                inter,
            )
            return 404, reply({"message": "Unknown interaction", "code": 10062}, 404)
        allowed = {2: (4, 5, 9), 3: (4, 5, 6, 7, 9), 5: (4, 5, 6, 7)}.get(inter.type, ())
        if cb.type not in allowed:
            return 400, form_error({"type": ("BASE_TYPE_CHOICES", f"Value must be one of {allowed}.")})
        data = cb.data
        if cb.type in (4, 7) and (error := message_errors(data, require_body=cb.type == 4)):
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
            return 200, reply(result)
        return 204, web.Response(status=204)

    async def _followup(self, request: web.Request) -> web.Response:
        inter = self._interaction_for(request)
        if inter is None:
            return reply({"message": "Unknown Webhook", "code": 10015}, 404)
        if not inter.acked:
            self._violate("followup_before_ack", f"followup to {inter.name!r} before any callback", inter)
            return reply({"message": "Unknown Webhook", "code": 10015}, 404)
        body = request[CALL].body or {}
        if error := message_errors(body, require_body=True, files=request[CALL].files):
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
            return reply(message.payload(self.app_id))
        return web.Response(status=204)

    async def _webhook_message(self, request: web.Request) -> web.Response:
        inter = self._interaction_for(request)
        if inter is None:
            return reply({"message": "Unknown Webhook", "code": 10015}, 404)
        ref = request.match_info["message"]
        mid = inter.original_id if ref == "@original" else int(ref)
        mine = {inter.original_id, *inter.followup_ids}
        message = self.messages.get(mid) if mid in mine else None  # type: ignore[arg-type]
        if message is None or message.deleted:
            return reply({"message": "Unknown Message", "code": 10008}, 404)
        return self._message_verb(request, message)

    def _message_verb(self, request: web.Request, message: Message) -> web.Response:
        if request.method == "GET":
            return reply(message.payload(self.app_id))
        if request.method == "DELETE":
            message.deleted = True
            return web.Response(status=204)
        body = request[CALL].body or {}
        if error := message_errors(body, require_body=False, files=request[CALL].files):
            return error
        if limited := self._revise(message, body, clear_loading=True):
            return limited
        return reply(message.payload(self.app_id))
