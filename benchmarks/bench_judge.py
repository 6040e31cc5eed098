"""Is a judge worth its verdicts? `eval judge` on items whose answer is known, and how long it takes.

    python benchmarks/bench_judge.py [--items 6] [--judge smollm2] [--backend llama.cpp] [--max-tokens 40]

Each item is a paragraph of The Adventures of Sherlock Holmes (tests/corpus) as the context; model
`human` continues it with the paragraph that really follows, model `unrelated` with a paragraph of
Frankenstein. A judge worth using prefers `human` nearly always, in both orders (a win rate near 100%,
a consistency near 100%, the continuation shown first chosen about half the time); a judge that reads
position, not text, shows it as a consistency near 0% and a first-shown rate near 100%. Prints the
figures and the wall-clock and CPU time of the judging (the judge's load included).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def paragraphs(book: str) -> list[str]:
    """The book's paragraphs, past its front matter, in order, each on one line."""
    text = (ROOT / "tests" / "corpus" / book).read_text(encoding="utf-8-sig").replace("\r\n", "\n")
    return [" ".join(p.split()) for p in text.split("\n\n") if p.strip()][200:]


def outputs(n: int) -> list[dict]:
    """Rows shaped like `eval compare`'s outputs.jsonl for the two 'models': a context of 300 to 700
    characters, the paragraph right after it (at least 150), and a paragraph of the other book."""
    from contract import prompt

    holmes, other = paragraphs("pg1661-sherlock-holmes.txt"), paragraphs("pg84-frankenstein.txt")
    pairs = [(c, f) for c, f in zip(holmes, holmes[1:], strict=False) if 300 < len(c) < 700 and len(f) > 150]
    strangers = [p for p in other if 150 < len(p) < 700]
    rows = []
    for i, (context, following) in enumerate(pairs[::7][:n]):
        item = {"context_index": i, "sample": 0, "prompt": prompt.render_prompt(context)}
        rows.append({"model": "human", **item, "answer": following})
        rows.append({"model": "unrelated", **item, "answer": strangers[5 * i]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=6)
    parser.add_argument("--judge", default="smollm2")
    parser.add_argument("--backend", default="llama.cpp")
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--max-tokens", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "outputs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in outputs(args.items)))
        command = [
            sys.executable,
            "-m",
            "pipeline",
            "eval",
            "judge",
            str(folder),
            "--a",
            "human",
            "--b",
            "unrelated",
            "--judge",
            args.judge,
            "--backend",
            args.backend,
            "--max-tokens",
            str(args.max_tokens),
            "--n-ctx",
            "2048",
            "-o",
            str(folder / "judged"),
        ]
        command += ["--base-url", args.base_url] if args.base_url else []
        started = time.monotonic()
        subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        wall = time.monotonic() - started
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        summary = json.loads((folder / "judged" / "summary.json").read_text())
    overall = summary["overall"]
    pct = lambda v: "n/a" if v is None else f"{100 * v:.0f}%"  # noqa: E731
    low, high = overall["ci95"] or (None, None)
    print(f"judge {args.judge} ({args.backend}), {overall['items']} items, {2 * overall['items']} verdicts")
    print(f"win rate of human: {pct(overall['win_rate'])} (95% interval {pct(low)} to {pct(high)})")
    first = pct(summary["first_shown_rate"])
    print(
        f"consistency: {pct(overall['consistency'])}; first shown chosen: {first}; "
        f"unread verdicts: {overall['unparsed_verdicts']}"
    )
    print(f"time: {wall:.1f} s wall, {cpu.ru_utime + cpu.ru_stime:.1f} s CPU")


if __name__ == "__main__":
    main()
