"""Texts per second of `eval metrics` against a plain loop over textstat and TextBlob, same values.

    python benchmarks/bench_eval.py [--texts 2000] [--chars 640] [--workers 2]

Passages are cut from the books of the test corpus (tests/corpus). The baseline is what a notebook does:
per text, textstat.flesch_reading_ease, textstat.gunning_fog and TextBlob(text).sentiment, one process. Both
sides load their dictionaries before the clock starts (they share textstat's cached cmudict); ours
starts with empty per-word caches, includes starting its worker processes, and computes every other
metric too (entropy, distinct-n, repetition, English share). Every Flesch, Fog, polarity and
subjectivity value is checked for equality with the baseline's before the figures are printed.
Wall-clock texts/s is what a user waits for; texts per CPU-second (this process and its workers) is the
work done, which other jobs on a shared machine disturb less.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def passages(n: int, chars: int) -> list[str]:
    books = sorted((ROOT / "tests" / "corpus").glob("*.txt"))
    texts = [b.read_text(encoding="utf-8-sig") for b in books]
    # every book cut into passages that start half a passage apart, then taken round robin
    cuts = [[t[i : i + chars] for i in range(2000, len(t) - chars, chars // 2)] for t in texts]
    out = [c[k] for k in range(max(map(len, cuts))) for c in cuts if k < len(c)]
    if len(out) < n:
        sys.exit(f"the corpus gives {len(out)} passages of {chars} characters, fewer than {n}")
    return out[:n]


def baseline(texts: list[str]) -> list[tuple]:
    import textstat
    from textblob import TextBlob

    out = []
    for t in texts:
        s = TextBlob(t).sentiment
        out.append((textstat.flesch_reading_ease(t), textstat.gunning_fog(t), s.polarity, s.subjectivity))
    return out


def ours(texts: list[str], workers: int) -> list[tuple]:
    from pipeline.evaluate.metrics import Scorer, score_texts

    rows = score_texts(texts, workers=workers, scorer=Scorer())
    keys = ("flesch_reading_ease", "gunning_fog", "polarity", "subjectivity")
    return [tuple(r[k] for k in keys) for r in rows]


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the worker pool)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn, *args) -> tuple[list, float, float]:
    wall, cpu = time.perf_counter(), cpu_seconds()
    out = fn(*args)
    return out, time.perf_counter() - wall, cpu_seconds() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--chars", type=int, default=640)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="best of N for each side, interleaved")
    args = ap.parse_args()

    texts = passages(args.texts, args.chars)
    baseline(["A warm-up sentence, not part of the set. It loads the dictionaries."])
    sides = {"baseline": None, "ours, 1 process": 1, f"ours, {args.workers} processes": args.workers}
    best = {name: [float("inf"), float("inf")] for name in sides}  # (wall, cpu) seconds, best of repeats
    for r in range(args.repeats):  # interleaved, so a busy spell on the machine hits every side alike
        fresh = [f"{t}{' ' * (r + 1)}" for t in texts]  # new strings each round: textstat caches whole texts
        expected = None
        for name, workers in sides.items():
            got, wall, cpu = timed(baseline, fresh) if workers is None else timed(ours, fresh, workers)
            best[name] = [min(best[name][0], wall), min(best[name][1], cpu)]
            expected = expected or got
            mismatches = sum(a != b for a, b in zip(expected, got, strict=True))
            if mismatches:
                sys.exit(f"{name}: {mismatches} of {len(texts)} texts differ from textstat/TextBlob")

    n, (base_wall, base_cpu) = len(texts), best["baseline"]
    print(f"{n} passages of {args.chars} characters, best of {args.repeats}, values identical: yes")
    print(
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} "
        "(other work on the machine slows the wall clock)"
    )
    print(f"{'':24s} {'texts/s':>9s} {'speed-up':>9s} {'texts/CPU-s':>12s} {'speed-up':>9s}")
    for name, (wall, cpu) in best.items():
        print(f"{name:24s} {n / wall:9.0f} {base_wall / wall:8.2f}x {n / cpu:12.0f} {base_cpu / cpu:8.2f}x")


if __name__ == "__main__":
    main()
