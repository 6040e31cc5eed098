"""Delivery that converges, end to end: the real discord.py client (StoryBot) against the stand-in Discord
answering bursts of 429s (retry_after, X-RateLimit-* headers, the global flag, as Discord sends them).
Whatever the burst, once Discord accepts requests again the channel shows the stored passage: every
part, the exact text, the buttons, nothing twice."""

from __future__ import annotations

import sqlite3
import time

import pytest

from bot.discord.delivery import LATE
from bot.discord.stream import passage_text, split

from .discord_world import continue_, db_rows, model_text, write

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_errors_logged")]

PARAGRAPH = "The lamp swung in the wind and the keeper counted the ships coming home, one by one. " * 4
LONG = "\n\n".join(f"{i}. {PARAGRAPH.strip()}" for i in range(18))  # about 6,200 characters: 4 messages
FAST = {"redeliver_backoff": (0.05, 0.4)}


def passage_messages(fake) -> list:
    """The bot's messages in #general that anyone sees, oldest first, /write echoes left out."""
    return [
        m
        for m in fake.messages_in(fake.general, ephemeral=False)
        if m.author.id == fake.bot_user.id and not (m.interaction and m.interaction.name == "write")
    ]


def expected_parts(world, gen: int) -> list[str]:
    """What the messages of generation `gen` must show: computed from the store, not from Discord."""
    [(answer, position, author)] = db_rows(
        world,
        "SELECT g.answer, p.position, p.author_name FROM generations g "
        "JOIN passages p ON p.id = g.passage_id WHERE g.id = ?",
        gen,
    )
    return split(passage_text(answer, position, author, 1))


def assert_converged(world, fake, gen: int) -> None:
    shown = passage_messages(fake)
    assert [m.content for m in shown] == expected_parts(world, gen)  # every part, exact, nothing twice
    assert [bool(m.components) for m in shown] == [False] * (len(shown) - 1) + [True]
    assert shown[-1].custom_ids[0] == f"story:rate:{gen}:up"
    assert all(m.unfurled == [] and not m.loading for m in shown)
    [(ref, delivery)] = db_rows(world, "SELECT message_ref, delivery FROM generations WHERE id = ?", gen)
    assert delivery == "done" and ref == f"{fake.general.id}:" + ",".join(str(m.id) for m in shown)
    assert not db_rows(world, "SELECT key FROM leases WHERE key = ?", f"delivery:{gen}")


async def streaming(fake, run) -> None:
    await fake.wait_until(lambda: any("▌" in m.content for m in run.messages), 10, "streamed text")


@pytest.mark.parametrize("route", ["webhook", "global"])
async def test_a_burst_of_40_429s_mid_stream_ends_with_the_whole_stored_passage(world, route):
    """40 429s (discord.py gives up on a request after 5): through the interaction's webhook, or, once
    the token is old, through the channel under a global rate limit."""
    fake = world.fake
    world.script(model_text(LONG + " https://example.com/harbour"), tokens_per_second=1000)
    options = {**FAST, "token_lifetime": 0.0 if route == "global" else 840.0}
    async with fake.running(world.bot(**options)):
        await write(fake, "The storm rolled in over the harbour.")
        run = await fake.send_slash_command("continue", {"length": "long"})
        await streaming(fake, run)
        burst = fake.rate_limit("*", times=40, retry_after=0.02, is_global=route == "global")
        [(gen,)] = await fake.wait_until(
            lambda: db_rows(world, "SELECT id FROM generations WHERE delivery = 'done'"), 30, "the delivery"
        )
        assert burst.times == 0 and len(burst.hits) == 40
        assert_converged(world, fake, gen)
        assert len(passage_messages(fake)) == 4


async def test_a_member_is_told_when_discord_holds_their_passage_back(world, caplog):
    fake = world.fake
    world.script(model_text(LONG), tokens_per_second=1000)
    async with fake.running(world.bot(**FAST)):
        await write(fake, "The storm rolled in.")
        run = await fake.send_slash_command("continue", {"length": "long"})
        await streaming(fake, run)
        burst = fake.rate_limit("PATCH *", times=10_000, retry_after=0.01)  # edits refused; sends pass
        note = await fake.wait_until(
            lambda: next((m for m in run.messages if m.content == LATE), None), 30, "the late note"
        )
        assert note.ephemeral  # only the member who asked
        assert db_rows(world, "SELECT status, delivery FROM generations") == [("done", "pending")]
        refused = lambda: any("refused" in r.getMessage() for r in caplog.records)  # noqa: E731
        await fake.wait_until(refused, 10, "a background attempt refused")  # then backing off
        burst.times = 0
        [(gen,)] = await fake.wait_until(
            lambda: db_rows(world, "SELECT id FROM generations WHERE delivery = 'done'"), 30, "the delivery"
        )
        assert_converged(world, fake, gen)
        assert sum(m.content == LATE for m in run.messages) == 1  # told once


async def test_a_restart_delivers_what_the_last_run_could_not(world):
    """Discord refuses everything until the bot is stopped; the next process delivers from the store."""
    fake = world.fake
    world.script(model_text(LONG), tokens_per_second=1000)
    async with fake.running(world.bot(**FAST)):
        await write(fake, "The storm rolled in.")
        run = await fake.send_slash_command("continue", {"length": "long"})
        await streaming(fake, run)
        burst = fake.rate_limit("*", times=10_000, retry_after=0.01)
        await fake.wait_until(
            lambda: db_rows(world, "SELECT id FROM generations WHERE status = 'done'"), 30, "the passage"
        )
        await fake.wait_until(lambda: len(burst.hits) > 25, 10, "a delivery retried")
    [(gen, delivery)] = db_rows(world, "SELECT id, delivery FROM generations")
    assert delivery == "pending" and not db_rows(world, "SELECT * FROM leases")  # handed over
    assert "by the model" not in "".join(m.content for m in passage_messages(fake))
    burst.times = 0  # Discord accepts requests again
    bot = world.bot(**FAST)
    async with fake.running(bot):
        await bot.story.deliveries.recovery
        assert_converged(world, fake, gen)


async def test_a_passage_stored_by_a_crashed_process_is_delivered_on_start(world):
    """The process died after the store had the passage and before Discord had it (the database as the
    crash left it: done, delivery pending, the lease of a process that is gone)."""
    fake = world.fake
    world.script(model_text(LONG), tokens_per_second=1000)
    async with fake.running(world.bot(**FAST)):
        await write(fake, "The storm rolled in.")
        run = await fake.send_slash_command("continue", {"length": "long"})
        await streaming(fake, run)
        fake.rate_limit("*", times=10_000, retry_after=0.01)
        await fake.wait_until(
            lambda: db_rows(world, "SELECT id FROM generations WHERE status = 'done'"), 30, "the passage"
        )
        crashed = world.db.with_name("crashed.db")
        with sqlite3.connect(world.db) as src, sqlite3.connect(crashed) as dst:
            src.backup(dst)
    assert db_rows(world, "SELECT key FROM leases") == []
    world.db = crashed
    assert ("delivery:1",) in db_rows(world, "SELECT key FROM leases")  # the dead process's
    fake._rate_limits.clear()
    bot = world.bot(**FAST)
    async with fake.running(bot):
        # The owner is retired (gone): its lease does not hold the delivery back.
        await bot.story.deliveries.recovery
        assert_converged(world, fake, 1)


async def test_a_regeneration_under_a_burst_leaves_the_old_take_marked_and_the_new_one_whole(world):
    fake = world.fake
    async with fake.running(world.bot(**FAST)):
        await write(fake, "The storm rolled in.")
        first = next(m for m in (await continue_(fake, length="long")).messages if m.components)
        gen = int(first.custom_ids[0].split(":")[2])
        world.script(model_text(LONG), tokens_per_second=1000)
        regen = await fake.press_button(first, f"story:regen:{gen}", user=fake.mod)
        await streaming(fake, regen)
        fake.rate_limit("*", times=40, retry_after=0.02)
        await fake.wait_until(
            lambda: len(db_rows(world, "SELECT id FROM generations WHERE delivery = 'done'")) == 2,
            30,
            "both deliveries",
        )
        assert first.components == [] and "replaced by a regeneration" in first.content
        new = [m for m in regen.messages if not m.ephemeral]
        assert "take 2" in new[-1].content and new[-1].components and len(new) == 4


async def test_a_running_bot_takes_over_a_delivery_once_the_other_machines_lease_lapses(world):
    fake = world.fake
    world.script(model_text(LONG), tokens_per_second=1000)
    async with fake.running(world.bot(**FAST)):
        await write(fake, "The storm rolled in.")
        run = await fake.send_slash_command("continue", {"length": "long"})
        await streaming(fake, run)
        burst = fake.rate_limit("*", times=10_000, retry_after=0.01)
        await fake.wait_until(
            lambda: db_rows(world, "SELECT id FROM generations WHERE status = 'done'"), 30, "the passage"
        )
    burst.times = 0
    with sqlite3.connect(world.db) as c:  # a process on another machine is delivering it, for 1 s more
        c.execute("INSERT INTO leases VALUES ('delivery:1', 'elsewhere:4242:f00d', ?)", (time.time() + 1,))
    bot = world.bot(sweep_every=0.2, **FAST)
    async with fake.running(bot):
        await bot.story.deliveries.recovery
        assert db_rows(world, "SELECT delivery FROM generations") == [("pending",)]  # not ours yet
        await fake.wait_until(
            lambda: db_rows(world, "SELECT id FROM generations WHERE delivery = 'done'"), 10, "the takeover"
        )
        assert_converged(world, fake, 1)
