"""Supervised fine-tuning on writer rows with TRL's SFTTrainer.

Rows arrive already tokenized by `rows.load_sft` in the --target's shape (prompt tokens labelled -100;
every token of a `text` row trained on), so TRL only packs them
(best-fit, sequence boundaries kept) or batches them grouped by length, and trains.
"""

from __future__ import annotations

from contract.target import Target
from pipeline.train import rows
from pipeline.train.options import TrainOptions


def load_data(opts: TrainOptions, tokenizer) -> tuple[list[dict], list[dict] | None, dict]:
    target = Target(opts.target)  # the rows' shape: reasoning+answer, answer or plain text
    train, train_stats = rows.load_sft(opts.data, tokenizer, opts.max_length, target)
    stats = {"train": train_stats}
    evaluation = None
    if opts.eval_data:
        evaluation, stats["eval"] = rows.load_sft(
            opts.eval_data, tokenizer, opts.max_length, target, split="validation"
        )
    return train, evaluation, stats


def build_trainer(opts: TrainOptions, model, tokenizer, train, evaluation, trainer_args: dict, callbacks):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    config = SFTConfig(
        **trainer_args,
        max_length=opts.max_length,
        packing=opts.packing,
        packing_strategy="bfd",
        # Without packing, batches of similar lengths waste less compute on padding.
        train_sampling_strategy="random" if opts.packing else "group_by_length",
        completion_only_loss=None,  # labels come with the rows
    )
    return SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(train),
        eval_dataset=Dataset.from_list(evaluation) if evaluation else None,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
