"""The scheduler on its own: a turn per story, slots per server, background work set aside for passages."""

from __future__ import annotations

import asyncio

import pytest

from bot.core.events import Queued
from bot.core.leases import Leases
from bot.core.scheduler import Scheduler, Slots
from bot.store.leases import new_owner


@pytest.fixture
def scheduler(store):
    leases = Leases(store, new_owner(), lease_s=30)
    yield Scheduler(1, leases)
    leases.close()


async def _take(scheduler, story, queued, entered, leave):
    async with scheduler.turn(story) as turn:
        async for q in turn.wait():
            queued.append(q)
        entered.set()
        await leave.wait()


async def test_a_second_turn_on_a_story_is_told_its_place_and_goes_next(scheduler, store):
    first, second = [], []
    in1, in2, leave = asyncio.Event(), asyncio.Event(), asyncio.Event()
    one = asyncio.create_task(_take(scheduler, "c1", first, in1, leave))
    await in1.wait()
    assert (
        store.reads.lease("story:c1")[0] == scheduler.leases.owner
    )  # the story's lease, for other processes
    two = asyncio.create_task(_take(scheduler, "c1", second, in2, leave))
    await asyncio.sleep(0.05)
    assert first == [] and second == [Queued(1, "story")] and not in2.is_set()
    leave.set()
    await asyncio.gather(one, two)
    assert store.reads.lease("story:c1") is None and not scheduler._gates  # all given back


async def test_another_story_waits_for_the_server_slot(scheduler):
    queued, entered, leave = [], asyncio.Event(), asyncio.Event()
    one = asyncio.create_task(_take(scheduler, "c1", [], asyncio.Event(), leave))
    await asyncio.sleep(0.01)
    two = asyncio.create_task(_take(scheduler, "c2", queued, entered, leave))
    await asyncio.sleep(0.05)
    assert queued == [Queued(1, "server")] and not entered.is_set()
    leave.set()
    await asyncio.gather(one, two)
    assert entered.is_set()


async def test_a_passage_takes_the_slot_from_background_work_without_queueing(scheduler):
    holding = asyncio.Event()

    async def background():
        async with scheduler.background():
            holding.set()
            await asyncio.sleep(10)

    job = asyncio.create_task(background())
    await holding.wait()
    queued, entered, leave = [], asyncio.Event(), asyncio.Event()
    leave.set()
    await _take(scheduler, "c1", queued, entered, leave)
    assert queued == [] and entered.is_set()
    with pytest.raises(asyncio.CancelledError):
        await job


async def test_a_driver_leaving_while_it_waits_gives_its_place_back(scheduler):
    entered, leave = asyncio.Event(), asyncio.Event()
    one = asyncio.create_task(_take(scheduler, "c1", [], entered, leave))
    await entered.wait()
    async with scheduler.turn("c1") as turn:  # leaving the turn closes its wait
        assert await anext(turn.wait()) == Queued(1, "story")
    assert scheduler._gates["c1"].waiting == 0  # it left the queue
    leave.set()
    await one
    assert not scheduler._gates


async def test_background_work_waits_behind_passages_for_a_released_slot():
    slots, order = Slots(1), []
    await slots.acquire()

    async def take(name, background):
        await slots.acquire(background=background)
        order.append(name)
        slots.release()

    jobs = [asyncio.create_task(take("summary", True)), asyncio.create_task(take("passage", False))]
    await asyncio.sleep(0)
    slots.release()
    await asyncio.gather(*jobs)
    assert order == ["passage", "summary"] and slots.free == 1


async def test_a_turn_told_to_wait_never_shares_the_story_with_one_that_came_after_the_gate_freed(scheduler):
    # B is told its place while A holds the story, and resumes only after A left and C came in: B must
    # wait for C (before, B took the freed gate A left behind while C held a new one: both ran at once).
    leave_a, leave_c = asyncio.Event(), asyncio.Event()
    in_a, in_c = asyncio.Event(), asyncio.Event()
    a = asyncio.create_task(_take(scheduler, "c1", [], in_a, leave_a))
    await in_a.wait()
    b_turn = scheduler.turn("c1")
    await b_turn.__aenter__()
    b_wait = b_turn.wait()
    assert await anext(b_wait) == Queued(1, "story")  # B paused here, as a driver showing "queued" does
    leave_a.set()
    await a
    c = asyncio.create_task(_take(scheduler, "c1", [], in_c, leave_c))
    await in_c.wait()
    b_next = asyncio.create_task(anext(b_wait, None))
    await asyncio.sleep(0.05)
    assert not b_next.done()  # C holds the story: B waits
    leave_c.set()
    await c
    assert await b_next is None  # B's turn, after C's
    await b_turn.__aexit__(None, None, None)
    assert not scheduler._gates
