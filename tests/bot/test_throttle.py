"""Throttled streaming edits: one in flight, spaced out, newest text wins."""

from __future__ import annotations

import asyncio
import time

from bot.core.throttle import EditThrottle


async def test_a_burst_becomes_few_spaced_edits_ending_with_the_newest_text():
    sent: list[tuple[float, str]] = []
    in_flight = peak = 0

    async def send(text: str) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        sent.append((time.monotonic(), text))
        await asyncio.sleep(0.03)  # a slow edit: updates pile up meanwhile
        in_flight -= 1

    throttle = EditThrottle(send, interval=0.05)
    for i in range(60):
        throttle.update(f"text {i}")
        await asyncio.sleep(0.002)
    await throttle.close("final")
    texts = [t for _, t in sent]
    assert texts[0] == "text 0" and texts[-1] == "final"
    assert len(texts) < 10 and peak == 1
    gaps = [b - a for (a, _), (b, _) in zip(sent, sent[1:], strict=False)]
    assert min(gaps) >= 0.045


async def test_a_failed_edit_is_recorded_and_the_next_text_still_goes_out():
    sent: list[str] = []

    async def send(text: str) -> None:
        if text == "bad":
            raise RuntimeError("429")
        sent.append(text)

    throttle = EditThrottle(send, interval=0.0)
    await throttle.close("bad")
    await throttle.close("good")
    assert sent == ["good"] and len(throttle.errors) == 1


async def test_the_same_text_is_not_sent_twice():
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(text)

    throttle = EditThrottle(send, interval=0.0)
    await throttle.close("same")
    await throttle.close("same")
    assert sent == ["same"]
