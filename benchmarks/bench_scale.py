"""Beyond one machine: several bot processes, several Ollama hosts, one PostgreSQL, hundreds of channels,
and one Ollama host killed in the middle of the run.

The stand-in Discord (tests/fakes/discord/) runs in this process with the channels spread over guilds
on every shard; each bot process is the real StoryBot (discord.py's AutoShardedClient) on its own range
of the shards, with a pool of the stand-in Ollama hosts (tests/fakes/ollama.py, each in its own process)
and the one store: a PostgreSQL cluster started for the run (tests/postgres.py; a shared SQLite file when
no server can be had). Every channel gets an opening passage, then `--rounds` passages asked one after
another with /continue. Once a third of them have landed, one host's process is killed (SIGKILL: its
connections reset, mid-stream). A member whose passage was cut off is told so and asks again once.

    python benchmarks/bench_scale.py [--channels 200] [--rounds 3] [--hosts 3] [--processes 2]

Figures: passages per second; how they spread over the hosts; how many went to the story's cache-
preferred host (the one that served its previous passage); how many were retried on another host
before any text showed, cut off with the member told, and lost (asked, and neither landed nor told:
target 0); the store checked at the end (every landed passage once in its story, nothing running).
Bounded: --timeout seconds in all (default 300), loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import standins  # noqa: E402  (beside this script; the repository is on the path from the line above)

ANSWER = " ".join(["The harbour lights blurred as she pushed the boat out into the rain."] * 4)
TEXT = f"<reasoning>She weighs the storm against her promise.</reasoning><answer>{ANSWER}</answer>"
CUT_OFF = "stopped in the middle of this passage"


def _bot(conn, db: str, hosts: list[str], shards: list[int], count: int, per_host: int, discord_at) -> None:
    asyncio.run(_bot_main(conn, db, hosts, shards, count, per_host, discord_at))


async def _bot_main(conn, db, hosts, shards, count, per_host, discord_at) -> None:
    from bot.core.service import Limits, StoryService
    from bot.discord.client import StoryBot
    from bot.pool import OllamaPool
    from bot.store import Store

    api, gateway, token = discord_at
    standins.use_discord(api, gateway)
    pool = OllamaPool(hosts, per_host=per_host, retry=2.0)
    store = Store(db)
    limits = Limits(parallel=per_host * len(hosts), lease_s=10.0)
    service = StoryService(store, pool, lambda _: "writer", limits=limits)
    bot = StoryBot(
        service,
        shard_ids=shards,
        shard_count=count,
        guild_ready_timeout=0.05,
        channel_budget=(5, 5.25),
        commands_per_minute=60,
    )
    loop = asyncio.get_running_loop()
    runner = loop.create_task(bot.start(token))
    await asyncio.wait_for(bot.wait_until_ready(), 60)
    conn.send("ready")
    await loop.run_in_executor(None, conn.recv)  # until the run is over
    await bot.close()
    await asyncio.wait({runner}, timeout=10)
    s = pool.stats
    conn.send(
        {
            "served": dict(s.served),
            "cache_hits": s.cache_hits,
            "moved": s.moved,
            "retried": s.retried,
            "cut_off": s.cut_off,
        }
    )
    await pool.close()
    store.close()


def _guilds_on_every_shard(fake, count: int, n: int) -> list:
    """n guilds, each shard of `count` holding at least one (Discord: (guild_id >> 22) % count)."""
    guilds, shards = [], set()
    while len(guilds) < n or len(shards) < count:
        g = fake.add_guild(f"guild {len(guilds)}")
        guilds.append(g)
        shards.add((g.id >> 22) % count)
        time.sleep(0.002)  # the next snowflake's timestamp moves on
    return guilds


async def _run(args, db: str, hosts: list[standins.OllamaHost]) -> dict:
    from tests.fakes.discord import FakeDiscord

    ctx = mp.get_context("spawn")
    count = args.processes * 2  # two shards per process
    async with FakeDiscord(strict_commands=False) as fake:
        guilds = _guilds_on_every_shard(fake, count, max(count, args.channels // 25))
        channels = [fake.add_channel(f"room{i}", guild=guilds[i % len(guilds)]) for i in range(args.channels)]
        users = [fake.add_user(f"writer{i}", guild=guilds[i % len(guilds)]) for i in range(args.channels)]
        bots = []
        for p in range(args.processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_bot,
                daemon=True,
                args=(
                    child,
                    db,
                    [h.url for h in hosts],
                    [2 * p, 2 * p + 1],
                    count,
                    args.per_host,
                    (fake.api_base, fake.gateway_url, fake.token),
                ),
            )
            proc.start()
            bots.append((proc, parent))
        loop = asyncio.get_running_loop()
        for _, pipe in bots:
            assert await loop.run_in_executor(None, pipe.recv) == "ready"
        for c, u in zip(channels, users, strict=True):
            await fake.send_slash_command(
                "write", {"text": "It was a dark night. The sea was loud."}, channel=c, user=u
            )
        await fake.wait_until(lambda: _writes_done(fake, channels), 60, "the openings")

        outcome: Counter = Counter()
        landed_at: list[float] = []
        total = args.channels * args.rounds
        killed: dict = {}

        async def story(c, u) -> None:
            for _ in range(args.rounds):
                for attempt in (1, 2):
                    run = await fake.send_slash_command("continue", {}, channel=c, user=u)
                    try:
                        await fake.wait_until(lambda run=run: _final(run) or _warning(run), args.timeout)
                    except TimeoutError:
                        outcome["lost"] += 1
                        break
                    if _final(run):
                        outcome["landed" if attempt == 1 else "landed on asking again"] += 1
                        landed_at.append(time.monotonic())
                        if not killed and len(landed_at) >= total // 3:
                            killed["at"] = len(landed_at)
                            hosts[1].kill()  # the machine goes away mid-stream
                        break
                    warning = _warning(run)
                    outcome["told: cut off" if CUT_OFF in warning else f"told: {warning[:60]}"] += 1
                    if CUT_OFF not in warning or attempt == 2:
                        outcome["lost"] += CUT_OFF not in warning  # any other failure counts as lost
                        break

        start = time.monotonic()
        await asyncio.wait_for(
            asyncio.gather(*(story(c, u) for c, u in zip(channels, users, strict=True))), args.timeout
        )
        wall = time.monotonic() - start
        stats = []
        for proc, pipe in bots:
            pipe.send("stop")
            stats.append(await loop.run_in_executor(None, pipe.recv))
            proc.join(15)
    return {
        "outcome": outcome,
        "wall": wall,
        "stats": stats,
        "killed_after": killed.get("at"),
        "asked": total,
        "hosts": [h.url for h in hosts],
    }


def _writes_done(fake, channels) -> bool:
    ids = {c.id for c in channels}
    done = [i for i in fake.interactions.values() if i.channel.id in ids and i.callbacks]
    return len(done) >= len(channels)


def _final(run) -> bool:
    return any(m.components for m in run.messages)


def _warning(run) -> str:
    return next((m.content for m in run.messages if m.content.startswith("⚠️")), "")


def _check_store(db: str, passages_per_story: int) -> dict:
    from bot.store import Store

    store = Store(db)
    try:
        c = store.conn
        running = c.execute("SELECT count(*) FROM generations WHERE status = 'running'").fetchone()[0]
        done = c.execute("SELECT count(*) FROM generations WHERE status = 'done'").fetchone()[0]
        model_passages = c.execute(
            "SELECT count(*) FROM passages WHERE author_kind = 'model' AND removed_at IS NULL"
        ).fetchone()[0]
        short = c.execute(
            "SELECT count(*) FROM (SELECT story_id FROM passages WHERE removed_at IS NULL GROUP BY story_id "
            "HAVING count(*) != ?) AS s",
            (passages_per_story,),
        ).fetchone()[0]
        return {"running": running, "done": done, "model_passages": model_passages, "stories_off": short}
    finally:
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--per-host", type=int, default=8, help="each host's OLLAMA_NUM_PARALLEL")
    ap.add_argument("--tokens-per-second", type=float, default=80.0)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--sqlite", action="store_true", help="a shared SQLite file instead of PostgreSQL")
    args = ap.parse_args()
    if args.hosts < 2:
        ap.error("--hosts must be at least 2: one of them is killed")

    hosts = [standins.OllamaHost(TEXT, args.tokens_per_second) for _ in range(args.hosts)]
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        db, engine = _database(stack, Path(tmp), args.sqlite)
        try:
            result = asyncio.run(_run(args, db, hosts))
            check = _check_store(db, 1 + args.rounds)
        finally:
            for host in hosts:
                host.stop()
    _report(args, result, check, engine)


def _database(stack: contextlib.ExitStack, tmp: Path, sqlite: bool) -> tuple[str, str]:
    if not sqlite:
        try:
            from tests import postgres

            url = stack.enter_context(postgres.start())
            return postgres.fresh_schema(url), "PostgreSQL"
        except Exception as exc:  # no server here: the shared file instead, said plainly
            print(f"(no PostgreSQL: {exc}; using a shared SQLite file)")
    return str(tmp / "scale.db"), "SQLite"


def _report(args, r: dict, check: dict, engine: str) -> None:
    o: Counter = r["outcome"]
    landed = o["landed"] + o["landed on asking again"]
    served: Counter = Counter()
    for s in r["stats"]:
        served.update(s["served"])
    hits = sum(s["cache_hits"] for s in r["stats"])
    moved = sum(s["moved"] for s in r["stats"])
    print(
        f"{args.processes} bot processes ({args.processes * 2} shards), {args.hosts} Ollama hosts "
        f"({args.per_host} parallel each, {args.tokens_per_second:g} tokens/s), {engine} store, "
        f"{args.channels} channels x {args.rounds} passages = {r['asked']} asked"
    )
    print(f"host {r['hosts'][1]} killed (SIGKILL) after {r['killed_after']} passages had landed")
    print(f"wall {r['wall']:.1f}s: {landed / r['wall']:.1f} passages/s landed")
    for host in r["hosts"]:
        note = "  (killed)" if host == r["hosts"][1] else ""
        print(f"  {host}: {served[host]} passages ({served[host] / max(1, sum(served.values())):.0%}){note}")
    print(
        f"went to the cache-preferred host: {hits} of {hits + moved} passages whose story had one "
        f"({hits / max(1, hits + moved):.0%}); moved elsewhere (host busy or dead): {moved}"
    )
    print(
        f"retried on another host before any text: {sum(s['retried'] for s in r['stats'])}; cut off "
        f"mid-passage, member told: {o['told: cut off']} (landed on asking again: "
        f"{o['landed on asking again']})"
    )
    others = {k: v for k, v in o.items() if k.startswith("told: ") and k != "told: cut off"}
    if others:
        print(f"other failures shown: {others}")
    print(f"passages lost: {o['lost']} (target 0)")
    print(
        f"store: {check['done']} done generations, {check['model_passages']} model passages in stories, "
        f"{check['running']} left running, {check['stories_off']} stories without exactly "
        f"{1 + args.rounds} passages"
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
