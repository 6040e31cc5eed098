"""Helpers for the Discord adapter's end-to-end tests: the real client on the stand-in Discord and Ollama."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from bot.core.service import Limits, StoryService
from bot.discord.client import StoryBot, sync_commands
from bot.llm import OllamaBackend
from bot.store import Store
from tests.fakes.discord import FakeDiscord
from tests.fakes.ollama import FakeOllama

from .conftest import WRITER

ANSWER = "She stepped out into the rain and did not look back."


def model_text(answer: str, reasoning: str = "The storm decides for her.") -> str:
    return f"<reasoning>{reasoning}</reasoning><answer>{answer}</answer>"


@dataclass
class World:
    """One stand-in Discord and Ollama, and a database that outlives bot restarts."""

    fake: FakeDiscord
    ollama: FakeOllama
    db: Path
    opened: list = field(default_factory=list)

    async def sync(self) -> None:
        await sync_commands(self.fake.token)  # globally, as `story-bot sync` does

    def bot(self, **options) -> StoryBot:
        """A fresh bot process: its own store connection and Ollama client on the same database.
        `limits={...}` sets the service's Limits, `models_allowed` the models /story settings may pick; the
        rest are StoryBot options."""
        store, backend = Store(self.db), OllamaBackend(self.ollama.url)
        self.opened.append((store, backend))
        limits = Limits(delta_every=options.pop("delta_every", 0.02), **options.pop("limits", {}))
        allowed = options.pop("models_allowed", None)  # the operator's list for /story settings
        service = StoryService(
            store, backend, lambda channel: "writer", limits=limits, models_allowed=allowed
        )
        # Fast pacing by default; the pacing test asks for Discord's own (1 s per message, 5 per 5 s).
        options = {"edit_interval": 0.2, "channel_budget": (50, 5.0), "guild_ready_timeout": 0.05, **options}
        return StoryBot(service, **options)

    def script(self, text: str, tokens_per_second: float | None = None, **kw) -> None:
        self.ollama.script("writer", text=text, tokens_per_second=tokens_per_second, **kw)

    async def close(self) -> None:
        for store, backend in self.opened:
            await backend.close()
            store.close()


async def make_world(fake: FakeDiscord, ollama: FakeOllama, tmp: Path) -> World:
    ollama.add_model("writer", template=WRITER)
    world = World(fake, ollama, tmp / "story.db")
    await world.sync()
    return world


# --- helpers the e2e test modules share (their fixtures are in conftest.py) ---------------------------------
def db_rows(world, query: str, *args) -> list[tuple]:
    with sqlite3.connect(world.db) as c:
        return c.execute(query, args).fetchall()


async def write(fake, text: str, user=None, channel=None):
    run = await fake.send_slash_command("write", {"text": text}, user=user or fake.alice, channel=channel)
    await run.response()
    return run


async def continue_(fake, user=None, channel=None, **options):
    """/continue, then wait for the passage's final message (the one with the buttons)."""
    run = await fake.send_slash_command("continue", options, user=user or fake.alice, channel=channel)
    await fake.wait_until(lambda: any(m.components for m in run.messages) or _failed(run), 15)
    return run


def _failed(run) -> bool:
    return any(m.content.startswith("⚠️") for m in run.messages)


def final(run):
    return next(m for m in run.messages if m.components)
