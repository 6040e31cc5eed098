"""`eval metrics` as a run: its options (declared once; the command's flags are generated from them),
then read the texts, score each with a progress bar, summarize, write and show the results."""

from __future__ import annotations

from dataclasses import MISSING, dataclass
from pathlib import Path

from pipeline.evaluate import display
from pipeline.evaluate.display import console
from pipeline.flags import fail, option

FILES = ("scores.jsonl", "summary.json")


@dataclass(frozen=True)
class MetricsOptions:
    """Where the results go, which field holds the texts and what they are, and how they are scored."""

    out: Path = option(MISSING, "Folder to write the results into", "-o", "--output")
    field: str = option("text", "The row field holding the text")
    outputs: bool = option(False, "The texts are raw model outputs: score the answer part", "--outputs")
    workers: int | None = option(None, "Scoring processes (default: the cores available)", min=1, max=256)
    window: int = option(100, "Words per window for the length-independent entropy", min=1)
    force: bool = option(False, "Replace the files this writes in the output folder", "--force")


def run(opts: MetricsOptions, file: Path) -> None:
    """Score every text of `file`; write scores.jsonl and summary.json, and show the summary."""
    from pipeline.evaluate import metrics, records
    from plumbing.atomic import check_outputs

    check_outputs(opts.out, FILES, opts.force)
    texts, lengths = _texts(opts, file)
    scorer = metrics.Scorer(opts.window)
    with display.progress() as bars:
        task = bars.add_task("scoring", total=len(texts))
        advance = lambda n: bars.advance(task, n)  # noqa: E731
        if opts.outputs:
            scores = metrics.score_outputs(texts, lengths, opts.workers, scorer, advance)
        else:
            scores = metrics.score_texts(texts, opts.workers, scorer, advance)
    keys = ("words", *metrics.SCORE_KEYS, *(metrics.OUTPUT_KEYS if opts.outputs else ()))
    summary = metrics.summarize(scores, keys)
    scored_texts = [s["answer"] for s in scores] if opts.outputs else texts
    summary["distinct_1_all"] = metrics.corpus_distinct(scored_texts, 1)
    summary["distinct_2_all"] = metrics.corpus_distinct(scored_texts, 2)
    summary.update(source=str(file), field=opts.field, outputs=opts.outputs, entropy_window=opts.window)
    records.write_jsonl(opts.out / "scores.jsonl", ({"row": n, **s} for n, s in enumerate(scores, 1)))
    records.write_json(opts.out / "summary.json", summary)
    display.warn_notes(summary, str(file))
    display.print_summary(f"{file.name} ({len(texts)} texts)", {opts.field: summary}, opts.window)
    console.print(f"wrote {opts.out / 'scores.jsonl'} and {opts.out / 'summary.json'}")


def _texts(opts: MetricsOptions, file: Path) -> tuple[list[str], list]:
    """The texts and each row's asked length (checked when the texts are model outputs); or a clear error."""
    from contract import prompt
    from pipeline.evaluate import records

    try:
        rows = records.read_jsonl(file)
        texts = records.field_values(rows, opts.field, file)
        lengths = [r.get("length") for r in rows]
        if opts.outputs:
            for n, length in enumerate(lengths, 1):
                try:
                    prompt.length_words(length)
                except prompt.PromptError as e:
                    raise records.InputError(f"{file} row {n}: {e}") from e
    except records.InputError as e:
        fail(str(e))
    return texts, lengths
