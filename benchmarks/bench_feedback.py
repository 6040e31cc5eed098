"""The feedback export on a large bot database, and what it costs the bot that keeps writing meanwhile.

Builds a database through the bot's store schema (N generations with realistic prompt sizes, 1-3 votes
each, regenerations, undone passages, opted-out members), then:

- times `snapshot.read` and each export format (rows per second);
- measures the bot's write latency (one rating per transaction, as `Store.rate` does) while idle and
  while exports run back to back in another process: the ratio is what a running export costs writers.

    python benchmarks/bench_feedback.py [--generations 20000]

Target: an export of 20k generations in a few seconds; writer p99 latency during exports within 2x idle.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "corpus"


def _corpus_words() -> list[str]:
    words = []
    for f in sorted(CORPUS.glob("*.txt")):
        words += f.read_text(encoding="utf-8", errors="replace").split()
    if not words:
        raise SystemExit(f"no books in {CORPUS}: the test corpus (tests/corpus) is needed")
    return words


WORDS: list[str] = []


def _text(rng: random.Random, words: int) -> str:
    """A span of real prose (so words repeat as in stories, and spans rarely coincide)."""
    start = rng.randrange(len(WORDS) - words)
    return " ".join(WORDS[start : start + words])


def build(path: Path, generations: int, seed: int = 0) -> None:
    from bot.core.story import Channel, Member
    from bot.store import Store
    from contract import prompt

    rng = random.Random(seed)
    WORDS[:] = _corpus_words()
    store = Store(path)
    members = [Member(str(1000 + i), f"m{i}") for i in range(50)]
    channels = [Channel(str(5000 + i)) for i in range(max(1, generations // 200))]
    stories = [store.ensure_story(ch, members[0]) for ch in channels]
    now = time.time()
    with store.tx() as c:
        for m in members[:5]:  # a few members opted out
            c.execute("INSERT INTO opt_outs VALUES (?, ?)", (m.id, now))
        pid = 0
        for gid, n in enumerate(range(generations), 1):
            story = stories[n % len(stories)]
            if n % 3 == 0 or not pid:  # a member passage, then a model passage (with regenerations)
                pid += 1
                author = rng.choice(members)
                c.execute(
                    "INSERT INTO passages (id, story_id, position, author_kind, author_id, author_name, "
                    "text, created_at) VALUES (?, ?, ?, 'member', ?, ?, ?, ?)",
                    (pid, story, pid, author.id, author.name, _text(rng, 60), now),
                )
                pid += 1
                slot = pid
                c.execute(
                    "INSERT INTO passages (id, story_id, position, author_kind, author_id, author_name, "
                    "text, created_at, removed_at) VALUES (?, ?, ?, 'model', ?, ?, '', ?, ?)",
                    (slot, story, slot, author.id, author.name, now, now if rng.random() < 0.1 else None),
                )
                context = _text(rng, 300)  # regenerations of the slot share its prompt
            c.execute(
                "INSERT INTO generations (id, story_id, passage_id, requested_by, model, user_text, prompt, "
                "raw, options, context, status, reasoning, answer, parse_issues, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 0, '{}', ?, 'done', ?, ?, '[]', ?)",
                (
                    gid,
                    story,
                    slot,
                    rng.choice(members).id,
                    rng.choice(["writer:v1", "writer:v2"]),
                    prompt.render_prompt(context),
                    context,
                    f'{{"passage_ids": [{pid - 1}]}}',
                    _text(rng, 40),
                    _text(rng, 80),
                    now - rng.random() * 60 * 86400,
                ),
            )
            for m in rng.sample(members, rng.randint(1, 3)):
                c.execute("INSERT INTO ratings VALUES (?, ?, ?, ?)", (gid, m.id, rng.choice([1, 1, -1]), now))
    store.close()


def _export_forever(path: str, stop) -> None:
    from pipeline.feedback import export, snapshot

    while not stop.is_set():
        snap = snapshot.read(path)
        for fmt in export.FORMATS:
            export.export(snap, fmt)


def write_latencies(path: Path, seconds: float) -> list[float]:
    from bot.store import Store

    store = Store(path)
    gids = [r[0] for r in store.conn.execute("SELECT id FROM generations LIMIT 500")]
    out, end, i = [], time.monotonic() + seconds, 0
    while time.monotonic() < end:
        t = time.perf_counter()
        store.rate(gids[i % len(gids)], f"bench{i}", 1)
        out.append(time.perf_counter() - t)
        i += 1
        time.sleep(0.002)  # a busy bot, not a write loop
    store.close()
    return out


def _p(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100)[q - 1] * 1000 if len(xs) > 100 else max(xs) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--generations", type=int, default=20_000)
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args()

    from pipeline.feedback import export, snapshot
    from plumbing import jsonl

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bot.db"
        t = time.perf_counter()
        build(db, args.generations)
        print(
            f"built {args.generations:,} generations in {time.perf_counter() - t:.1f} s "
            f"({db.stat().st_size / 1e6:.0f} MB)"
        )
        t = time.perf_counter()
        snap = snapshot.read(db)
        read_s = time.perf_counter() - t
        print(f"snapshot.read: {read_s:.2f} s ({len(snap.generations) / read_s:,.0f} generations/s)")
        for fmt in export.FORMATS:
            t = time.perf_counter()
            rows, report = export.export(snap, fmt)
            jsonl.write(Path(tmp) / f"{fmt}.jsonl", rows)
            s = time.perf_counter() - t
            rate = len(snap.generations) / s
            print(f"export {fmt}: {report.rows:,} rows in {s:.2f} s ({rate:,.0f} generations/s)")

        # The opted-out text rule: the anchored matcher against a plain search of every tail (baseline).
        matcher = export.opted_out_matcher(snap)
        sample = snap.generations[:1000]
        tails = [export._fold(t)[-export.MATCH_TAIL_CHARS :] for t in snap.opted_out_passages.values()]
        t = time.perf_counter()
        fast = [matcher(g) for g in sample]
        fast_s = time.perf_counter() - t
        t = time.perf_counter()
        plain = [
            bool(set(g.context_passages) & set(snap.opted_out_passages))
            or any(x in export._fold(g.user_text) for x in tails)
            for g in sample
        ]
        plain_s = time.perf_counter() - t
        assert fast == plain, "the anchored matcher disagrees with the plain search"
        print(
            f"opted-out text match ({len(tails)} passages x {len(sample)} prompts): "
            f"{fast_s * 1000:.0f} ms vs plain search {plain_s * 1000:.0f} ms "
            f"({plain_s / fast_s:.0f}x faster, same answers)"
        )

        idle = write_latencies(db, args.seconds)
        stop = mp.Event()
        reader = mp.Process(target=_export_forever, args=(str(db), stop))
        reader.start()
        time.sleep(0.5)
        busy = write_latencies(db, args.seconds)
        stop.set()
        reader.join()
        for name, xs in (("idle", idle), ("during exports", busy)):
            p50, p99 = _p(xs, 50), _p(xs, 99)
            print(f"bot write latency {name}: p50 {p50:.2f} ms, p99 {p99:.2f} ms ({len(xs)} writes)")
        print(f"p99 ratio (during exports / idle): {_p(busy, 99) / _p(idle, 99):.2f}x")


if __name__ == "__main__":
    main()
