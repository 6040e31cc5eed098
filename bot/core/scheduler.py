"""Whose turn it is to ask the model: one generation at a time per story, a bounded number per server.

    async with scheduler.turn(channel.id) as turn:
        async for queued in turn.wait():     # Queued events while others go first
            yield queued
        ...                                   # this story's turn, with a server slot

A turn waits, in order, for the story's gate (this process's other passages of the story), the story's
lease in the store (another process's), then a server slot (`Limits.parallel`). Passages come before
background work: a summary takes a slot only when no passage waits for one (:meth:`Scheduler.background`),
and gives it up (its task is cancelled, to be retried later) when a passage would otherwise wait.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType

from .events import Queued
from .leases import Leases


class Slots:
    """The server's slots. Passages come first: a background job only takes a slot no passage is
    waiting for, and a released slot passes to a waiting passage before a waiting job."""

    def __init__(self, n: int):
        self.free = n
        self._waiters: deque[tuple[bool, asyncio.Future[None]]] = deque()

    def locked(self) -> bool:
        return self.free <= 0

    async def acquire(self, background: bool = False) -> None:
        ahead = any(not f.done() and (background or not bg) for bg, f in self._waiters)
        if self.free > 0 and not ahead:
            self.free -= 1
            return
        waiter = (background, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            await waiter[1]
        except asyncio.CancelledError:
            if waiter[1].done() and not waiter[1].cancelled():  # handed a slot as it was cancelled
                self.release()
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def release(self) -> None:
        for background in (False, True):
            for waiter in self._waiters:
                if waiter[0] == background and not waiter[1].done():
                    self._waiters.remove(waiter)
                    waiter[1].set_result(None)  # the slot passes straight to the waiter
                    return
        self.free += 1


@dataclass
class _Gate:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: int = 0


class Scheduler:
    def __init__(self, parallel: int, leases: Leases):
        self.leases = leases
        self._slots = Slots(parallel)
        self._gates: dict[str, _Gate] = {}
        self._waiting_for_slot = 0
        self._background: set[asyncio.Task] = set()  # background jobs holding a slot

    def turn(self, story: str) -> Turn:
        """A passage's turn on the story `story` (a channel id): see the module's docstring."""
        return Turn(self, story)

    @asynccontextmanager
    async def background(self) -> AsyncIterator[None]:
        """Hold a server slot no passage is waiting for; the task is cancelled when a passage needs it."""
        await self._slots.acquire(background=True)
        task = asyncio.current_task()
        assert task is not None  # a slot is only awaited inside a task
        self._background.add(task)
        try:
            yield
        finally:
            self._background.discard(task)
            self._slots.release()

    # --- what a Turn takes and gives back, in order: the story's gate, then a server slot -------------
    def story_ahead(self, story: str) -> int:
        """Passages of `story` in this process ahead of a new one (0: its gate is free)."""
        gate = self._gates.get(story)
        return gate.waiting + 1 if gate is not None and gate.lock.locked() else 0

    async def enter_story(self, story: str) -> None:
        # The gate is looked up after any wait of the caller's, so one freed and dropped meanwhile is
        # never re-entered beside a new one.
        gate = self._gates.setdefault(story, _Gate())
        gate.waiting += 1
        try:
            await gate.lock.acquire()
        finally:
            gate.waiting -= 1

    def leave_story(self, story: str) -> None:
        gate = self._gates[story]
        gate.lock.release()
        if gate.waiting == 0 and not gate.lock.locked():
            del self._gates[story]

    def server_ahead(self) -> int:
        """Passages waiting for a server slot ahead of a new one (0: one is free, or a background job
        is told to give its up)."""
        if self._slots.locked() and not self._preempt():
            return self._waiting_for_slot + 1
        return 0

    async def take_slot(self) -> None:
        self._waiting_for_slot += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting_for_slot -= 1

    def give_slot(self) -> None:
        self._slots.release()

    def _preempt(self) -> bool:
        """A passage must wait for the server: a background job holding a slot gives it up."""
        for task in self._background:
            if not task.cancelling():
                task.cancel()
                return True
        return False


class Turn:
    """One passage's place in the queues; leaving it (the `async with`) gives back what it took."""

    def __init__(self, scheduler: Scheduler, story: str):
        self._scheduler = scheduler
        self._story = story
        self._lease = f"story:{story}"
        self._in_story = False  # holds the story's gate and lease
        self._slot = False  # holds a server slot
        self._waiting: AsyncGenerator[Queued, None] | None = None

    async def __aenter__(self) -> Turn:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._waiting is not None:
            await self._waiting.aclose()  # a driver that stopped listening while it waited
        s = self._scheduler
        if self._slot:
            s.give_slot()
        if self._in_story:
            s.leases.drop(self._lease)
            s.leave_story(self._story)

    def wait(self) -> AsyncGenerator[Queued, None]:
        """Wait for the turn, telling (Queued) what it waits for: iterate it to the end before the work."""
        self._waiting = self._wait()
        return self._waiting

    async def _wait(self) -> AsyncGenerator[Queued, None]:
        s = self._scheduler
        if ahead := s.story_ahead(self._story):
            yield Queued(ahead, "story")
        await s.enter_story(self._story)
        self._in_story = True
        told = False
        while not s.leases.hold(self._lease):  # another process's passage of this story first
            if not told:
                told = True
                yield Queued(1, "story")
            await asyncio.sleep(min(1.0, max(0.05, s.leases.lease_s / 30)))
        if ahead := s.server_ahead():
            yield Queued(ahead, "server")
        await s.take_slot()
        self._slot = True
