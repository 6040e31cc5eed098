"""Rate limits: injected 429s (`rate_limit`) and the optional edit-rate check."""

from __future__ import annotations

import fnmatch
import time

from aiohttp import web

from .records import Call, Message, RateLimit
from .wire import too_many


class RateLimits:
    """Discord's rate limits: 429s a test injects, and the optional edit-rate check.
    (A part of FakeDiscord.)"""

    def rate_limit(
        self, pattern: str, *, times: int = 1, retry_after: float = 0.25, is_global: bool = False
    ) -> RateLimit:
        """Answer the next `times` requests matching "METHOD /path" (fnmatch) with a 429."""
        rule = RateLimit(pattern, times, retry_after, is_global)
        self._rate_limits.append(rule)
        return rule

    def _injected_429(self, call: Call) -> web.Response | None:
        # Discord's global limit covers the bot's requests, not interaction callbacks and webhooks.
        exempt = call.path.startswith(("/interactions/", "/webhooks/"))
        if not exempt and call.t < self._global_until:
            return too_many(self._global_until - call.t, True, "global")
        for rule in self._rate_limits:
            if rule.times > 0 and fnmatch.fnmatchcase(f"{call.method} {call.path}", rule.pattern):
                rule.times -= 1
                rule.hits.append(call.t)
                if rule.is_global:
                    self._global_until = max(self._global_until, call.t + rule.retry_after)
                return too_many(rule.retry_after, rule.is_global, rule.bucket)
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
                return too_many(1.0 - (now - recent[0]), False, f"edit-{message.id}")
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
                return too_many(5.0 - (now - times[-5]), False, f"channel-{channel_id}")
        return None
