"""What memory, a summary and a full lorebook add to building a context (pure CPU, no server).

A story of 2,000 passages (Gutenberg text from the test corpus, tests/corpus), a window of 8,192 tokens
and a lorebook of 100 entries with 3 keywords each (a third of them mentioned in the recent passages). It
times, per context: the plain build (passages only, the baseline) and the full build (memory, rolling
summary, lore triggering), plus picking the current summary among the 50 a story that long has written
(rolling, each covering 20 more passages): the newest, or after an undo into it the one before.

    python benchmarks/bench_context.py [--passages 2000] [--entries 100]

Target: the full build and the summary pick each under 10 ms: nothing next to a model's seconds per passage.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.core.context import Budget, CharCounter, build_context  # noqa: E402
from bot.core.lore import LoreEntry  # noqa: E402
from bot.core.story import AuthorKind, Note, Passage, Summary  # noqa: E402
from bot.core.summary import current, digest  # noqa: E402

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "corpus"


def _texts(n: int) -> list[str]:
    words = []
    for path in sorted(CORPUS.glob("*.txt"))[:2]:
        words += path.read_text(errors="replace").split()
    words = words or ("The keeper climbed the stairs and counted the ships in the bay. " * 50).split()
    return [" ".join(words[(i * 120) % len(words) :][:120]) for i in range(n)]


def _time(fn, repeat: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--passages", type=int, default=2000)
    ap.add_argument("--entries", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()
    texts = _texts(args.passages)
    passages = [Passage(i, 1, i, AuthorKind.MEMBER, "1", "A", t) for i, t in enumerate(texts, 1)]
    recent_words = [w.strip(".,;:!?\"'") for t in texts[-4:] for w in t.split() if len(w) > 6][:40]
    lore = [
        LoreEntry(
            i,
            f"Entry {i}",
            (recent_words[i % len(recent_words)] if i % 3 == 0 else f"zq{i}", f"nomatch{i}a", f"nomatch{i}b"),
            "A thing worth knowing. " * 8,
        )
        for i in range(args.entries)
    ]
    memory = Note(1, "memory", "A grim tale, told in the first person by the lighthouse keeper. " * 4)
    covered = passages[: args.passages // 2]
    summaries = [  # newest first
        Summary(
            50 - k,
            1,
            len(covered) - 20 * k,
            tuple(p.id for p in covered[: len(covered) - 20 * k]),
            digest(covered[: len(covered) - 20 * k]),
            "done",
            "m",
            "Earlier events, in brief. " * 20,
        )
        for k in range(50)
    ]
    undone = [*summaries[:1], *summaries[1:]]
    undone[0] = Summary(**{**summaries[0].__dict__, "digest": "the story changed"})
    counter, budget = CharCounter(), Budget(8192, 925)
    after = passages[len(covered) :]

    plain = _time(lambda: build_context(passages, counter, budget), args.repeat)
    full = _time(
        lambda: build_context(
            after, counter, budget, "Keep it tense.", memory=memory, summary=summaries[-1], lore=lore
        ),
        args.repeat,
    )
    pick = _time(lambda: current(summaries, passages), max(1, args.repeat // 10))
    pick_undone = _time(lambda: current(undone, passages), max(1, args.repeat // 10))
    assert current(summaries, passages) is summaries[0] and current(undone, passages) is undone[1]
    ctx = build_context(after, counter, budget, memory=memory, summary=summaries[-1], lore=lore)
    print(f"{args.passages} passages, {args.entries} lore entries, window {budget.window} tokens")
    print(f"  plain build (baseline)          {plain:7.3f} ms")
    print(f"  full build (memory+summary+lore) {full:6.3f} ms   ({full / plain:.2f}x the baseline)")
    print(f"  current summary among 50        {pick:7.3f} ms   (after an undo into it: {pick_undone:.3f} ms)")
    print(f"  lore in context: {len(ctx.lore)} entries, {len(ctx.lore_left_out)} left out by the budget")


if __name__ == "__main__":
    main()
