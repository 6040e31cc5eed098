"""Two bot processes on one database (real OS processes: tests/bot/process_worker.py), under the leases:
the second one started beside a live first one leaves its passage alone and waits its turn in the same
story; one started after the first was killed fails the dead one's passage at once and carries on."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from bot.core.story import Channel, Member
from bot.store import Store
from bot.store.leases import gateway_key

from .discord_world import continue_, db_rows, final, model_text, write

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_errors_logged")]
REPO = Path(__file__).resolve().parents[2]
HERE = Channel("c1", "g")


async def spawn(*args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.bot.process_worker",
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
        env=env,
        cwd=REPO,
    )


async def said(proc: asyncio.subprocess.Process, timeout: float = 20) -> dict:
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)  # type: ignore[union-attr]
    assert line, f"the worker ended (exit {await proc.wait()})"
    return json.loads(line)


async def until(proc, event: str) -> dict:
    while (said_now := await said(proc))["event"] != event:
        pass
    return said_now


def opening(db: Path | str) -> None:
    store = Store(db)
    store.add_passage(store.ensure_story(HERE, Member("1", "Alice")), Member("1", "Alice"), "The bell rang.")
    store.close()


async def test_a_second_process_waits_its_turn_in_the_story_and_leaves_the_first_ones_passage(
    ollama_server, shared_db
):
    db = shared_db
    opening(db)
    ollama_server.script("writer", text=model_text("Slowly the tide came in. " * 20), tokens_per_second=25)
    first = await spawn("continue", db, ollama_server.url, HERE.id)
    assert (await said(first))["lost"] == []
    started = await until(first, "started")
    second = await spawn("continue", db, ollama_server.url, HERE.id)
    recovered = await said(second)
    assert recovered["lost"] == []  # the first process's live generation is not failed
    assert await said(second) == {"event": "queued", "position": 1, "waiting_for": "story"}
    done = await until(first, "done")
    later = await until(second, "done")
    assert (done["position"], later["position"]) == (2, 3)
    assert await first.wait() == 0 and await second.wait() == 0
    store = Store(db)
    one, two = store.generation(started["generation_id"]), store.generation(later["generation_id"])
    assert (one.status, two.status) == ("done", "done") and one.owner != two.owner
    assert one.passage_id in two.context["passage_ids"]  # written after the first, from it
    [(first_end,)] = store.conn.execute("SELECT finished_at FROM generations WHERE id = ?", (one.id,))
    [(second_start,)] = store.conn.execute("SELECT created_at FROM generations WHERE id = ?", (two.id,))
    assert second_start >= first_end  # never two passages of one story at once
    assert store.conn.execute("SELECT count(*) FROM leases").fetchone()[0] == 0
    store.close()


async def test_a_process_started_after_a_kill_fails_the_dead_ones_passage_at_once(ollama_server, shared_db):
    db = shared_db
    opening(db)
    ollama_server.script("writer", text=model_text("Slowly. " * 200), tokens_per_second=5)
    doomed = await spawn("continue", db, ollama_server.url, HERE.id)
    lost_gen = (await until(doomed, "started"))["generation_id"]
    doomed.send_signal(signal.SIGKILL)
    await doomed.wait()
    ollama_server.script("writer", text=model_text("The tide came in."))
    second = await spawn("continue", db, ollama_server.url, HERE.id)
    # Its lease has 2 s to run, but its owner's pid is dead on this host: gone now.
    assert (await said(second))["lost"] == [lost_gen]
    assert (await said(second))["event"] == "started"  # not queued behind the dead one
    assert (await until(second, "done"))["position"] == 2
    await second.wait()
    store = Store(db)
    assert store.generation(lost_gen).status == "failed"
    store.close()


async def test_a_second_bot_on_the_same_events_refuses_to_start_and_leaves_the_first_alone(world):
    """The issue's case: a second `story-bot` started while the first streams a passage. Discord would
    send it every interaction too, so it refuses, saying which process holds the events, and touches
    nothing: the first's passage is not failed and lands."""
    fake = world.fake
    world.script(
        model_text("The rain kept on, and on. " * 30), tokens_per_second=25
    )  # ~7 s: a loaded machine starts the second process slowly
    async with fake.running(world.bot(limits={"lease_s": 2.0})) as first_bot:
        await write(fake, "The storm rolled in.")
        first = await fake.send_slash_command("continue", {})
        await fake.wait_until(lambda: any("▌" in m.content for m in first.messages), 10, "streaming")
        bot2 = await spawn("bot", world.db, world.ollama.url, fake.api_base, fake.gateway_url, fake.token)
        refused = await said(bot2)
        assert refused["event"] == "refused" and await bot2.wait() == 3
        pid = first_bot.story.service.owner.split(":")[1]
        assert f"another story-bot process (pid {pid} on " in refused["message"]
        assert "STORY_BOT_SHARDS, or STORY_BOT_SHARD_ID, and STORY_BOT_SHARD_COUNT" in refused["message"]
        assert db_rows(world, "SELECT status FROM generations") == [("running",)]
        await fake.wait_until(lambda: any(m.components for m in first.messages), 20, "passage 2")
        assert "passage 2" in final(first).content
    warned = [m.content for m in fake.messages_in(fake.general) if "⚠️" in m.content]
    assert not warned, warned
    assert db_rows(world, "SELECT status, delivery FROM generations") == [("done", "done")]
    assert len(fake.connections) == 1  # the refused one never reached the gateway


def other_shard_guild(fake):
    """A second guild whose events Discord sends to the other of two shards."""
    while True:
        guild = fake.add_guild(f"guild {len(fake.guilds)}")
        if (guild.id >> 22) % 2 != (fake.guild.id >> 22) % 2:
            return guild
        time.sleep(0.002)  # the next snowflake's timestamp moves on


async def test_two_bot_processes_on_their_own_shards_work_beside_each_other_on_one_database(world):
    fake = world.fake
    far = other_shard_guild(fake)
    shard = (fake.guild.id >> 22) % 2
    world.script(model_text("The rain kept on, and on. " * 10), tokens_per_second=25)
    bot = world.bot(limits={"lease_s": 2.0}, shard_id=shard, shard_count=2)
    async with fake.running(bot):
        await write(fake, "The storm rolled in.")
        near_run = await fake.send_slash_command("continue", {})
        await fake.wait_until(lambda: any("▌" in m.content for m in near_run.messages), 10, "streaming")
        bot2 = await spawn(
            "bot", world.db, world.ollama.url, fake.api_base, fake.gateway_url, fake.token, 1 - shard, 2
        )
        try:
            assert (await said(bot2))["event"] == "ready"  # connected, its start-up recovery over
            assert db_rows(world, "SELECT status FROM generations") == [("running",)]  # left alone
            await write(fake, "Far away, the sun.", channel=far.channels["general"])  # to the other bot
            far_run = await continue_(fake, channel=far.channels["general"])
            await fake.wait_until(lambda: any(m.components for m in near_run.messages), 20, "near passage")
            assert "passage 2" in final(near_run).content and "passage 2" in final(far_run).content
        finally:
            bot2.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(bot2.wait(), 10) == 0
    rows = db_rows(world, "SELECT status, owner, delivery FROM generations ORDER BY id")
    assert [(r[0], r[2]) for r in rows] == [("done", "done"), ("done", "done")] and rows[0][1] != rows[1][1]
    assert not any(m.content.startswith("⚠️") for m in fake.messages_in(fake.general))


async def test_a_process_whose_shard_range_overlaps_a_live_ones_refuses_and_a_disjoint_one_runs(world):
    fake = world.fake
    mine = (fake.guild.id >> 22) % 4  # the shard the test guild's events go to, of 4
    first = sorted({mine, (mine + 1) % 4})
    rest = [s for s in range(4) if s not in first]
    async with fake.running(world.bot(limits={"lease_s": 2.0}, shard_ids=first, shard_count=4)):
        args = (world.db, world.ollama.url, fake.api_base, fake.gateway_url, fake.token)
        overlapping = await spawn("bot", *args, f"{rest[0]},{first[1]}", 4)
        refused = await said(overlapping)
        assert refused["event"] == "refused" and await overlapping.wait() == 3
        ids = gateway_key([rest[0], first[1]], 4).rsplit(":", 1)[1]  # "1-2" or "0,3"
        assert f"(the one you start would take shards {ids} of 4 of its events)" in refused["message"]
        disjoint = await spawn("bot", *args, ",".join(map(str, rest)), 4)
        try:
            assert (await said(disjoint))["event"] == "ready"
            holders = db_rows(world, "SELECT key FROM leases WHERE key LIKE 'gateway:%' ORDER BY key")
            assert sorted(k for (k,) in holders) == sorted([gateway_key(first, 4), gateway_key(rest, 4)])
            await write(fake, "The storm rolled in.")  # the first process still serves its guild
            assert "passage 2" in final(await continue_(fake)).content
        finally:
            disjoint.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(disjoint.wait(), 10) == 0


async def test_story_bot_run_says_plainly_that_another_process_has_the_events(world, capsys):
    import typer

    from bot.cli import _run
    from bot.config import load_settings

    fake = world.fake
    async with fake.running(world.bot()) as running:
        settings = load_settings(None, ollama_host=world.ollama.url, db=world.db, model="writer")
        with pytest.raises(typer.Exit):
            await _run(settings, fake.token)
        err = capsys.readouterr().err
        assert err.startswith("story-bot: another story-bot process (pid ") and str(world.db) in err
        assert running.story.service.owner.split(":")[1] in err and len(fake.connections) == 1
