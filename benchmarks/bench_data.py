"""Training-data step figures: MB/s of `data gutenberg` on the test corpus, tests/corpus (windows sized in
characters, then in tokens), and our sentence splitter against pysbd (accuracy on the fiction gold set,
speed on the same unwrapped paragraphs), in one run.

    PYTHONPATH=. python benchmarks/bench_data.py [--corpus DIR] [--png bench_data.png]

Target: at least pysbd's accuracy on the gold set, at ten times its speed.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from pipeline.data import gutenberg
from pipeline.data.sentences import split_sentences

ROOT = Path(__file__).resolve().parents[1]
GOLD = ROOT / "tests" / "data" / "gold_sentences.json"
CORPUS = ROOT / "tests" / "corpus"


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def breaks_inside_quotes(sentences: list[str]) -> bool:
    """True when a gold break falls inside a quotation (pysbd, by design, never splits there)."""
    depth = 0
    for s in sentences[:-1]:
        depth += s.count("\u201c") - s.count("\u201d") + (s.count('"') % 2)
        if depth > 0:
            return True
    return False


def accuracy(cases: list[dict], split) -> tuple[int, Counter]:
    right, by_kind = 0, Counter()
    for c in cases:
        ok = [s.strip() for s in split(c["text"]) if s.strip()] == c["sentences"]
        right += ok
        by_kind[c["kind"]] += ok
    return right, by_kind


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--png", type=Path, help="also draw the comparison as a PNG")
    args = ap.parse_args()
    import pysbd

    seg = pysbd.Segmenter(language="en", clean=False)
    books = sorted(args.corpus.glob("*.txt"))
    size = sum(p.stat().st_size for p in books)

    # 1. The whole gutenberg step: read, clean, split, window, dedupe, split by book.
    step = best_of(3, lambda: gutenberg.build_chunks(books, gutenberg.WindowSpec()))
    print(
        f"data gutenberg: {size / 1e6:.2f} MB in {step:.2f} s = {size / 1e6 / step:.1f} MB/s "
        f"({len(books)} books)"
    )

    # 1b. The same step with windows sized in tokens, by a byte-level BPE tokenizer trained on the spot.
    from pipeline.tiny import corpus_texts, train_tokenizer

    budget = gutenberg.TokenBudget(train_tokenizer(corpus_texts(args.corpus, 200_000)), 2048, 400, "tiny BPE")
    tok_step = best_of(1, lambda: gutenberg.build_chunks(books, gutenberg.WindowSpec(), budget=budget))
    print(
        f"data gutenberg --tokenizer (tiny BPE, --max-length 2048): {size / 1e6 / tok_step:.2f} MB/s "
        f"({tok_step / step:.1f}x the time of character-sized windows)"
    )

    # 2. Splitters on the same unwrapped paragraphs (pysbd takes each newline as a break, so per paragraph).
    paras = [p for b in books for p in gutenberg.story_paragraphs(gutenberg.read_text(b))]
    text_mb = sum(len(p.encode()) for p in paras) / 1e6
    ours = best_of(3, lambda: [split_sentences(p) for p in paras])
    theirs = best_of(1, lambda: [seg.segment(p) for p in paras])
    print(
        f"splitter speed on {text_mb:.2f} MB of story paragraphs: ours {text_mb / ours:.1f} MB/s, "
        f"pysbd {getattr(pysbd, '__version__', '')} {text_mb / theirs:.2f} MB/s "
        f"-> {theirs / ours:.0f}x"
    )

    # 3. Accuracy on the gold set, overall, per kind, and without breaks inside quotations.
    cases = json.loads(GOLD.read_text(encoding="utf-8"))["cases"]
    kinds = Counter(c["kind"] for c in cases)
    a_ok, a_kind = accuracy(cases, split_sentences)
    b_ok, b_kind = accuracy(cases, seg.segment)
    plain = [c for c in cases if not breaks_inside_quotes(c["sentences"])]
    a_plain, _ = accuracy(plain, split_sentences)
    b_plain, _ = accuracy(plain, seg.segment)
    print(f"gold set ({len(cases)} fiction paragraphs): ours {a_ok}/{len(cases)}, pysbd {b_ok}/{len(cases)}")
    print(f"  without breaks inside quotations ({len(plain)} cases): ours {a_plain}, pysbd {b_plain}")
    for kind, n in sorted(kinds.items()):
        print(f"  {kind:<13} ours {a_kind[kind]:>2}/{n}  pysbd {b_kind[kind]:>2}/{n}")
    met = a_ok >= b_ok and theirs / ours >= 10
    print(f"target (>= pysbd accuracy at >= 10x its speed): {'met' if met else 'NOT met'}")

    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        names = sorted(kinds)
        x = range(len(names))
        left.bar([i - 0.2 for i in x], [a_kind[k] / kinds[k] for k in names], 0.4, label="ours")
        left.bar([i + 0.2 for i in x], [b_kind[k] / kinds[k] for k in names], 0.4, label="pysbd")
        left.set_xticks(list(x), names, rotation=30)
        left.set_title("gold-set accuracy by kind")
        left.legend()
        right.bar(["ours", "pysbd"], [text_mb / ours, text_mb / theirs], color=["C0", "C1"])
        right.set_yscale("log")
        right.set_title("splitter speed (MB/s, log)")
        fig.tight_layout()
        fig.savefig(args.png, dpi=100)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
