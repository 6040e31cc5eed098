"""`story-pipeline train`: QLoRA SFT on writer rows, or DPO / KTO on feedback, to a PEFT adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pipeline import chat_formats
from pipeline.extras import needs
from pipeline.train.options import ATTENTION_MODULES, DEFAULT_LR, TrainError, TrainOptions

console = Console(stderr=True)


def train(
    base: Annotated[str, typer.Option(help="Base model: a Hugging Face folder or hub id")],
    out_dir: Annotated[Path, typer.Option("-o", "--output", help="Output folder (the PEFT adapter)")],
    data: Annotated[Path, typer.Option(help="Training rows (JSONL): SFT messages, or DPO/KTO preferences")],
    eval_data: Annotated[Path | None, typer.Option(help="Held-out rows in the same format")] = None,
    method: Annotated[str, typer.Option(help="sft, dpo or kto")] = "sft",
    adapter: Annotated[
        Path | None, typer.Option(help="An SFT adapter folder to start from (required for dpo and kto)")
    ] = None,
    chat_format: Annotated[
        str | None,
        typer.Option(
            help=f"Chat format to train with, replacing the base's template ({chat_formats.supported()})"
        ),
    ] = None,
    qlora: Annotated[bool, typer.Option(help="Load the base in 4-bit NF4 (bitsandbytes)")] = True,
    rank: Annotated[int, typer.Option(help="LoRA rank")] = 16,
    alpha: Annotated[int, typer.Option(help="LoRA alpha (scale = alpha / rank)")] = 32,
    dropout: Annotated[float, typer.Option(help="LoRA dropout")] = 0.05,
    target_modules: Annotated[
        str, typer.Option(help="Comma-separated module names, or all-linear")
    ] = ",".join(ATTENTION_MODULES),
    epochs: Annotated[float, typer.Option(help="Passes over the training rows")] = 2.0,
    max_steps: Annotated[
        int, typer.Option(help="Stop after this many optimizer steps (-1: epochs decide)")
    ] = -1,
    lr: Annotated[
        float | None,
        typer.Option(
            help=f"Learning rate (default {DEFAULT_LR['sft']} for sft, {DEFAULT_LR['dpo']} for dpo/kto)"
        ),
    ] = None,
    scheduler: Annotated[str, typer.Option(help="linear, cosine, constant_with_warmup, ...")] = "cosine",
    warmup: Annotated[
        float, typer.Option(help="Warmup: a fraction of the steps (<1) or a step count")
    ] = 0.03,
    batch_size: Annotated[int, typer.Option(help="Sequences per device per step")] = 2,
    grad_accum: Annotated[int, typer.Option(help="Gradient accumulation steps")] = 8,
    max_length: Annotated[
        int, typer.Option(help="Tokens per sequence; longer contexts lose their oldest part")
    ] = 2048,
    packing: Annotated[
        bool, typer.Option(help="Pack rows into max-length sequences (else group by length)")
    ] = True,
    eval_steps: Annotated[int, typer.Option(help="Evaluate every N steps")] = 50,
    save_steps: Annotated[
        int | None, typer.Option(help="Checkpoint every N steps (default: eval steps)")
    ] = None,
    save_total_limit: Annotated[int, typer.Option(help="Checkpoints to keep (the best is kept too)")] = 2,
    log_steps: Annotated[int, typer.Option(help="Log the train loss every N steps")] = 10,
    early_stopping: Annotated[int, typer.Option(help="Stop after N evals without improvement (0: off)")] = 0,
    early_stopping_threshold: Annotated[
        float, typer.Option(help="Smallest eval-loss drop that counts")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Random seed")] = 42,
    resume: Annotated[
        bool, typer.Option(help="Continue from the last checkpoint in the output folder")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Start over in an output folder that holds a run")] = False,
    precision: Annotated[
        str, typer.Option(help="auto (bf16 GPU, else fp16 GPU, else fp32), bf16, fp16, fp32")
    ] = "auto",
    gradient_checkpointing: Annotated[bool, typer.Option(help="Recompute activations to save memory")] = True,
    optim: Annotated[
        str, typer.Option(help="Optimizer (adamw_torch, paged_adamw_8bit, ...)")
    ] = "adamw_torch",
    beta: Annotated[float, typer.Option(help="DPO/KTO beta: how close to stay to the SFT adapter")] = 0.1,
) -> None:
    """Fine-tune a base model with (Q)LoRA and write a PEFT adapter folder, with log.jsonl, loss.png and
    training.json beside it. Runs as is under `torchrun` or `accelerate launch` on several GPUs."""
    from pipeline.train.run import train as run_train

    try:
        opts = TrainOptions(
            base=base,
            out_dir=out_dir,
            data=data,
            eval_data=eval_data,
            method=method,
            adapter=adapter,
            chat_format=chat_format,
            qlora=qlora,
            rank=rank,
            alpha=alpha,
            dropout=dropout,
            target_modules=tuple(m.strip() for m in target_modules.split(",") if m.strip()),
            epochs=epochs,
            max_steps=max_steps,
            lr=lr,
            scheduler=scheduler,
            warmup=warmup,
            batch_size=batch_size,
            grad_accum=grad_accum,
            max_length=max_length,
            packing=packing,
            eval_steps=eval_steps,
            save_steps=save_steps,
            save_total_limit=save_total_limit,
            log_steps=log_steps,
            early_stopping=early_stopping,
            early_stopping_threshold=early_stopping_threshold,
            seed=seed,
            resume=resume,
            overwrite=overwrite,
            precision=precision,
            gradient_checkpointing=gradient_checkpointing,
            optim=optim,
            beta=beta,
        )
        run_train(opts, printer=lambda m: console.print(m, markup=False, highlight=False))
    except TrainError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None


def register(root: typer.Typer) -> None:
    root.command("train")(needs("train", "train")(train))
