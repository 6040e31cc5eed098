"""What a training run is asked to do: one dataclass shared by SFT, DPO and KTO, and the Trainer
arguments every method has in common. Standard library only, so the CLI can build it cheaply."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
METHODS = ("sft", "dpo", "kto")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DEFAULT_LR = {"sft": 2e-4, "dpo": 5e-5, "kto": 5e-5}


class TrainError(RuntimeError):
    """A run that cannot start or go on; the message names the problem and the fix."""


@dataclass
class TrainOptions:
    base: str
    out_dir: Path
    data: Path
    eval_data: Path | None = None
    method: str = "sft"
    adapter: Path | None = None  # an SFT adapter to start from (required for dpo and kto)
    chat_format: str | None = None
    qlora: bool = True
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ATTENTION_MODULES
    epochs: float = 2.0
    max_steps: int = -1
    lr: float | None = None  # None: the method's default (DEFAULT_LR)
    scheduler: str = "cosine"
    warmup: float = 0.03  # a fraction of the steps below 1, a number of steps from 1
    batch_size: int = 2
    grad_accum: int = 8
    max_length: int = 2048
    packing: bool = True
    eval_steps: int = 50
    save_steps: int | None = None  # None: the same as eval_steps
    save_total_limit: int = 2
    log_steps: int = 10
    early_stopping: int = 0  # patience in evaluations; 0 turns it off
    early_stopping_threshold: float = 0.0
    seed: int = 42
    resume: bool = False
    overwrite: bool = False
    precision: str = "auto"
    gradient_checkpointing: bool = True
    optim: str = "adamw_torch"
    beta: float = 0.1  # DPO / KTO strength of the pull towards the reference (the SFT adapter)

    def __post_init__(self) -> None:
        self.out_dir, self.data = Path(self.out_dir), Path(self.data)
        self.method = self.method.lower()
        self.target_modules = tuple(self.target_modules)
        problems = []
        if self.method not in METHODS:
            problems.append(f"--method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.precision not in PRECISIONS:
            problems.append(f"--precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.method != "sft" and self.adapter is None:
            problems.append(f"--method {self.method} starts from an SFT adapter: pass --adapter SFT_OUT_DIR")
        if self.early_stopping and self.eval_data is None:
            problems.append("--early-stopping needs held-out rows to watch: pass --eval-data val.jsonl")
        for name in ("rank", "alpha", "batch_size", "grad_accum", "max_length", "eval_steps", "log_steps"):
            if getattr(self, name) <= 0:
                problems.append(f"--{name.replace('_', '-')} must be positive")
        if not 0 <= self.dropout < 1:
            problems.append("--dropout must be in [0, 1)")
        if self.max_length < 64:
            problems.append("--max-length below 64 tokens cannot hold the writer prompt and a reply")
        if self.save_steps is not None and self.early_stopping and self.save_steps % self.eval_steps:
            problems.append("with --early-stopping, --save-steps must be a multiple of --eval-steps")
        if problems:
            raise TrainError("; ".join(problems))

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

    def as_dict(self) -> dict:
        d = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


def is_main_process() -> bool:
    """Rank 0 under torchrun / accelerate launch, or the only process."""
    return int(os.environ.get("RANK", "0")) == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def trainer_arguments(opts: TrainOptions, precision: str, device: str, has_eval: bool) -> dict:
    """Keyword arguments of transformers' TrainingArguments (and TRL's configs built on it)."""
    save_steps = opts.save_steps or opts.eval_steps
    args = dict(
        output_dir=str(opts.out_dir / "checkpoints"),
        num_train_epochs=opts.epochs,
        max_steps=opts.max_steps,
        learning_rate=opts.learning_rate,
        lr_scheduler_type=opts.scheduler,
        warmup_steps=opts.warmup,
        per_device_train_batch_size=opts.batch_size,
        per_device_eval_batch_size=opts.batch_size,
        gradient_accumulation_steps=opts.grad_accum,
        optim=opts.optim,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        activation_checkpointing=opts.gradient_checkpointing,
        # Non-reentrant checkpointing works with frozen inputs and with DDP (several GPUs).
        activation_checkpointing_kwargs={"use_reentrant": False},
        ddp_find_unused_parameters=False,
        logging_steps=opts.log_steps,
        logging_first_step=True,
        eval_strategy="steps" if has_eval else "no",
        eval_on_start=has_eval and not opts.resume,  # the untrained loss, as the curve's starting point
        eval_steps=opts.eval_steps,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=opts.save_total_limit,
        load_best_model_at_end=bool(opts.early_stopping),
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        seed=opts.seed,
        data_seed=opts.seed,
        report_to="none",
    )
    return args
