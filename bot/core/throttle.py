"""Throttled message edits for streaming text, with no Discord imports.

One edit in flight per message, at least `interval` seconds between the starts of two edits, and the
newest text wins: text that arrives while an edit is in flight or cooling down replaces any text still
waiting, so a burst of tokens costs one edit. `close()` sends the final text and waits for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class EditThrottle:
    def __init__(
        self,
        send: Callable[[str], Awaitable[None]],
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._send = send
        self.interval = interval
        self._clock = clock
        self._pending: str | None = None
        self._shown: str | None = None
        self._last_start = -float("inf")
        self._task: asyncio.Task | None = None
        self.edits = 0
        self.errors: list[BaseException] = []

    def update(self, text: str) -> None:
        """Ask for the message to show `text`; returns at once."""
        self._pending = text
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())

    async def close(self, text: str | None = None) -> None:
        """Show `text` (or the newest pending text) and wait until every edit has finished."""
        if text is not None:
            self.update(text)
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def _drain(self) -> None:
        while self._pending is not None:
            wait = self._last_start + self.interval - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            text, self._pending = self._pending, None
            if text == self._shown:
                continue
            self._last_start = self._clock()
            try:
                await self._send(text)
                self._shown = text
                self.edits += 1
            except Exception as exc:  # a failed edit is not retried; the next text will try again
                self.errors.append(exc)
