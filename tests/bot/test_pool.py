"""A pool of Ollama hosts (bot/pool.py) against several stand-in Ollama servers on real sockets: where a
passage goes, that a story goes back to its host, and that nothing is lost when a host fails or dies."""

from __future__ import annotations

import asyncio
import time

import pytest
from typer.testing import CliRunner

from bot.core.service import Delta, Done, Failed, Limits, StoryService
from bot.llm import STORY, HostFailed, ModelMissing, Unreachable
from bot.pool import OllamaPool
from contract.serving import GenerateRequest
from tests.fakes.ollama import FakeOllama, refused_url

from .conftest import ALICE, HERE, WRITER
from .discord_world import model_text

pytestmark = pytest.mark.timeout(60)
REQUEST = GenerateRequest(prompt="Once upon a time", user_text="Once upon a time", raw=True)


@pytest.fixture
def hosts():
    """Three stand-in Ollama servers, each with the writer model."""
    servers = [FakeOllama() for _ in range(3)]
    for s in servers:
        s.start()
        s.add_model("writer", template=WRITER)
    yield servers
    for s in servers:
        s.stop()


def generations(server: FakeOllama) -> int:
    return len(server.calls("/api/generate"))


async def passage(pool: OllamaPool, story: str | None = None) -> str:
    STORY.set(story)
    out = ""
    async for piece in pool.generate("writer", REQUEST, {}):
        out += piece.text
    return out


async def test_a_passage_goes_only_to_a_host_that_has_the_model(hosts):
    a, b, c = hosts
    del a.models["writer:latest"], c.models["writer:latest"]
    pool = OllamaPool([a.url, b.url, c.url])
    try:
        for _ in range(3):
            assert "did not look back" in await passage(pool)
        assert (generations(a), generations(b), generations(c)) == (0, 3, 0)
        del b.models["writer:latest"]
        pool.tags_ttl = 0  # look at the lists again now
        with pytest.raises(
            ModelMissing, match=r"no Ollama server of the pool \(.*\) holds the model 'writer'"
        ):
            await passage(pool)
    finally:
        await pool.close()


async def test_passages_go_to_the_least_busy_host_and_a_story_goes_back_to_its_host(hosts):
    for s in hosts:
        s.script("writer", text=model_text("The tide came in. " * 5), tokens_per_second=100)
    pool = OllamaPool([s.url for s in hosts])
    try:
        # Three stories at once: one on each host (least busy first).
        await asyncio.gather(*(passage(pool, f"story-{i}") for i in range(3)))
        assert [generations(s) for s in hosts] == [1, 1, 1]
        where = {story: pool._last[story].url for story in ("story-0", "story-1", "story-2")}
        # Their next passages, one after another: each back on the host that has its prompt cached,
        # though another host is as idle.
        for story in ("story-2", "story-0", "story-1", "story-2"):
            await passage(pool, story)
            assert pool._last[story].url == where[story]
        assert pool.stats.cache_hits == 4 and pool.stats.moved == 0
        assert sorted(pool.stats.served.values()) == [2, 2, 3]
    finally:
        await pool.close()


async def test_a_story_moves_when_its_host_is_busy_and_others_are_free(hosts):
    a, b, _ = hosts
    a.script("writer", text=model_text("Slowly. " * 20), tokens_per_second=40)
    pool = OllamaPool([a.url, b.url], per_host=1)
    try:
        await passage(pool, "mine")  # served by a (both idle: the first)
        await passage(pool, "theirs")  # both idle, b has served fewer: b
        await passage(pool, "theirs")  # back to b
        assert pool._last["mine"].url == a.url and pool._last["theirs"].url == b.url
        other = asyncio.create_task(passage(pool, "new"))  # a new story: both idle, a has served fewer
        await asyncio.sleep(0.1)
        assert a.in_flight == 1
        await passage(pool, "mine")  # its host is at its parallel limit and b is idle: b
        assert pool._last["mine"].url == b.url and pool.stats.moved == 1
        await other
    finally:
        await pool.close()


async def test_a_host_that_fails_before_any_text_is_set_aside_and_tried_again_later(hosts):
    a, b, _ = hosts
    a.script("writer", http_status=500, error_message="CUDA error: out of memory", http_status_times=1)
    dead = refused_url()
    pool = OllamaPool([dead, a.url, b.url], retry=0.3)
    try:
        assert "did not look back" in await passage(pool, "s")  # dead refused, a answered 500: b wrote it
        assert generations(a) == 1 and generations(b) == 1 and pool.stats.retried == 1
        down = {h.url: h.down(time.monotonic()) for h in pool.hosts}
        assert down == {dead: True, a.url: True, b.url: False}
        await passage(pool, "t")
        assert generations(a) == 1 and generations(b) == 2  # set aside: not asked
        await asyncio.sleep(0.35)
        await passage(pool, "u")  # after the backoff a is asked again (and is fine now)
        assert generations(a) == 2
        assert pool.hosts[0].failures >= 2 and pool.hosts[0].down_until - time.monotonic() > 0.3  # doubling
    finally:
        await pool.close()


async def test_every_host_down_says_so_and_one_coming_back_is_used_at_once(hosts):
    a, b, _ = hosts
    pool = OllamaPool([a.url, b.url], retry=30)
    try:
        a.die()
        b.die()
        await asyncio.sleep(0.05)
        with pytest.raises(Unreachable, match=r"no Ollama server of the pool \(.*\) is reachable"):
            await passage(pool)
        b.revive()
        assert "did not look back" in await passage(pool)  # all set aside: tried anyway, soonest first
    finally:
        await pool.close()


async def test_a_host_dying_before_the_first_piece_costs_nothing_the_passage_is_written_elsewhere(
    hosts, store
):
    a, b, _ = hosts
    a.script("writer", first_token_delay=0.5)  # a has accepted the request and is loading the model
    pool = OllamaPool([a.url, b.url])
    service = StoryService(store, pool, lambda channel: "writer", limits=Limits(parallel=2))
    try:
        service.write(HERE, ALICE, "The storm rolled in.")
        run = asyncio.create_task(_events(service))
        await asyncio.sleep(0.2)
        assert a.in_flight == 1
        a.die()
        events = await run
        assert isinstance(events[-1], Done) and "did not look back" in events[-1].passage.text
        assert [p.text for p in service.show(HERE).passages][-1] == events[-1].passage.text
        assert generations(b) == 1 and pool.stats.retried == 1
        rows = store.conn.execute("SELECT host FROM generations WHERE id = ?", (events[-1].generation_id,))
        assert [r[0] for r in rows] == [b.url]  # the server that wrote it, for each server's load
    finally:
        await service.aclose()
        await pool.close()


async def test_a_host_dying_mid_passage_leaves_the_story_unchanged_and_says_so(hosts, store):
    a, b, _ = hosts
    a.script("writer", text=model_text("The rain kept on, and on. " * 20), tokens_per_second=40)
    pool = OllamaPool([a.url, b.url])
    service = StoryService(store, pool, lambda channel: "writer", limits=Limits(parallel=2, delta_every=0))
    try:
        service.write(HERE, ALICE, "The storm rolled in.")
        seen: list = []

        async def run() -> None:
            async for event in service.continue_story(HERE, ALICE):
                seen.append(event)

        task = asyncio.create_task(run())
        while not any(isinstance(e, Delta) and e.answer for e in seen):
            await asyncio.sleep(0.02)
        a.die()
        await task
        failed = seen[-1]
        assert isinstance(failed, Failed) and "stopped in the middle of this passage" in failed.message
        assert "nothing was added to the story: ask again" in failed.message
        assert [p.text for p in service.show(HERE).passages] == ["The storm rolled in."]
        assert store.generation(failed.generation_id).status == "failed" and pool.stats.cut_off == 1
        assert generations(b) == 0  # shown text is never silently restarted elsewhere
        events = await _events(service)  # asked again: b writes it
        assert isinstance(events[-1], Done) and generations(b) == 1
    finally:
        await service.aclose()
        await pool.close()


async def _events(service: StoryService) -> list:
    return [e async for e in service.continue_story(HERE, ALICE)]


async def test_a_mid_stream_model_error_is_not_a_dead_host(hosts):
    a, b, _ = hosts
    a.script("writer", error_after=2, error_message="model ran out of context")
    pool = OllamaPool([a.url, b.url])
    try:
        with pytest.raises(Exception, match="model ran out of context") as caught:
            await passage(pool)
        assert not isinstance(caught.value, HostFailed)
        assert not pool.hosts[0].down(time.monotonic())
    finally:
        await pool.close()


def test_story_bot_status_shows_each_host_its_models_and_load(hosts, monkeypatch, tmp_path):
    from bot.cli import app
    from bot.store import Store

    a, b, c = hosts
    b.add_model("summariser")
    c.die()
    time.sleep(0.05)
    db = tmp_path / "story.db"

    async def two_passages_on_a() -> None:  # a bot process: its pool, the shared store
        store = Store(db)
        pool = OllamaPool([a.url])
        service = StoryService(store, pool, lambda channel: "writer")
        service.write(HERE, ALICE, "The storm rolled in.")
        for _ in range(2):
            assert isinstance((await _events(service))[-1], Done)
        await service.aclose()
        await pool.close()
        store.close()

    asyncio.run(two_passages_on_a())
    monkeypatch.setenv("STORY_BOT_OLLAMA_HOSTS", f"{a.url},{b.url},{c.url}")
    monkeypatch.setenv("STORY_BOT_DB", str(db))
    for name in ("STORY_BOT_OLLAMA_HOST", "OLLAMA_HOST", "STORY_BOT_MODEL", "STORY_BOT_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == (
        f"{a.url}  up  has writer  loaded: writer:latest  load: running 0, 2 in the last 10 min"
    )
    assert f"{b.url}  up  has writer  loaded: none  load: running 0, 0 in the last 10 min" in lines
    assert "    models: summariser:latest, writer:latest" in lines
    assert any(line.startswith(f"{c.url}  DOWN  Ollama is not reachable") for line in lines)
    monkeypatch.setenv("STORY_BOT_DB", str(tmp_path / "absent.db"))  # no store: the hosts all the same
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 0 and f"load: no store at {tmp_path / 'absent.db'}" in result.output
    assert not (tmp_path / "absent.db").exists()  # status never creates or migrates a store


async def test_ollamas_repeat_limit_is_the_models_loop_not_a_dead_host(hosts):
    """More than 30 identical pieces in a row: Ollama ends the stream with no done line and no error
    (llm/llama_server.go); the member is told the model looped, and the host is not set aside."""
    a, b, _ = hosts
    a.script("writer", text="The bell rang." + " ding" * 60)
    pool = OllamaPool([a.url, b.url])
    try:
        with pytest.raises(Exception, match="over and over") as caught:
            await passage(pool, "story-1")
        assert not isinstance(caught.value, HostFailed) and "' ding'" not in str(caught.value)
        assert "'ding'" in str(caught.value)
        assert not pool.hosts[0].down(time.monotonic()) and pool.stats.retried == 0
        a.script("writer", text="The bell rang" + " ding" * 20 + ".")  # 20 in a row: streamed whole
        assert (await passage(pool, "story-1")).count("ding") == 20
    finally:
        await pool.close()
