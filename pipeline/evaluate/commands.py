"""`story-pipeline eval metrics | compare | judge | perplexity`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipeline.evaluate import compare_run, display, judge_run
from pipeline.evaluate.compare_run import CompareOptions
from pipeline.evaluate.display import console
from pipeline.evaluate.judge_run import JudgeOptions
from pipeline.flags import fail, force_option, takes
from pipeline.ranges import ranged
from plumbing.atomic import check_outputs
from plumbing.extras import needs

app = typer.Typer(help="Readability, diversity and tone of texts and models; held-out perplexity.")

OutDir = Annotated[Path, typer.Option("-o", "--output", help="Folder to write the results into")]
Workers = Annotated[
    int | None, typer.Option(**ranged("Scoring processes (default: the cores available)", min=1, max=256))
]
Window = Annotated[int, typer.Option(**ranged("Words per window for the length-independent entropy", min=1))]
Force = Annotated[bool, force_option("Replace the files this writes in the output folder")]
METRICS_FILES = ("scores.jsonl", "summary.json")


@app.command("metrics")
@needs("eval metrics", "eval")
def metrics_command(
    file: Annotated[Path, typer.Argument(help="JSONL file, one text a row")],
    out: OutDir,
    field: Annotated[str, typer.Option(help="The row field holding the text")] = "text",
    outputs: Annotated[
        bool, typer.Option("--outputs", help="The texts are raw model outputs: score the answer part")
    ] = False,
    workers: Workers = None,
    window: Window = 100,
    force: Force = False,
) -> None:
    """Per text and in aggregate: Flesch, Fog, entropy, sentiment, distinct-n, repetition, length."""
    from contract import prompt
    from pipeline.evaluate import metrics, records

    check_outputs(out, METRICS_FILES, force)
    try:
        rows = records.read_jsonl(file)
        texts = records.field_values(rows, field, file)
        lengths = [r.get("length") for r in rows]
        if outputs:
            for n, length in enumerate(lengths, 1):
                try:
                    prompt.length_words(length)
                except prompt.PromptError as e:
                    raise records.InputError(f"{file} row {n}: {e}") from e
    except records.InputError as e:
        fail(str(e))
    scorer = metrics.Scorer(window)
    with display.progress() as bars:
        task = bars.add_task("scoring", total=len(texts))
        advance = lambda n: bars.advance(task, n)  # noqa: E731
        if outputs:
            scores = metrics.score_outputs(texts, lengths, workers, scorer, advance)
        else:
            scores = metrics.score_texts(texts, workers, scorer, advance)
    keys = ("words", *metrics.SCORE_KEYS, *(metrics.OUTPUT_KEYS if outputs else ()))
    summary = metrics.summarize(scores, keys)
    scored_texts = [s["answer"] for s in scores] if outputs else texts
    summary["distinct_1_all"] = metrics.corpus_distinct(scored_texts, 1)
    summary["distinct_2_all"] = metrics.corpus_distinct(scored_texts, 2)
    summary.update(source=str(file), field=field, outputs=outputs, entropy_window=window)
    records.write_jsonl(out / "scores.jsonl", ({"row": n, **s} for n, s in enumerate(scores, 1)))
    records.write_json(out / "summary.json", summary)
    display.warn_notes(summary, str(file))
    display.print_summary(f"{file.name} ({len(texts)} texts)", {field: summary}, window)
    console.print(f"wrote {out / 'scores.jsonl'} and {out / 'summary.json'}")


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
def perplexity_command(
    base: Annotated[str, typer.Option(help="Base model: a local Hugging Face folder")],
    data: Annotated[Path, typer.Option(help="Held-out rows in the training format (messages)")],
    adapter: Annotated[
        Path | None, typer.Option(help="A PEFT adapter folder: compared with the base")
    ] = None,
    batch_size: Annotated[int, typer.Option(**ranged("Rows per forward pass", min=1, max=4096))] = 4,
    max_tokens: Annotated[
        int, typer.Option(**ranged("Skip rows longer than this many tokens", min=1))
    ] = 4096,
    out: Annotated[Path | None, typer.Option("-o", "--output", help="Folder for perplexity.json")] = None,
    force: Force = False,
) -> None:
    """Held-out loss and perplexity on the continuation (the answer), base against fine-tuned."""
    from pipeline.evaluate import perplexity, records

    if out is not None:
        check_outputs(out, ("perplexity.json",), force)
    try:
        rows = records.read_jsonl(data)
        with display.progress() as bars:
            task = bars.add_task("scoring rows", total=len(rows) * (2 if adapter else 1))
            result = perplexity.run(
                base, adapter, rows, batch_size, max_tokens, lambda n: bars.advance(task, n)
            )
    except (records.InputError, perplexity.PerplexityError) as e:
        fail(str(e))
    result.update(base_model=base, adapter_path=str(adapter) if adapter else None, data=str(data))
    table = Table(title=f"{data.name}: {result['rows']} rows")
    for col in ("model", "answer loss", "answer perplexity", "answer tokens", "assistant perplexity"):
        table.add_column(col, justify="right")
    for name in ("base", "adapter"):
        if name in result:
            a, t = result[name]["answer"], result[name]["assistant"]
            table.add_row(
                name, f"{a['loss']:.4f}", f"{a['perplexity']:.3f}", str(a["tokens"]), f"{t['perplexity']:.3f}"
            )
    Console().print(table)
    if result["skipped_too_long"]:
        console.print(
            f"[yellow]skipped {result['skipped_too_long']} rows longer than {max_tokens} tokens[/yellow]"
        )
    if out:
        records.write_json(out / "perplexity.json", result)
        console.print(f"wrote {out / 'perplexity.json'}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="eval")
