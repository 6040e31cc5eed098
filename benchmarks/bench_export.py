"""export-gguf on a 7B-shaped adapter: wall time, peak memory, size; and llama.cpp's converter on the same.

The adapter has Qwen2.5-7B's dimensions (28 layers, hidden 3584, MLP 18944, 28 query / 4 key-value heads),
rank 64 on all seven projections, random float32 values (what PEFT saves for a QLoRA run), and the base is
a folder with only config.json. Each conversion runs in its own process, so its peak resident memory is
its own. With a llama.cpp checkout (--llama-cpp DIR or LLAMA_CPP_DIR), its convert_lora_to_gguf.py runs on
the same adapter and the outputs are compared tensor by tensor.

    python benchmarks/bench_export.py --llama-cpp ~/src/llama.cpp [--outtype f32] [--png bench_export.png]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.export.safetensors_io import write_streamed  # noqa: E402

QWEN25_7B = dict(
    architectures=["Qwen2ForCausalLM"],
    model_type="qwen2",
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    max_position_embeddings=32768,
    rms_norm_eps=1e-6,
    rope_theta=1000000.0,
    vocab_size=152064,
    tie_word_embeddings=False,
    torch_dtype="bfloat16",
)
PROJECTIONS = {  # module -> (out, in) for Qwen2.5-7B
    "self_attn.q_proj": (3584, 3584),
    "self_attn.k_proj": (512, 3584),
    "self_attn.v_proj": (512, 3584),
    "self_attn.o_proj": (3584, 3584),
    "mlp.gate_proj": (18944, 3584),
    "mlp.up_proj": (18944, 3584),
    "mlp.down_proj": (3584, 18944),
}


def make_adapter(folder: Path, rank: int = 64, alpha: float = 128.0) -> None:
    specs = []
    for layer in range(QWEN25_7B["num_hidden_layers"]):
        for module, (n_out, n_in) in PROJECTIONS.items():
            stem = f"base_model.model.model.layers.{layer}.{module}"
            specs += [
                (f"{stem}.lora_A.weight", "F32", (rank, n_in)),
                (f"{stem}.lora_B.weight", "F32", (n_out, rank)),
            ]
    rng = np.random.default_rng(0)
    arrays = (rng.standard_normal(shape, dtype=np.float32) * 0.01 for _, _, shape in specs)
    folder.mkdir(parents=True)
    write_streamed(folder / "adapter_model.safetensors", specs, arrays)
    config = dict(
        peft_type="LORA",
        task_type="CAUSAL_LM",
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.05,
        target_modules=[m.split(".")[-1] for m in PROJECTIONS],
        bias="none",
        use_rslora=False,
        use_dora=False,
        base_model_name_or_path="Qwen/Qwen2.5-7B-Instruct",
    )
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))


def best_of(repeat: int, cmd: list[str], out: Path, env: dict | None = None) -> tuple[float, float]:
    """Fastest wall seconds and largest peak MiB over `repeat` runs (the machine may be shared)."""
    runs = []
    for _ in range(repeat):
        out.unlink(missing_ok=True)
        runs.append(run(cmd, env))
    return min(r[0] for r in runs), max(r[1] for r in runs)


def run(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall seconds and peak resident MiB of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr.read().decode()[-3000:]}")
    return wall, usage.ru_maxrss / 1024


def compare(ours: Path, theirs: Path) -> str:
    import gguf

    a = {t.name: t for t in gguf.GGUFReader(str(ours)).tensors}
    b = {t.name: t for t in gguf.GGUFReader(str(theirs)).tensors}
    if set(a) != set(b):
        return f"DIFFERENT names: {sorted(set(a) ^ set(b))[:4]}"
    for name, t in a.items():
        u = b[name]
        if t.tensor_type != u.tensor_type or list(t.shape) != list(u.shape):
            ours_kind, their_kind = (
                f"{t.tensor_type.name}{list(t.shape)}",
                f"{u.tensor_type.name}{list(u.shape)}",
            )
            return f"DIFFERENT {name}: {ours_kind} vs {their_kind}"
        if not np.array_equal(t.data, u.data):
            return f"DIFFERENT values in {name}"
    return f"same {len(a)} tensors (names, types, shapes, bytes)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--llama-cpp", type=Path, default=os.environ.get("LLAMA_CPP_DIR"), help="llama.cpp checkout"
    )
    ap.add_argument("--outtype", default="f32", choices=["f32", "f16", "bf16", "q8_0"])
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3, help="runs per converter; the fastest counts")
    ap.add_argument("--png", type=Path, help="also draw the comparison as a PNG")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        tmp = Path(tmp)
        adapter, base = tmp / "adapter", tmp / "base"
        t0 = time.perf_counter()
        make_adapter(adapter, args.rank)
        base.mkdir()
        (base / "config.json").write_text(json.dumps(QWEN25_7B))
        size = (adapter / "adapter_model.safetensors").stat().st_size
        print(
            f"adapter: Qwen2.5-7B shape, r={args.rank}, 7 projections x 28 layers, "
            f"{size / 2**20:.0f} MiB float32 (made in {time.perf_counter() - t0:.1f} s)"
        )

        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        ours = tmp / "ours.gguf"
        cmd = [
            sys.executable,
            "-m",
            "pipeline",
            "export-gguf",
            str(adapter),
            "--base",
            str(base),
            "-o",
            str(ours),
            "--outtype",
            args.outtype,
        ]
        rows = [
            ("story-pipeline export-gguf", *best_of(args.repeat, cmd, ours, env), ours.stat().st_size / 2**20)
        ]

        script = args.llama_cpp / "convert_lora_to_gguf.py" if args.llama_cpp else None
        verdict = None
        if script and script.is_file():
            theirs = tmp / "reference.gguf"
            cmd = [
                sys.executable,
                str(script),
                str(adapter),
                "--base",
                str(base),
                "--outfile",
                str(theirs),
                "--outtype",
                args.outtype,
            ]
            timing = best_of(args.repeat, cmd, theirs)
            rows.append(("llama.cpp convert_lora_to_gguf.py", *timing, theirs.stat().st_size / 2**20))
            verdict = compare(ours, theirs)
        else:
            print("reference: no llama.cpp checkout given (--llama-cpp DIR or LLAMA_CPP_DIR): skipped")

    print(f"\nouttype {args.outtype}, best of {args.repeat} runs, {os.cpu_count()} cores")
    print(f"{'converter':36} {'wall s':>8} {'peak MiB':>9} {'out MiB':>8}")
    for name, wall, peak, out in rows:
        print(f"{name:36} {wall:8.2f} {peak:9.0f} {out:8.0f}")
    if len(rows) == 2:
        (_, w0, m0, _), (_, w1, m1, _) = rows
        print(f"\nspeed-up: {w1 / w0:.1f}x faster (target: at least 5x); peak memory {m0 / m1:.2f}x theirs")
        print(f"output: {verdict}")
    if args.png:
        draw(rows, args.png, args.outtype)


def draw(rows, path: Path, outtype: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3))
    names = [r[0].split()[0] for r in rows]
    ax1.barh(names, [r[1] for r in rows], color="tab:blue")
    ax1.set_xlabel("wall seconds")
    ax2.barh(names, [r[2] for r in rows], color="tab:orange")
    ax2.set_xlabel("peak resident MiB")
    fig.suptitle(f"7B-shaped LoRA (r=64) to GGUF {outtype}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
