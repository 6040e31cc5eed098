"""Preference training from the bot's feedback: TRL's DPO (chosen vs rejected) and KTO (thumbs up or
down) trainers, continuing an SFT adapter.

Rows arrive from `rows.load_preference` in TRL's conversational form, their contexts cut to fit, so TRL
renders them through the same chat template as SFT. The reference model is the SFT adapter itself:
TRL keeps a frozen copy of the starting adapter (named "ref") beside the one it trains.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from pipeline.train import rows
from pipeline.train.options import TrainError, TrainOptions

if TYPE_CHECKING:
    from transformers import Trainer as BaseTrainer
    from transformers import TrainingArguments


def load_data(opts: TrainOptions, tokenizer) -> tuple[list[dict], list[dict] | None, dict]:
    train, train_stats = rows.load_preference(opts.data, tokenizer, opts.method, opts.max_length)
    stats = {"train": train_stats}
    evaluation = None
    if opts.eval_data:
        evaluation, stats["eval"] = rows.load_preference(
            opts.eval_data, tokenizer, opts.method, opts.max_length
        )
    if opts.method == "kto":
        # KTO reads its rows in order (its KL estimate pairs neighbours), so shuffle them here, seeded.
        random.Random(opts.seed).shuffle(train)
    return train, evaluation, stats


def kto_weights(train: list[dict]) -> dict:
    """Weights that balance thumbs up against thumbs down, as the KTO paper advises."""
    up = sum(r["label"] for r in train)
    down = len(train) - up
    return {
        "desirable_weight": round(down / up, 4) if up < down else 1.0,
        "undesirable_weight": round(up / down, 4) if down < up else 1.0,
    }


def sees_every_row(opts: TrainOptions, rows: int) -> bool:
    """Whether the run feeds each row at least once (per process): then the reference model's log-probs cost
    less computed once per row, before training, than at every step (the demo's 15 pairs, 8 steps of 4:
    238 s of training against 149 s, the same losses)."""
    per_step = opts.batch_size * opts.grad_accum
    seen = opts.max_steps * per_step if opts.max_steps > 0 else opts.epochs * rows
    return seen >= rows


def build_trainer(opts: TrainOptions, model, tokenizer, train, evaluation, trainer_args: dict, callbacks):
    from datasets import Dataset

    common = dict(trainer_args, max_length=opts.max_length, beta=opts.beta)
    Config: type[TrainingArguments]  # DPO's or KTO's, both TRL subclasses of these
    Trainer: type[BaseTrainer]
    if opts.method == "dpo":
        from trl import DPOConfig as Config
        from trl import DPOTrainer as Trainer

        if opts.sft_weight:  # TRL sums the listed losses with these weights
            common |= {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, opts.sft_weight]}
        common["precompute_ref_log_probs"] = sees_every_row(opts, len(train))
    else:
        from trl import KTOConfig as Config
        from trl import KTOTrainer as Trainer

        if opts.batch_size < 2:
            raise TrainError("KTO needs --batch-size 2 or more: it estimates its KL term across the batch")
        common |= kto_weights(train)
    return Trainer(
        model=model,
        args=Config(**common),
        train_dataset=Dataset.from_list(train),
        eval_dataset=Dataset.from_list(evaluation) if evaluation else None,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
