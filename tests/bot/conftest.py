from __future__ import annotations

import logging
import time

import pytest

from bot.core.service import Limits, StoryService
from bot.core.story import Channel, Member
from bot.llm import OllamaBackend, Timeouts
from bot.store import Store
from tests.families import plain_template, writer_template

WRITER = writer_template()  # TEMPLATE of a model made from our Modelfiles
PLAIN = plain_template()  # a plain instruct model's TEMPLATE
ANSWER = "She stepped out into the rain and did not look back."
ALICE, BOB = Member("1001", "Alice"), Member("1002", "Bob")
HERE = Channel("5001", guild_id="9001")


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "story.db")
    yield s
    s.close()


class Clock:
    """A store's clock that tests move by hand, so a lease expires without waiting for it."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine_store(request, tmp_path, clock):
    """The store on each engine: a SQLite file, then a fresh schema on a real PostgreSQL server. The
    store suites (test_store.py, test_lorebook_store.py) run on both through it, on a `clock` the test
    moves."""
    target = tmp_path / "story.db" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    s = Store(target, clock=clock)
    yield s
    s.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_db(request, tmp_path):
    """The database two processes open (test_two_processes.py, test_history_kill.py): a SQLite file, or
    a schema on the test PostgreSQL server."""
    return tmp_path / "story.db" if request.param == "sqlite" else request.getfixturevalue("postgres_url")


@pytest.fixture
def ollama_server(fake_ollama):
    fake_ollama.add_model("writer", template=WRITER)
    fake_ollama.add_model("plain", template=PLAIN)
    return fake_ollama


@pytest.fixture
async def make_service(ollama_server, store):
    """make_service(model="writer", host=None, **limits) -> a StoryService on the stand-in Ollama."""
    made: list[StoryService] = []

    def make(model: str = "writer", host: str | None = None, timeouts: Timeouts | None = None, **limits):
        backend = OllamaBackend(host or ollama_server.url, timeouts)
        made.append(StoryService(store, backend, lambda channel: model, limits=Limits(**limits)))
        return made[-1]

    yield make
    for service in made:
        await service.aclose()  # background summaries
        await service.backend.close()


async def collect(events) -> list:
    return [e async for e in events]


# --- the Discord adapter's e2e tests (tests/bot/discord_world.py) -------------------------------------------
@pytest.fixture
def no_errors_logged(caplog):
    """discord.py logs (not raises) errors in handlers, and so does the bot: any such log fails the test.
    The e2e modules use it for every test (`pytest.mark.usefixtures`)."""
    yield
    errors = [
        r for r in caplog.records if r.name.startswith(("discord", "bot.")) and r.levelno >= logging.ERROR
    ]
    assert not errors, [r.getMessage() for r in errors]


@pytest.fixture
async def world(fake_discord, fake_ollama, tmp_path):
    """The stand-in Discord (commands synced) and Ollama, and a database for the bots a test starts."""
    from .discord_world import make_world

    w = await make_world(fake_discord, fake_ollama, tmp_path)
    yield w
    await w.close()
