"""A second bot process for the two-process tests: `python -m tests.bot.process_worker MODE DB OLLAMA [...]`.

bot DB OLLAMA API GATEWAY TOKEN [SHARDS COUNT] (SHARDS: "1", "0,2" or "0-3"): a StoryBot on the stand-in
    Discord at API/GATEWAY (the test process serves it); prints "ready" once connected and its start-up
    recovery is over, or "refused" (exit 3) when another live process holds one of its shards of the
    events; SIGTERM closes it.
continue DB OLLAMA CHANNEL: the story service alone: recovers, then continues the channel's story,
    printing each event as a JSON line ({"event": "queued"|"started"|"done"|"failed", ...}).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from bot.core.service import Done, Failed, Limits, Queued, Started, StoryService
from bot.core.story import Channel, Member
from bot.llm import OllamaBackend
from bot.store import Store

LEASE_S = 2.0  # short leases, so the tests' waits are short
OPTIONS = {"edit_interval": 0.2, "channel_budget": (50, 5.0), "guild_ready_timeout": 0.05}


def say(**fields) -> None:
    print(json.dumps(fields), flush=True)


def service(db: str, ollama: str) -> StoryService:
    limits = Limits(lease_s=LEASE_S, delta_every=0.02)
    return StoryService(Store(db), OllamaBackend(ollama), lambda channel: "writer", limits=limits)


async def run_bot(db: str, ollama: str, api: str, gateway: str, token: str, *shard: str) -> None:
    import discord
    import yarl

    from bot.discord.client import InUse, StoryBot

    discord.http.Route.BASE = api
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway)
    from bot.config import parse_shards

    sharding = (
        {"shard_ids": parse_shards(shard[0], int(shard[1])), "shard_count": int(shard[1])} if shard else {}
    )
    bot = StoryBot(service(db, ollama), redeliver_backoff=(0.05, 0.4), **OPTIONS, **sharding)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: loop.create_task(bot.close()))

    async def announce() -> None:
        await bot.wait_until_ready()
        await bot.story.deliveries.recovery
        say(event="ready", owner=bot.story.service.owner)

    async with bot:
        task = loop.create_task(announce())
        try:
            await bot.start(token)
        except InUse as exc:
            say(event="refused", message=str(exc))
            sys.exit(3)
        finally:
            task.cancel()


async def run_continue(db: str, ollama: str, channel_id: str) -> None:
    story = service(db, ollama)
    say(event="recovered", lost=[lost.generation_id for lost in story.recover()], owner=story.owner)
    async for event in story.continue_story(Channel(channel_id, "g"), Member("2", "Bob")):
        match event:
            case Queued(position, waiting_for):
                say(event="queued", position=position, waiting_for=waiting_for)
            case Started(generation_id):
                say(event="started", generation_id=generation_id)
            case Done(passage, generation_id):
                say(event="done", generation_id=generation_id, position=passage.position)
            case Failed(message):
                say(event="failed", message=message)
    await story.aclose()
    await story.backend.close()


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    asyncio.run(run_bot(*args) if mode == "bot" else run_continue(*args))
