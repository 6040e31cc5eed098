"""Training throughput and peak memory: QLoRA (4-bit NF4 base) and LoRA in bf16 mixed precision against
plain LoRA (auto precision: fp32 on a CPU), same rows, same steps.

    python benchmarks/bench_train.py [--steps 10] [--max-length 512] [--base FOLDER]

On the CPU: the tiny Qwen2 test model, or `--base` (SmolLM2-135M from `story-pipeline models smollm2 -o
FOLDER`, the demo's student). With a CUDA GPU, also a model shaped like Qwen2.5-0.5B (random weights,
built from a config; nothing downloads). LoRA bf16 runs on a CPU that multiplies bf16 natively
(AVX512_BF16, AMX or Arm BF16; on a GPU that has bf16, plain LoRA already trains in it). On a CPU,
"LoRA all" is plain LoRA with TRL's own choice there, its fused LM head scoring every position instead
of only the labelled ones (`base.score_labelled_positions_only`). Each configuration runs in its own
process so peak memory is its own (peak RSS on the CPU, peak allocated on the GPU). Prints tokens per
second and peak memory, with ratios against plain LoRA measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "corpus"
QWEN25_05B = dict(  # Qwen2.5-0.5B's shape (config.json of Qwen/Qwen2.5-0.5B)
    vocab_size=151936,
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    tie_word_embeddings=True,
)


def build_model(kind: str, folder: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    from pipeline.tiny import corpus_texts, make_tiny_model, tiny_config, train_tokenizer

    texts = corpus_texts(CORPUS, 200_000)
    if kind == "tiny":
        return make_tiny_model(folder, texts, "qwen2", initializer_range=0.3)
    tokenizer = train_tokenizer(texts, 512)  # ChatML, as Qwen2.5
    config = tiny_config("qwen2", **QWEN25_05B)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def run_one(args, work: Path) -> dict:
    """One measured run (`--one BASE` and its flags) in this process; returns the figures."""
    import resource

    import torch

    from pipeline.tiny import corpus_texts
    from pipeline.train import base
    from pipeline.train.options import TrainOptions
    from pipeline.train.run import train
    from tests.train.helpers import sft_rows, write_jsonl

    words = max(40, args.max_length // 4)  # contexts long enough to fill most of the window
    rows = sft_rows(corpus_texts(CORPUS, 400_000), args.batch * args.steps, context_words=words)
    data = write_jsonl(work / "train.jsonl", rows)
    opts = TrainOptions(
        base=args.one,
        out_dir=work / "out",
        data=data,
        qlora=args.qlora,
        precision=args.precision,
        max_steps=args.steps,
        batch_size=args.batch,
        grad_accum=1,
        max_length=args.max_length,
        log_steps=1,
        eval_steps=10**6,
        save_steps=10**6,
        warmup=0,
    )
    if args.every_position:  # TRL's own choice on a CPU: score the prompt and padding positions too
        base.score_labelled_positions_only = lambda: False
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = train(opts, printer=lambda m: None)
    history = result.trainer.state.log_history
    tokens = max(h.get("num_tokens", 0) for h in history)
    runtime = next(h["train_runtime"] for h in history if "train_runtime" in h)
    if torch.cuda.is_available():
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "tokens_per_s": tokens / runtime,
        "peak_mb": peak_mb,
        "tokens": tokens,
        "seconds": runtime,
        "precision": result.metadata["precision"],
        "device": result.metadata["device"],
    }


def configurations() -> dict[str, list[str]]:
    """Name -> the flags of its run. LoRA bf16 only on a CPU that has it natively: elsewhere on a CPU it
    would be emulated, and on a GPU that has it auto already picks it. On a CPU, also LoRA with TRL's
    own scoring there, every position (`train` scores only the labelled ones)."""
    from pipeline.train.base import detect_hardware

    hw = detect_hardware()
    cpu = {"LoRA all": ["--every-position"]} if hw.device == "cpu" else {}
    bf16 = {"LoRA bf16": ["--precision", "bf16"]} if hw.device == "cpu" and hw.bf16 else {}
    return {"LoRA": [], "QLoRA": ["--qlora"], **cpu, **bf16}


def measure(kind: str, base: Path, args) -> None:
    figures = {}
    for name, flags in configurations().items():
        cmd = [
            sys.executable,
            __file__,
            "--one",
            str(base),
            "--steps",
            str(args.steps),
            "--max-length",
            str(args.max_length),
            "--batch",
            str(args.batch),
            *flags,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if out.returncode:
            sys.exit(f"{kind} {name} failed:\n{out.stderr[-3000:]}")
        figures[name] = json.loads(out.stdout.strip().splitlines()[-1])
    lora = figures["LoRA"]
    device = lora["device"]
    print(
        f"\n{kind} model on {device} ({lora['precision']}), {args.steps} steps of {args.batch} x "
        f"{args.max_length} tokens"
    )
    memory = "peak allocated" if "CPU" not in device else "peak RSS"
    print(f"{'':10}{'tokens/s':>10}{'vs LoRA':>9}{memory:>16}{'vs LoRA':>9}")
    for name, f in figures.items():
        print(
            f"{name:10}{f['tokens_per_s']:>10.0f}{f['tokens_per_s'] / lora['tokens_per_s']:>8.2f}x"
            f"{f['peak_mb']:>13.0f} MB{f['peak_mb'] / lora['peak_mb']:>8.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one config in this process
    parser.add_argument("--qlora", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--every-position", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--base", type=Path, help="a model folder to measure instead of the tiny test model")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(run_one(args, Path(tmp))))
        return

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        if args.base:
            measure(args.base.name, args.base, args)
        else:
            measure("tiny Qwen2", build_model("tiny", Path(tmp) / "tiny"), args)
        if torch.cuda.is_available():
            measure("Qwen2.5-0.5B-shaped", build_model("qwen05", Path(tmp) / "q05"), args)
        else:
            print("\nno CUDA GPU here: the Qwen2.5-0.5B-shaped figures need one (run this on a GPU machine)")


if __name__ == "__main__":
    main()
