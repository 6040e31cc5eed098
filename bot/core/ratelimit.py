"""Pacing that protects the bot and its channels, with no Discord imports.

`MemberRateLimit`: a token bucket per member, so one member's flood of commands is answered with
"slow down" instead of filling the queue. `SlidingWindow`: at most `count` actions per `per` seconds
(Discord's historical budget of 5 sends/edits per 5 s per channel); callers wait for a slot.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .configurable import setting


@dataclass(frozen=True)
class Pace:
    """How fast the Discord adapter may go, as the operator sets it (bot settings of these names)."""

    edit_interval: float = setting(1.0, ge=0.2, help="Seconds between edits of a streaming Discord message.")
    commands_per_minute: int = setting(
        10,
        ge=1,
        name="member_commands_per_minute",
        help="Commands a member may send a minute before being asked to slow down.",
    )


class MemberRateLimit:
    """`per_minute` actions per member, refilled evenly; a member may spend up to `burst` at once."""

    def __init__(
        self, per_minute: int, burst: int | None = None, clock: Callable[[], float] = time.monotonic
    ):
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.rate = per_minute / 60.0
        self.burst = float(burst or per_minute)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # member -> (tokens, when)

    def take(self, member_id: str) -> float:
        """0.0 when the member may act now (one action is counted), else the seconds until they may."""
        now = self._clock()
        tokens, when = self._buckets.get(member_id, (self.burst, now))
        tokens = min(self.burst, tokens + (now - when) * self.rate)
        if tokens < 1.0:
            self._buckets[member_id] = (tokens, now)
            return (1.0 - tokens) / self.rate
        self._buckets[member_id] = (tokens - 1.0, now)
        if len(self._buckets) > 10_000:
            self._forget_full(now)
        return 0.0

    def _forget_full(self, now: float) -> None:
        """Members whose bucket has refilled are the same as members never seen: drop them."""
        full = (self.burst - 1.0) / self.rate
        self._buckets = {m: (t, w) for m, (t, w) in self._buckets.items() if now - w < full}


class SlidingWindow:
    """At most `count` actions in any `per` seconds. `acquire()` waits for a slot; `note()` records an
    action that could not wait (an interaction must be answered at once), which delays later ones."""

    def __init__(self, count: int = 5, per: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.count, self.per = count, per
        self._clock = clock
        self._times: deque[float] = deque(maxlen=count)  # the newest `count` reserved slots, in order

    def delay(self, spare: int = 0) -> float:
        """Seconds until an action would fit (leaving `spare` slots free), without reserving it."""
        used = self.count - spare
        if len(self._times) < used:
            return 0.0
        return max(0.0, self._times[-used] + self.per - self._clock())

    def reserve(self, spare: int = 0) -> float:
        """Reserve the next slot that leaves `spare` slots free; returns how long to wait for it.

        A stream's passing edits keep a spare slot, so its final text never waits for the window."""
        now = self._clock()
        used = self.count - spare  # the slot must be more than `per` after the used-th newest action
        slot = max(now, self._times[-used] + self.per) if len(self._times) >= used else now
        self._times.append(max(slot, self._times[-1]) if self._times else slot)
        return self._times[-1] - now

    async def acquire(self, spare: int = 0) -> None:
        wait = self.reserve(spare)
        if wait > 0:
            await asyncio.sleep(wait)

    def note(self) -> None:
        now = self._clock()
        self._times.append(max(now, self._times[-1]) if self._times else now)

    def idle(self) -> bool:
        """True when no slot was used within `per` seconds (the window can be forgotten)."""
        return not self._times or self._clock() - self._times[-1] > self.per
