"""Training on a GPU at the write-ups' shapes: our `train` (QLoRA NF4, LoRA bf16) against a plain
Transformers + PEFT loop, both measured in the same run.

    python benchmarks/bench_train_gpu.py --shape 7b              # CUDA: Qwen2.5-7B's shape
    python benchmarks/bench_train_gpu.py --shape 1.5b            # CUDA: the 1.5B student's shape
    python benchmarks/bench_train_gpu.py --shape tiny --device cpu   # the same code on a CPU, in seconds

Models are built from a config with random weights (nothing downloads). Four systems train the same
tokenized rows for the same steps: `ours-qlora` and `ours-lora` are `pipeline.train.run.train`, the code
behind `story-pipeline train`; `plain-qlora` and `plain-lora` are a hand-written loop over
`AutoModelForCausalLM` + `peft.get_peft_model` (the PEFT docs' QLoRA recipe,
`prepare_model_for_kbit_training`), the baseline. Each setting (tokens per sequence, packing, gradient
checkpointing, attention implementation) is measured for all four. Tokens per second count the real
tokens (no padding) of the steps after --warmup; peak memory is `torch.cuda.max_memory_allocated` (on a
CPU: the process's peak resident memory, imports included, so only a plumbing check). On CUDA every run
is its own process. Ratios are ours against the plain loop of the same kind in the same run: speed > 1
is faster, memory < 1 is smaller. The table prints; JSON and a PNG chart go to --out, rewritten after
each setting, so a run cut short keeps what it measured (--budget stops starting new settings in time).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "corpus"
sys.path.insert(0, str(REPO))

# The shapes, from the public config.json of each model; weights random, vocabulary full size (the
# embeddings and the logits over it are a large share of the memory at these lengths).
QWEN25_7B = dict(  # Qwen/Qwen2.5-7B(-Instruct)
    vocab_size=152064,
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    max_position_embeddings=32768,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)
R1_DISTILL_QWEN_15B = dict(  # deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B (Qwen2.5-1.5B's layers, untied head)
    vocab_size=151936,
    hidden_size=1536,
    intermediate_size=8960,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    max_position_embeddings=131072,
    rope_theta=10000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)
SHAPES: dict[str, dict] = {"7b": QWEN25_7B, "1.5b": R1_DISTILL_QWEN_15B, "tiny": {}}  # tiny: pipeline.tiny's
DEFAULT_LENGTHS = {"7b": "2048,4096", "1.5b": "2048,4096", "tiny": "512,1024"}
SYSTEMS = ("ours-qlora", "plain-qlora", "ours-lora", "plain-lora")
BASELINE = {"ours-qlora": "plain-qlora", "ours-lora": "plain-lora"}
COLUMNS = (
    "shape",
    "attention",
    "length",
    "packing",
    "checkpointing",
    "system",
    "status",
    "tokens_per_s",
    "peak_mb",
    "tokens",
    "seconds",
    "steps",
)


@dataclass(frozen=True)
class Setting:
    length: int
    packing: bool
    checkpointing: bool
    attention: str

    @classmethod
    def of(cls, run: dict) -> Setting:
        return cls(run["length"], run["packing"], run["checkpointing"], run["attention"])

    def label(self) -> str:
        return (
            f"{self.length} {'packed' if self.packing else 'unpacked'} "
            f"{'ckpt' if self.checkpointing else 'no-ckpt'} {self.attention}"
        )


# ---- the models and rows --------------------------------------------------------------------------


def build_base(shape: str, folder: Path, device: str) -> Path:
    """A random model of the shape with a tiny trained tokenizer and a ChatML template, saved as a
    Hugging Face folder in bf16 (fp32 for tiny). Initialised on the GPU where there is one: fast."""
    import torch
    from transformers import AutoModelForCausalLM

    from pipeline.tiny import corpus_texts, make_tiny_model, tiny_config, train_tokenizer

    texts = corpus_texts(CORPUS, 200_000)
    if shape == "tiny":
        return make_tiny_model(folder, texts, "qwen2")
    tokenizer = train_tokenizer(texts, 512)
    config = tiny_config("qwen2", **SHAPES[shape])
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model  # the runs are other processes: give this one's GPU memory back before they start
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return folder


def with_attention(base: Path, attention: str) -> Path:
    """The base as seen with one attention implementation: a sibling folder linking its files, whose
    config.json names the implementation (transformers reads `attn_implementation` from it), so our
    train path and the plain loop load the same weights with the same kernels."""
    folder = base.with_name(f"{base.name}-{attention}")
    if not folder.exists():
        folder.mkdir()
        for f in base.iterdir():
            if f.name != "config.json":
                (folder / f.name).symlink_to(f.resolve())
        config = json.loads((base / "config.json").read_text(encoding="utf-8"))
        (folder / "config.json").write_text(json.dumps({**config, "attn_implementation": attention}))
    return folder


def write_rows(path: Path, length: int, count: int) -> Path:
    """Writer rows whose contexts spread from about a third of `length` tokens to past it (train cuts
    those to fit), so unpacked batches vary in length and packing has work to do."""
    from contract.prompt import training_row
    from pipeline.tiny import corpus_texts

    words = " ".join(corpus_texts(CORPUS, 2_000_000)).split()
    rows, at = [], 0
    for i in range(count):
        # about 2.5 tokens a word in the tiny vocabulary, and some 250 tokens of prompt and answer around them
        n = max(10, int(length * (0.3 + 0.8 * ((i * 7) % 10) / 9) / 2.5) - 100)
        take = [words[(at + k) % len(words)] for k in range(n + 40)]
        at += n + 40
        rows.append(training_row(" ".join(take[:n]), "The scene goes on.", " ".join(take[n:])))
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ---- one measured run -----------------------------------------------------------------------------


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    else:  # Linux: "5" resets the process's peak resident size (VmHWM)
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")


def peak_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(spec: dict) -> tuple[list[float], list[int]]:
    """`story-pipeline train`'s own code (pipeline.train.run.train) with a callback timing each step."""
    from transformers import TrainerCallback

    from pipeline.train.options import TrainOptions
    from pipeline.train.run import train

    device = spec["device"]

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_step_begin(self, args, state, control, **kw):
            sync(device)
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            sync(device)
            self.seconds.append(time.perf_counter() - self.start)

    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        opts = TrainOptions(
            base=spec["base"],
            out_dir=Path(tmp) / "adapter",
            data=Path(spec["data"]),
            qlora=spec["system"] == "ours-qlora",
            max_steps=spec["warmup"] + spec["steps"],
            batch_size=spec["batch"],
            grad_accum=1,
            max_length=spec["length"],
            packing=spec["packing"],
            gradient_checkpointing=spec["checkpointing"],
            log_steps=1,
            eval_steps=10**6,
            save_steps=10**6,
            warmup=0,
        )
        result = train(opts, callbacks=[timer], printer=lambda m: None)
        # TRL logs the running count of real tokens (attention mask, or packed positions) each step.
        history = result.trainer.state.log_history if result.trainer else []
        total = [0] + [int(h["num_tokens"]) for h in history if "num_tokens" in h]
        del result, history
    tokens = [b - a for a, b in zip(total, total[1:], strict=False)]
    return timer.seconds, tokens


def plain_batches(rows: list[dict], length: int, packing: bool, batch: int, pad_id: int) -> list[dict]:
    """The plain loop's batches of the same tokenized rows: packed greedily into `length`-token
    sequences with positions restarting at each row (transformers keeps rows apart from those), a
    batch flattened into one row as padding-free collation does; or rows grouped by length and padded."""
    import torch

    if packing:
        packs: list[list[dict]] = [[]]
        for r in rows:
            if sum(len(x["input_ids"]) for x in packs[-1]) + len(r["input_ids"]) > length:
                packs.append([])
            packs[-1].append(r)
        out = []
        for i in range(0, len(packs), batch):
            members = [r for p in packs[i : i + batch] for r in p]
            ids = [t for r in members for t in r["input_ids"]]
            out.append(
                {
                    "input_ids": torch.tensor([ids]),
                    "labels": torch.tensor([[t for r in members for t in r["labels"]]]),
                    "position_ids": torch.tensor([[p for r in members for p in range(len(r["input_ids"]))]]),
                    "tokens": len(ids),
                }
            )
        return out
    ordered = sorted(rows, key=lambda r: len(r["input_ids"]))
    out = []
    for i in range(0, len(ordered), batch):
        group = ordered[i : i + batch]
        width = max(len(r["input_ids"]) for r in group)
        lengths = torch.tensor([len(r["input_ids"]) for r in group])

        def padded(key: str, fill: int, group=group, width=width):
            return torch.tensor([r[key] + [fill] * (width - len(r[key])) for r in group])

        out.append(
            {
                "input_ids": padded("input_ids", pad_id),
                "labels": padded("labels", -100),
                "attention_mask": (torch.arange(width)[None, :] < lengths[:, None]).long(),
                "tokens": int(lengths.sum()),
            }
        )
    import random

    random.Random(0).shuffle(out)
    return out


def run_plain(spec: dict) -> tuple[list[float], list[int]]:
    """The baseline: transformers + PEFT as their docs show it, and a plain PyTorch training loop."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from pipeline.train.base import load_tokenizer
    from pipeline.train.options import TrainOptions
    from pipeline.train.rows import load_sft

    device, qlora, ckpt = spec["device"], spec["system"] == "plain-qlora", spec["checkpointing"]
    defaults = TrainOptions(base=spec["base"], out_dir=Path("unused"), data=Path(spec["data"]))
    tokenizer: Any = load_tokenizer(spec["base"])[0]
    rows, _ = load_sft(spec["data"], tokenizer, spec["length"])  # the rows our path trains on
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    kwargs: dict = {"dtype": dtype}
    if qlora:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        kwargs["device_map"] = {"": 0 if device == "cuda" else "cpu"}
    model = AutoModelForCausalLM.from_pretrained(spec["base"], **kwargs)
    if not qlora:
        model.to(device)
    model.config.use_cache = False
    gc_kwargs = {"use_reentrant": False}
    if qlora:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=ckpt, gradient_checkpointing_kwargs=gc_kwargs
        )
    elif ckpt and hasattr(model, "activation_checkpointing_enable"):  # its name since transformers 5.2x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=gc_kwargs)
    elif ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
    lora = LoraConfig(
        r=defaults.rank,
        lora_alpha=defaults.alpha,
        lora_dropout=defaults.dropout,
        target_modules=list(defaults.target_modules),
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    peft_model.train()
    optimizer = torch.optim.AdamW(
        [p for p in peft_model.parameters() if p.requires_grad], lr=defaults.learning_rate
    )
    batches = plain_batches(rows, spec["length"], spec["packing"], spec["batch"], tokenizer.pad_token_id)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else contextlib.nullcontext()
    seconds, tokens = [], []
    for step in range(spec["warmup"] + spec["steps"]):
        b = batches[step % len(batches)]
        sync(device)
        start = time.perf_counter()
        inputs = {k: v.to(device) for k, v in b.items() if k != "tokens"}
        with autocast:
            loss = peft_model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # as the Trainer logs each step
        sync(device)
        seconds.append(time.perf_counter() - start)
        tokens.append(b["tokens"])
    return seconds, tokens


def run_system(spec: dict) -> dict:
    """One system at one setting: figures of the steps after the warmup, or the failure."""
    import torch

    reset_peak(spec["device"])
    out = {k: spec[k] for k in ("shape", "attention", "length", "packing", "checkpointing", "system")}
    try:
        seconds, tokens = (run_ours if spec["system"].startswith("ours") else run_plain)(spec)
    except torch.OutOfMemoryError:
        return out | {"status": "out of memory", "peak_mb": peak_mb(spec["device"])}
    except Exception as e:  # one broken system must not lose the others' figures
        return out | {"status": f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    measured_s, measured_t = seconds[spec["warmup"] :], tokens[spec["warmup"] :]
    if not measured_s or sum(measured_s) <= 0:
        return out | {"status": f"failed: {len(seconds)} steps ran, {spec['warmup']} of them warmup"}
    return out | {
        "status": "ok",
        "tokens_per_s": sum(measured_t) / sum(measured_s),
        "peak_mb": peak_mb(spec["device"]),
        "tokens": sum(measured_t),
        "seconds": sum(measured_s),
        "steps": len(measured_s),
    }


def run_isolated(spec: dict, timeout: float) -> dict:
    """run_system in a fresh process, so each peak is its own and a crash or an OOM stays there."""
    cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {k: spec[k] for k in COLUMNS[:6]} | {"status": f"failed: over {timeout:.0f} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {k: spec[k] for k in COLUMNS[:6]} | {"status": f"failed: exit {done.returncode}: {tail}"}
    return json.loads(lines[-1])


# ---- the report -----------------------------------------------------------------------------------


def ratios(runs: list[dict]) -> list[dict]:
    """Ours against the plain loop of the same kind at the same setting, both measured in this run."""
    key = lambda r: (r["shape"], r["attention"], r["length"], r["packing"], r["checkpointing"])  # noqa: E731
    ok = {(*key(r), r["system"]): r for r in runs if r.get("status") == "ok"}
    out = []
    for (*k, system), r in ok.items():
        base = ok.get((*k, BASELINE.get(system, "")))
        if base is not None:
            out.append(
                dict(zip(COLUMNS[:5], k, strict=True))
                | {
                    "system": system,
                    "against": base["system"],
                    "speed": r["tokens_per_s"] / base["tokens_per_s"],
                    "memory": r["peak_mb"] / base["peak_mb"],
                }
            )
    return out


def table(runs: list[dict], memory_name: str) -> str:
    against = {
        (r["shape"], r["attention"], r["length"], r["packing"], r["checkpointing"], r["system"]): r
        for r in ratios(runs)
    }
    lines = [
        f"{'shape':6} {'setting':32} {'system':12} {'tokens/s':>10} {'speed':>7} {memory_name:>12} "
        f"{'memory':>7}  status"
    ]
    for r in runs:
        s = Setting.of(r)
        ratio = against.get(
            (r["shape"], r["attention"], r["length"], r["packing"], r["checkpointing"], r["system"])
        )
        tps = f"{r['tokens_per_s']:10.0f}" if "tokens_per_s" in r else f"{'-':>10}"
        mem = f"{r['peak_mb'] / 1024:9.2f} GiB" if "peak_mb" in r else f"{'-':>12}"
        speed = (
            f"{ratio['speed']:6.2f}x"
            if ratio
            else f"{'(base)' if r['system'] in BASELINE.values() else '-':>7}"
        )
        memory = f"{ratio['memory']:6.2f}x" if ratio else f"{'':>7}"
        lines.append(
            f"{r['shape']:6} {s.label():32} {r['system']:12} {tps} {speed} {mem} {memory}  {r['status']}"
        )
    return "\n".join(lines)


def chart(runs: list[dict], png: Path, title: str, memory_name: str) -> None:
    """Tokens per second and peak memory of each system at each setting, side by side."""
    from pipeline import plots

    plt = plots.pyplot()
    settings = list(dict.fromkeys((r["shape"], Setting.of(r).label()) for r in runs))
    found = {(r["system"], r["shape"], Setting.of(r).label()): r for r in runs if r.get("status") == "ok"}
    fig, axes = plt.subplots(2, 1, figsize=(max(7, 1.6 * len(settings)), 7), dpi=100)
    width = 0.8 / len(SYSTEMS)
    for i, system in enumerate(SYSTEMS):
        for ax, key, scale in ((axes[0], "tokens_per_s", 1.0), (axes[1], "peak_mb", 1 / 1024)):
            values = [found[(system, *s)][key] * scale if (system, *s) in found else 0.0 for s in settings]
            ax.bar([x + (i - 1.5) * width for x in range(len(settings))], values, width, label=system)
    for ax, name in ((axes[0], "tokens / s"), (axes[1], f"{memory_name} (GiB)")):
        ax.set_ylabel(name)
        ax.set_xticks(range(len(settings)), [f"{s}\n{lab}" for s, lab in settings], fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_title(title, fontsize=9)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    plots.save_png(fig, png)


def environment(device: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "python": platform.python_version()}
    for pkg in ("torch", "transformers", "peft", "trl", "bitsandbytes", "flash-attn"):
        with contextlib.suppress(PackageNotFoundError):
            info[pkg] = version(pkg)
    info["device"] = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    return info


def save(out: Path, report: dict, memory_name: str) -> None:
    from plumbing.atomic import write_text

    write_text(out / "bench_train_gpu.json", json.dumps(report, indent=2) + "\n")
    title = f"{report['environment']['device']}, {report['environment']['date']}: ours vs plain HF + PEFT"
    chart(report["runs"], out / "bench_train_gpu.png", title, memory_name)


# ---- the command ----------------------------------------------------------------------------------


def plan(args) -> list[Setting]:
    """Settings in the order they matter: `train`'s defaults (packed, checkpointed) first, then one
    change at a time, then both; each at every length, for each attention implementation."""
    lengths = [int(x) for x in args.lengths.split(",")]
    packing = [x == "on" for x in args.packing.split(",")]
    ckpt = [x == "on" for x in args.checkpointing.split(",")]
    combos = [
        (p, c)
        for p, c in ((True, True), (False, True), (True, False), (False, False))
        if p in packing and c in ckpt
    ]
    return [Setting(n, p, c, a) for a in args.attention for p, c in combos for n in lengths]


def attention_available(requested: str, device: str) -> tuple[list[str], list[str]]:
    """(implementations to measure, notes on those left out)."""
    import importlib.util

    wanted = ["sdpa", "flash_attention_2"] if requested == "auto" else requested.split(",")
    keep, notes = [], []
    for a in wanted:
        if a == "flash_attention_2" and (device != "cuda" or importlib.util.find_spec("flash_attn") is None):
            notes.append("flash_attention_2 not measured: it needs CUDA and the flash-attn package")
        else:
            keep.append(a)
    return keep, notes


def check_device(args) -> None:
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(
            f"no CUDA GPU here (torch {torch.__version__}): the {args.shape} shape is measured on a CUDA "
            "GPU. On a CPU, check the benchmark itself with --shape tiny --device cpu"
        )
    if args.device == "cpu" and args.shape != "tiny":
        sys.exit(f"the {args.shape} shape would take hours on a CPU: use --shape tiny --device cpu there")


def systems_here(device: str) -> tuple[list[str], list[str]]:
    """All four systems, or the LoRA ones with a note where bitsandbytes cannot train 4-bit here."""
    from pipeline.train.base import check_qlora
    from pipeline.train.options import TrainError

    try:
        check_qlora(device)
    except TrainError as e:
        return [s for s in SYSTEMS if "qlora" not in s], [f"4-bit (QLoRA) not measured on {device}: {e}"]
    notes = (
        [] if device == "cuda" else [f"4-bit on {device} is bitsandbytes' reference path: no speed to read"]
    )
    return list(SYSTEMS), notes


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=list(SHAPES), default="7b")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument(
        "--lengths", help="tokens per sequence, comma-separated (default 2048,4096; tiny 512,1024)"
    )
    parser.add_argument("--packing", default="on,off", help="on, off or on,off")
    parser.add_argument("--checkpointing", default="on,off", help="gradient checkpointing: on, off or on,off")
    parser.add_argument("--attention", default="auto", help="sdpa,flash_attention_2 (auto: those installed)")
    parser.add_argument("--steps", type=int, default=None, help="measured steps (default 4; tiny 2)")
    parser.add_argument("--warmup", type=int, default=2, help="steps run first and not measured")
    parser.add_argument("--batch", type=int, default=1, help="sequences per step")
    parser.add_argument("--budget", type=float, default=540, help="seconds: start no setting past this")
    parser.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="each run in its own process (default: on CUDA)",
    )
    parser.add_argument("--out", type=Path, default=Path("work/bench-train-gpu"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one run_system in this process
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_system(json.loads(args.worker))))
        return {}
    check_device(args)
    args.lengths = args.lengths or DEFAULT_LENGTHS[args.shape]
    steps = args.steps or (2 if args.shape == "tiny" else 4)
    isolate = args.device == "cuda" if args.isolate is None else args.isolate
    args.attention, notes = attention_available(args.attention, args.device)
    systems, more = systems_here(args.device)
    notes += more
    memory_name = "peak alloc" if args.device == "cuda" else "peak RSS"
    started = time.monotonic()
    report: dict = {
        "command": " ".join(["python", "benchmarks/bench_train_gpu.py", *(argv or sys.argv[1:])]),
        "environment": environment(args.device),
        "shape": {args.shape: SHAPES[args.shape]},
        "steps": steps,
        "warmup": args.warmup,
        "batch": args.batch,
        "notes": notes,
        "runs": [],
        "ratios": [],
        "not_run": [],
    }
    for note in notes:
        print(f"note: {note}")
    with tempfile.TemporaryDirectory(prefix="bench-train-gpu-") as tmp:
        print(f"building the {args.shape} model (random weights) ...", flush=True)
        base = build_base(args.shape, Path(tmp) / args.shape, args.device)
        rows = max(16, 3 * (args.warmup + steps) * args.batch)
        data = {n: write_rows(Path(tmp) / f"rows-{n}.jsonl", n, rows) for n in {s.length for s in plan(args)}}
        print(f"model built in {time.monotonic() - started:.0f} s", flush=True)
        spent: list[float] = []
        for setting in plan(args):
            elapsed = time.monotonic() - started
            if spent and elapsed + max(spent) > args.budget:
                report["not_run"].append(asdict(setting))
                continue
            t0 = time.monotonic()
            for system in systems:
                spec = {
                    "shape": args.shape,
                    "system": system,
                    "device": args.device,
                    "steps": steps,
                    "warmup": args.warmup,
                    "batch": args.batch,
                    "data": str(data[setting.length]),
                    "base": str(with_attention(base, setting.attention)),
                    **asdict(setting),
                }
                run = run_isolated(spec, args.budget) if isolate else run_system(spec)
                report["runs"].append(run)
                print(f"  {setting.label()} {system}: {run['status']}", flush=True)
            spent.append(time.monotonic() - t0)
            report["ratios"] = ratios(report["runs"])
            save(args.out, report, memory_name)
    print()
    print(table(report["runs"], memory_name))
    for s in report["not_run"]:
        print(f"not run (past --budget {args.budget:.0f} s): {Setting(**s).label()}")
    for note in notes:
        print(f"note: {note}")
    print(
        f"\n{report['environment']['device']}; JSON and chart in {args.out}/ "
        f"({time.monotonic() - started:.0f} s)"
    )
    return report


if __name__ == "__main__":
    main()
