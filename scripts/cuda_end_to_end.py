"""The CUDA path end to end, on a tiny random model: trained a few steps in 4-bit NF4 on the GPU, the
adapter exported to GGUF, then proven in llama.cpp on the CPU against transformers + PEFT. Every step
is the `story-pipeline` command a user runs (called in this process).

    python scripts/cuda_end_to_end.py                      # on a CUDA machine: QLoRA on the GPU
    python scripts/cuda_end_to_end.py --device cpu         # the same chain on a CPU (the test runs this)
    python scripts/cuda_end_to_end.py --verify work/cuda-e2e.tar.gz   # the last step, where llama.cpp is

Where llama-cpp-python is not installed (a GPU machine that cannot fetch it), the run stops after the
export and packs base, adapter and GGUFs into OUT.tar.gz; `--verify` on that file finishes the proof on
any machine with `make install`. Exit status 0 when every step passed, 3 when only the verification
is left to do, anything else on a failure.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def step(name: str, *args: object) -> None:
    """One `story-pipeline` command, in this process; a failing one ends the run with its name."""
    from pipeline.cli import app

    print(f"\n$ story-pipeline {name} {' '.join(str(a) for a in args)}", flush=True)
    started = time.monotonic()
    try:
        code = app([*name.split(), *(str(a) for a in args)], standalone_mode=False)
    except SystemExit as e:
        code = e.code
    except Exception as e:  # a usage error: click's exceptions say what was wrong
        if not hasattr(e, "format_message"):
            raise
        code = f"2 ({e.format_message()})"
    if code not in (None, 0):
        sys.exit(f"FAILED: story-pipeline {name} exited {code}")
    print(f"({time.monotonic() - started:.1f} s)", flush=True)


def write_rows(path: Path, count: int = 24) -> Path:
    from contract.prompt import training_row
    from pipeline.tiny import corpus_texts

    words = " ".join(corpus_texts(REPO / "tests" / "corpus", 100_000)).split()
    spans = [(words[i * 80 : i * 80 + 60], words[i * 80 + 60 : i * 80 + 80]) for i in range(count)]
    rows = [training_row(" ".join(c), "The scene goes on.", " ".join(a)) for c, a in spans]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def check_trained(adapter: Path, device: str, qlora: bool) -> dict:
    """training.json says where and how it trained, and the LoRA B matrices (zero at the start) moved."""
    from safetensors.torch import load_file

    meta = json.loads((adapter / "training.json").read_text(encoding="utf-8"))
    moved = max(
        t.abs().max().item()
        for n, t in load_file(adapter / "adapter_model.safetensors").items()
        if "lora_B" in n
    )
    facts = {k: meta[k] for k in ("device", "precision", "qlora", "global_step", "status")} | {
        "lora_b_max": moved
    }
    problems = []
    if meta["qlora"] != qlora:
        problems.append(f"trained with qlora={meta['qlora']}, asked {qlora}")
    if (device == "cuda") == (meta["device"] in ("CPU", "Apple GPU")):
        problems.append(f"trained on {meta['device']}, asked {device}")
    if meta["status"] != "done" or not moved > 0:
        problems.append(f"status {meta['status']}, largest LoRA B value {moved}: the adapter did not train")
    if problems:
        sys.exit("FAILED: " + "; ".join(problems))
    return facts


def verify(folder: Path) -> None:
    step(
        "verify-gguf",
        "--hf",
        folder / "base",
        "--gguf",
        folder / "base-f32.gguf",
        "--adapter",
        folder / "adapter",
        "--lora",
        folder / "adapter.gguf",
    )
    print(f"\nPASS: the adapter of {folder} gives the same logits in llama.cpp as in transformers + PEFT")


def verify_packed(source: Path) -> None:
    if source.is_dir():
        return verify(source)
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(source) as tar:
        tar.extractall(tmp, filter="data")
        verify(Path(tmp) / source.name.removesuffix(".tar.gz"))


def qlora_for(device: str) -> bool:
    """4-bit where bitsandbytes can train it; on CUDA that is the point of the run, so required."""
    from pipeline.train.base import check_qlora
    from pipeline.train.options import TrainError

    try:
        check_qlora(device)
        return True
    except TrainError as e:
        if device == "cuda":
            sys.exit(f"FAILED: 4-bit training on CUDA: {e}")
        print(f"note: 4-bit not possible on {device}, training plain LoRA instead ({e})")
        return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--out", type=Path, default=Path("work/cuda-e2e"), help="a new folder")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument(
        "--verify", type=Path, metavar="FOLDER_OR_TAR", help="only the last step, on an earlier run"
    )
    args = parser.parse_args(argv)
    if args.verify:
        return verify_packed(args.verify)
    if args.device == "cpu":  # a CPU run stays on the CPU, GPU or not
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(f"no CUDA GPU here (torch {torch.__version__}): run it on a CUDA machine, or --device cpu")
    out = args.out
    if out.exists():
        sys.exit(f"{out} exists: give a new --out folder")
    qlora = qlora_for(args.device)
    started = time.monotonic()
    step("models tiny", "--books", REPO / "tests" / "corpus", "-o", out / "base")
    rows = write_rows(out / "rows.jsonl")
    step(
        "train",
        "--base",
        out / "base",
        "--data",
        rows,
        "-o",
        out / "adapter",
        "--max-steps",
        args.steps,
        "--batch-size",
        2,
        "--grad-accum",
        1,
        "--max-length",
        256,
        "--lr",
        "1e-2",
        "--warmup",
        0,
        "--log-steps",
        1,
        "--save-steps",
        1000,
        "--qlora" if qlora else "--no-qlora",
    )
    facts = check_trained(out / "adapter", args.device, qlora)
    step("export-base", out / "base", "-o", out / "base-f32.gguf", "--outtype", "f32")
    step("export-gguf", out / "adapter", "--base", out / "base", "-o", out / "adapter.gguf")
    (out / "report.json").write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")
    packed = out.with_name(out.name + ".tar.gz")
    with tarfile.open(packed, "w:gz") as tar:
        tar.add(out, arcname=out.name, filter=lambda t: None if "/checkpoints" in t.name else t)
    print(
        f"\ntrained on {facts['device']} ({facts['precision']}, {'QLoRA 4-bit' if qlora else 'LoRA'}), "
        f"exported; packed as {packed}"
    )
    if importlib.util.find_spec("llama_cpp") is None:
        print(
            "llama-cpp-python is not installed here: finish where it is with  "
            f"python scripts/cuda_end_to_end.py --verify {packed}"
        )
        sys.exit(3)
    verify(out)
    print(f"end to end in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
