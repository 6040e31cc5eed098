"""`story-pipeline eval metrics | compare | judge | perplexity`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.evaluate import compare_run, judge_run, metrics_run, perplexity_run
from pipeline.evaluate.compare_run import CompareOptions
from pipeline.evaluate.judge_run import JudgeOptions
from pipeline.evaluate.metrics_run import MetricsOptions
from pipeline.evaluate.perplexity_run import PerplexityOptions
from pipeline.flags import takes
from plumbing.extras import needs

app = typer.Typer(help="Readability, diversity and tone of texts and models; held-out perplexity.")


@app.command("metrics")
@needs("eval metrics", "eval")
@takes(MetricsOptions, "opts")
def metrics_command(
    file: Annotated[Path, typer.Argument(help="JSONL file, one text a row")], opts: MetricsOptions
) -> None:
    """Per text and in aggregate: Flesch, Fog, entropy, sentiment, distinct-n, repetition, length."""
    metrics_run.run(opts, file)


@app.command("compare")
@needs("eval compare", "eval")
@takes(CompareOptions, "opts")
def compare_command(opts: CompareOptions) -> None:
    """Each model continues the same contexts with fixed seeds; outputs scored into a table, JSON and PNG."""
    compare_run.run(opts)


@app.command("judge")
@needs("eval judge", "eval")
@takes(JudgeOptions, "opts")
def judge_command(
    opts: JudgeOptions,
    outputs: Annotated[
        list[Path] | None,
        typer.Argument(help="`eval compare` output folders (or their outputs.jsonl) holding both models"),
    ] = None,
) -> None:
    """A judge model compares two models' continuations of the same contexts, in both orders, on a rubric:
    win rate with its 95% interval, per criterion, and the judge's consistency; table, JSON and PNG."""
    judge_run.run(opts, outputs or [])


@app.command("perplexity")
@needs("eval perplexity", "train")
@takes(PerplexityOptions, "opts")
def perplexity_command(opts: PerplexityOptions) -> None:
    """Held-out loss and perplexity on the continuation (the answer), base against fine-tuned."""
    perplexity_run.run(opts)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="eval")
