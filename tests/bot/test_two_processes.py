"""Two bot processes on one database (real OS processes: tests/bot/process_worker.py), under the leases:
the second one started beside a live first one leaves its passage alone and waits its turn in the same
story; one started after the first was killed fails the dead one's passage at once and carries on."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from bot.core.story import Channel, Member
from bot.store import Store

from .discord_world import db_rows, final, model_text, write

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_errors_logged")]
REPO = Path(__file__).resolve().parents[2]
HERE = Channel("c1", "g")


async def spawn(*args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.bot.process_worker", *map(str, args),
        stdout=asyncio.subprocess.PIPE, env=env, cwd=REPO,
    )  # fmt: skip


async def said(proc: asyncio.subprocess.Process, timeout: float = 20) -> dict:
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)  # type: ignore[union-attr]
    assert line, f"the worker ended (exit {await proc.wait()})"
    return json.loads(line)


async def until(proc, event: str) -> dict:
    while (said_now := await said(proc))["event"] != event:
        pass
    return said_now


def opening(db: Path) -> None:
    store = Store(db)
    store.add_passage(store.ensure_story(HERE, Member("1", "Alice")), Member("1", "Alice"), "The bell rang.")
    store.close()


async def test_a_second_process_waits_its_turn_in_the_story_and_leaves_the_first_ones_passage(
    ollama_server, tmp_path
):
    db = tmp_path / "story.db"
    opening(db)
    ollama_server.script("writer", text=model_text("Slowly the tide came in. " * 8), tokens_per_second=25)
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


async def test_a_process_started_after_a_kill_fails_the_dead_ones_passage_at_once(ollama_server, tmp_path):
    db = tmp_path / "story.db"
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


async def test_a_second_bot_process_on_discord_leaves_the_first_ones_stream_and_queues_behind_it(world):
    """The issue's case: the second `story-bot` starts while the first streams a passage."""
    fake = world.fake
    world.script(model_text("The rain kept on, and on. " * 10), tokens_per_second=25)
    async with fake.running(world.bot(limits={"lease_s": 2.0})):
        await write(fake, "The storm rolled in.")
        first = await fake.send_slash_command("continue", {})
        await fake.wait_until(lambda: any("▌" in m.content for m in first.messages), 10, "streaming")
        bot2 = await spawn("bot", world.db, world.ollama.url, fake.api_base, fake.gateway_url, fake.token)
        try:
            ready = await said(bot2)
            assert ready["event"] == "ready"  # connected, and its start-up recovery is over
            assert db_rows(world, "SELECT status FROM generations") == [("running",)]
            assert not any(m.content.startswith("⚠️") for m in first.messages)
            second = await fake.send_slash_command("continue", {}, user=fake.mod)  # to the newest bot
            await fake.wait_until(lambda: any(m.components for m in second.messages), 20, "passage 3")
            assert any("Queued: 1 ahead (waiting for another passage" in e.content
                       for e in fake.edits_of(second.messages[0]))  # fmt: skip
            assert "passage 2" in final(first).content and "passage 3" in final(second).content
        finally:
            bot2.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(bot2.wait(), 10) == 0
    rows = db_rows(world, "SELECT status, owner, delivery FROM generations ORDER BY id")
    assert [r[0] for r in rows] == ["done", "done"] and rows[0][1] != rows[1][1]
    assert [r[2] for r in rows] == ["done", "done"]
    [(ctx,)] = db_rows(world, "SELECT json_extract(context, '$.passage_ids') FROM generations WHERE id = 2")
    [(p2,)] = db_rows(world, "SELECT passage_id FROM generations WHERE id = 1")
    assert p2 in json.loads(ctx)
