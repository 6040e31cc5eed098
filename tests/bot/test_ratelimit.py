"""The member flood guard (token bucket) and the channel budget (sliding window), on a fake clock."""

from __future__ import annotations

import pytest

from bot.core.ratelimit import MemberRateLimit, SlidingWindow


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_member_gets_a_burst_then_waits_for_the_refill_and_others_are_not_held_back():
    clock = Clock()
    limit = MemberRateLimit(per_minute=6, burst=3, clock=clock)  # one action per 10 s, 3 at once
    assert [limit.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limit.take("a") == pytest.approx(10.0)
    assert limit.take("b") == 0.0
    clock.now += 4
    assert limit.take("a") == pytest.approx(6.0)  # a refused try costs nothing
    clock.now += 6
    assert limit.take("a") == 0.0 and limit.take("a") == pytest.approx(10.0)
    clock.now += 1000
    assert [limit.take("a") for _ in range(4)][-1] > 0  # the bucket holds `burst` at most
    with pytest.raises(ValueError):
        MemberRateLimit(0)


def test_the_window_spaces_a_burst_to_count_per_period_and_noted_actions_count():
    clock = Clock()
    window = SlidingWindow(count=5, per=5.0, clock=clock)
    waits = [window.reserve() for _ in range(7)]
    assert waits == [0, 0, 0, 0, 0, 5.0, 5.0]  # the 6th and 7th go 5 s after the 1st and 2nd
    clock.now += 11
    assert window.idle() and window.delay() == 0
    for _ in range(5):
        window.note()  # answered at once (an interaction), but they use the budget
    assert window.delay() == pytest.approx(5.0) and window.reserve() == pytest.approx(5.0)
    assert not window.idle()


def test_a_reservation_can_keep_a_spare_slot():
    clock = Clock()
    window = SlidingWindow(count=5, per=5.0, clock=clock)
    assert [window.reserve(spare=1) for _ in range(5)] == [0, 0, 0, 0, 5.0]  # passing edits: 4 per 5 s
    clock.now += 1
    window = SlidingWindow(count=5, per=5.0, clock=clock)
    for _ in range(4):
        window.reserve(spare=1)
    assert window.delay(spare=1) == 5.0 and window.delay() == 0
    assert window.reserve() == 0  # the final edit goes at once


async def test_acquire_sleeps_for_its_slot():
    window = SlidingWindow(count=1, per=0.05)
    await window.acquire()
    assert window.delay() > 0
    await window.acquire()  # waited ~0.05 s
    assert window.delay() > 0
