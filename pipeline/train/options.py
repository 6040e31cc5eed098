"""What a training run is asked to do: one dataclass shared by SFT, DPO and KTO, and the Trainer
arguments every method has in common. Standard library only, so the CLI can build it cheaply."""

from __future__ import annotations

import os
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

from contract import target as targets
from pipeline.ranges import option, out_of_range

ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
METHODS = ("sft", "dpo", "kto")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DEFAULT_LR = {"sft": 2e-4, "dpo": 5e-5, "kto": 5e-5}
DEFAULT_PATIENCE = 3  # evaluations without improvement before a run with held-out rows stops
REPORTERS = ("none", "tensorboard", "wandb", "mlflow")  # experiment trackers transformers reports to


class TrainError(RuntimeError):
    """A run that cannot start or go on; the message names the problem and the fix."""


@dataclass
class TrainOptions:
    """Every training option, its default and its help, defined once: `story-pipeline train` builds its
    flags from these fields, and a config file (TOML, or a run's training.json) sets the same names."""

    base: str = option(MISSING, "Base model: a Hugging Face folder (or hub id)")
    out_dir: Path = option(MISSING, "Output folder (the PEFT adapter)", "-o", "--output")
    data: Path = option(MISSING, "Training rows (JSONL): SFT messages, or DPO/KTO preferences")
    eval_data: Path | None = option(None, "Held-out rows in the same format")
    method: str = option("sft", f"Training method: {', '.join(METHODS)}")
    target: str = option(
        targets.DEFAULT.value,
        "What SFT trains the model to write: reasoning+answer; answer (the same rows, reasoning removed); "
        "text (plain book windows from the data step, no chat template, loss on every token)",
    )
    adapter: Path | None = option(None, "An SFT adapter folder to start from (required for dpo and kto)")
    chat_template: Path | None = option(
        None,
        "A chat template to train with where the base has none (or to replace its own): a Hugging Face "
        "folder, its tokenizer_config.json, or a .jinja file",
    )
    qlora: bool = option(True, "Load the base in 4-bit NF4 (bitsandbytes); --no-qlora trains plain LoRA")
    rank: int = option(16, "LoRA rank", min=1, max=4096)
    alpha: int = option(32, "LoRA alpha (scale = alpha / rank)", min=1)
    dropout: float = option(0.05, "LoRA dropout", min=0, below=1)
    target_modules: tuple[str, ...] = option(
        ATTENTION_MODULES, "Module names to adapt (comma-separated on the command line), or all-linear"
    )
    epochs: float = option(2.0, "Passes over the training rows", above=0)
    max_steps: int = option(-1, "Stop after this many optimizer steps (-1: epochs decide)", min=-1, not_=0)
    lr: float | None = option(
        None,
        f"Learning rate (default {DEFAULT_LR['sft']} for sft, {DEFAULT_LR['dpo']} for dpo/kto)",
        above=0,
        max=1,
    )
    scheduler: str = option("cosine", "Learning-rate schedule: linear, cosine, constant_with_warmup, ...")
    warmup: float = option(0.03, "Warmup: a fraction of the steps (<1) or a step count", min=0)
    batch_size: int = option(2, "Sequences per device per step", min=1)
    grad_accum: int = option(8, "Gradient accumulation steps", min=1)
    max_length: int = option(
        2048, "Tokens per sequence; longer contexts lose their oldest part", min=64, max=1_048_576
    )
    packing: bool = option(True, "Pack rows into max-length sequences (--no-packing: group by length)")
    eval_steps: int = option(50, "Evaluate every N steps", min=1)
    save_steps: int | None = option(None, "Checkpoint every N steps (default: the eval steps)", min=1)
    save_total_limit: int = option(2, "Checkpoints to keep (the best is kept too)", min=1)
    log_steps: int = option(10, "Log the train loss every N steps", min=1)
    early_stopping: int | None = option(
        None,
        f"Stop after N evaluations without improvement (default {DEFAULT_PATIENCE} with --eval-data; "
        "0: off); with --eval-data the adapter written is the best evaluated one",
        min=0,
    )
    early_stopping_threshold: float = option(0.0, "Smallest eval-loss drop that counts as improvement", min=0)
    seed: int = option(42, "Random seed", min=0, max=2**32 - 1)
    resume: bool = option(False, "Continue from the last checkpoint in the output folder")
    overwrite: bool = option(
        False, "Start over in an output folder that holds a run (--force: the same)", "--overwrite", "--force"
    )
    precision: str = option(
        "auto",
        "auto (bf16 GPU, else fp16 GPU, else fp32), bf16 (a GPU or a CPU with native bf16), fp16, fp32",
    )
    gradient_checkpointing: bool = option(True, "Recompute activations to save memory")
    optim: str = option("adamw_torch", "Optimizer (adamw_torch, paged_adamw_8bit, ...)")
    beta: float = option(0.1, "DPO/KTO beta: how close to stay to the SFT adapter", above=0)
    sft_weight: float = option(
        0.0,
        "DPO: also train on the chosen reply, this weight of an SFT loss beside the preference loss (RPO): "
        "a few pairs then move the model without losing the trained format (0: off)",
        min=0,
    )
    report_to: str = option("none", f"Also log to an experiment tracker: {', '.join(REPORTERS)}")
    sample_contexts: int = option(
        2, "SFT: continue this many held-out contexts at evaluations, into samples.jsonl (0: off)", min=0
    )
    sample_every: int = option(1, "Generate the samples every N evaluations", min=1)
    sample_tokens: int = option(256, "Most new tokens per sample (greedy)", min=1, max=4096)

    def __post_init__(self) -> None:
        self.out_dir, self.data = Path(self.out_dir), Path(self.data)
        self.method = self.method.lower()
        self.target_modules = tuple(self.target_modules)
        problems = []
        if self.method not in METHODS:
            problems.append(f"--method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.precision not in PRECISIONS:
            problems.append(f"--precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.report_to not in REPORTERS:
            problems.append(f"--report-to must be one of {', '.join(REPORTERS)}, not {self.report_to!r}")
        if self.target not in targets.NAMES:
            problems.append(f"--target must be one of {', '.join(targets.NAMES)}, not {self.target!r}")
        elif self.method != "sft" and self.target != targets.DEFAULT:
            problems.append(
                f"--target {self.target} is for --method sft ({self.method} trains on replies as given)"
            )
        if self.sft_weight and self.method != "dpo":
            problems.append(
                f"--sft-weight is for --method dpo (its SFT term on the chosen reply), not {self.method}"
            )
        if self.method in ("dpo", "kto") and self.adapter is None:
            problems.append(f"--method {self.method} starts from an SFT adapter: pass --adapter SFT_OUT_DIR")
        if self.early_stopping and self.eval_data is None:
            problems.append("--early-stopping needs held-out rows to watch: pass --eval-data val.jsonl")
        for f in fields(self):  # a --config file's values obey the flags' ranges too
            if (bad := out_of_range(getattr(self, f.name), **f.metadata["range"])) is not None:
                problems.append(f"--{f.name.replace('_', '-')} {getattr(self, f.name)!r} is not {bad}")
        if self.early_stopping and not self.keeps_best:
            problems.append("with --early-stopping, --save-steps must be a multiple of --eval-steps")
        if problems:
            raise TrainError("; ".join(problems))

    @property
    def keeps_best(self) -> bool:
        """Whether the adapter written is the best evaluated one: it is restored from the checkpoint of
        its step, so a checkpoint must be saved at each evaluation (the default --save-steps)."""
        return self.eval_data is not None and (self.save_steps or self.eval_steps) % self.eval_steps == 0

    @property
    def patience(self) -> int:
        """Evaluations without improvement before stopping; 0 is off."""
        if self.early_stopping is not None:
            return self.early_stopping
        return DEFAULT_PATIENCE if self.eval_data is not None else 0

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

    def as_dict(self) -> dict:
        d = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


def read_config(path: Path) -> dict:
    """Options from a TOML file (keys are the option names, `-` or `_`), or from a run's training.json
    (its effective `options`, so a run can be repeated from it)."""
    import json
    import tomllib

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text).get("options", {}) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as e:  # TOMLDecodeError and JSONDecodeError too
        raise TrainError(f"cannot read the config file {path}: {e}") from e
    data = {k.replace("-", "_"): v for k, v in data.items()}
    known = {f.name for f in fields(TrainOptions)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise TrainError(
            f"{path}: unknown option(s) {', '.join(unknown)}; the options are those of "
            "`story-pipeline train --help`, with _ or - between words"
        )
    return data


def build_options(config: dict, overrides: dict) -> TrainOptions:
    """TrainOptions from a config's values with the command line's explicit values on top."""
    values = config | overrides
    if isinstance(values.get("target_modules"), str):  # a TOML file may give them as the flag does
        values["target_modules"] = tuple(m.strip() for m in values["target_modules"].split(",") if m.strip())
    missing = [f.name for f in fields(TrainOptions) if f.default is MISSING and values.get(f.name) is None]
    if missing:
        flags = ", ".join("--" + ("output" if n == "out_dir" else n.replace("_", "-")) for n in missing)
        raise TrainError(f"missing {flags}: give it on the command line or in the --config file")
    for f in fields(TrainOptions):
        if "Path" in str(f.type) and isinstance(values.get(f.name), str):
            values[f.name] = Path(values[f.name])
    return TrainOptions(**values)


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
        load_best_model_at_end=has_eval and opts.keeps_best,  # the adapter written: the best evaluated
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        seed=opts.seed,
        data_seed=opts.seed,
        report_to=opts.report_to,
        run_name=opts.out_dir.name,  # the run's name in the tracker
    )
    return args
