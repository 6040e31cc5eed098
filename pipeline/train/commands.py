"""`story-pipeline train`: QLoRA SFT on writer rows, or DPO / KTO on feedback, to a PEFT adapter.

The flags are generated from `TrainOptions`, where each option's default and help live once; a
`--config` file (TOML, or a finished run's training.json) sets the same options, and flags given on the
command line win over it.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pipeline.flags import fail, flag_parameters, signed
from pipeline.train.options import TrainError, TrainOptions, build_options, read_config
from plumbing.extras import needs

console = Console(stderr=True, soft_wrap=True)

_CONFIG_HELP = "A TOML file of options (names as below, _ or -), or a run's training.json to repeat it"


def _parameters() -> list[inspect.Parameter]:
    config = typer.Option(help=_CONFIG_HELP)
    return [
        inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context),
        inspect.Parameter(
            "config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[Path | None, config]
        ),
        *flag_parameters(TrainOptions, {}, elsewhere="here or in --config"),
    ]


def train(ctx: typer.Context, config: Path | None = None, **values) -> None:
    """Fine-tune a base model with (Q)LoRA and write a PEFT adapter folder, with log.jsonl, loss.png and
    training.json beside it. Runs as is under `torchrun` or `accelerate launch` on several GPUs."""
    from pipeline.train.run import train as run_train

    # By name: typer carries its own copy of click, whose ParameterSource is not click's.
    given = {k: v for k, v in values.items() if _source(ctx, k) == "COMMANDLINE"}
    defaults = {k: v for k, v in values.items() if v is not None}
    try:
        opts = build_options(defaults | (read_config(config) if config else {}), given)
        run_train(opts, printer=lambda m: console.print(m, markup=False, highlight=False))
    except TrainError as e:
        fail(str(e))


def _source(ctx: typer.Context, name: str) -> str | None:
    source = ctx.get_parameter_source(name)
    return source.name if source is not None else None


signed(train, _parameters())


def register(root: typer.Typer) -> None:
    root.command("train")(needs("train", "train")(train))
