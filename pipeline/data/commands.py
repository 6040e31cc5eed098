"""`story-pipeline data gutenberg | sentences | writing-prompts`, `reason` and `distill`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pipeline.data import gutenberg_run
from pipeline.data.gutenberg_run import GutenbergOptions
from pipeline.data.teaching import TeacherOptions
from pipeline.flags import fail, force_option, output_option, takes
from pipeline.ranges import ranged
from plumbing import jsonl
from plumbing.atomic import check_output
from plumbing.extras import needs

console = Console(stderr=True, soft_wrap=True)  # paths and messages stay on one line
app = typer.Typer(
    help="Build training data: book chunks, Writing Prompts pairs, a look at the sentence splitter."
)

Output = Annotated[Path, output_option("JSON-lines file to write")]
Force = Annotated[bool, force_option("Replace the output file(s) if they exist")]


GUTENBERG_HELP = (
    "Cut plain-text books into (context, continuation) windows: one JSON line per window, split by book."
    "\n\nWindows are cut back to back: a window's context takes up to --context-sentences and its "
    "continuation up to --continuation-sentences, each part stopping early before the sentence that would "
    "pass its cap (--max-context-chars, --max-continuation-chars; with --tokenizer also tokens); the next "
    "window starts where this one stopped, so a cap makes windows shorter but loses no sentence. The last "
    "window is anchored at the book's end. Only a sentence longer than a cap on its own is dropped."
    "\n\nWith --tokenizer (the base model's folder) each window's training row (chat template, writer "
    "prompt, --reasoning-tokens for the teacher's reasoning, the continuation) fits --max-length, counted "
    "as train counts it; without it, windows are sized in characters only."
    "\n\nThe run prints, per book, how many sentences and characters its windows hold and what was "
    "dropped and why."
)


@app.command("gutenberg", help=GUTENBERG_HELP)
@needs("data gutenberg", "data")
@takes(GutenbergOptions, "opts")
def gutenberg(
    paths: Annotated[list[str], typer.Argument(help="Book files, folders of .txt files, or glob patterns")],
    opts: GutenbergOptions,
) -> None:
    gutenberg_run.run(opts, paths)


@app.command("sentences")
def sentences(
    file: Annotated[Path, typer.Argument(help="A plain-text book", exists=True, dir_okay=False)],
    encoding: Annotated[str | None, typer.Option(help="Force a text encoding (default: detect)")] = None,
) -> None:
    """Print the book's sentences one per line, after the same cleaning as `data gutenberg`."""
    from pipeline.data import gutenberg

    try:
        lines = gutenberg.book_sentences(file, encoding)
    except gutenberg.BookError as e:
        fail(str(e))
    out = Console(soft_wrap=True, highlight=False, markup=False)
    for s in lines:
        out.print(" ".join(s.split()))


@app.command("writing-prompts")
@needs("data writing-prompts", "data")
def writing_prompts(
    source: Annotated[
        str, typer.Option(help="Folder of {train,valid,test}.wp_source/.wp_target, or a Hugging Face dataset")
    ],
    output: Output,
    min_words: Annotated[int, typer.Option(**ranged("Drop stories shorter than this", min=0))] = 100,
    max_words: Annotated[int, typer.Option(**ranged("Drop stories longer than this", min=1))] = 1500,
    val_ratio: Annotated[
        float, typer.Option(**ranged("Share of prompts held out for validation", min=0, below=1))
    ] = 0.05,
    limit: Annotated[int | None, typer.Option(**ranged("Stop after this many pairs", min=1))] = None,
    force: Force = False,
) -> None:
    """Clean Writing Prompts pairs: undo the tokenization, strip [ WP ] tags, filter, split by prompt."""
    from pipeline.data import gutenberg
    from pipeline.data import writing_prompts as wp

    check_output(output, force)
    if min_words > max_words:
        fail(f"--min-words {min_words} is above --max-words {max_words}: no story could pass")

    stats = wp.PairStats()

    def some_pairs():  # none at all fails inside the atomic write: an earlier output stays as it was
        empty = True
        for pair in wp.pairs(source, stats, min_words, max_words, val_ratio, limit):
            empty = False
            yield pair
        if empty:
            raise wp.WritingPromptsError(
                f"no pair of {stats.read} read passed the filters ({min_words}-{max_words} words)"
            )

    try:
        with console.status("reading Writing Prompts"):
            n = jsonl.write(output, some_pairs())
    except wp.WritingPromptsError as e:
        fail(str(e))
    console.print(
        f"wrote {n} pairs ({len(stats.prompts)} prompts) to {output}: {stats.kept[gutenberg.TRAIN]} train, "
        f"{stats.kept[gutenberg.VALIDATION]} validation; dropped {stats.too_short} too short, "
        f"{stats.too_long} too long, {stats.duplicates} duplicates, {stats.empty_prompt} without a prompt"
    )


# --- teacher verbs: their shared options and run are in pipeline/data/teaching.py ------------------
@takes(TeacherOptions, "opts", temperature=0.7, max_tokens=1024)
def reason(
    chunks: Annotated[Path, typer.Argument(help="chunks.jsonl from `data gutenberg`")],
    output: Output,
    opts: TeacherOptions,
    force: Force = False,
) -> None:
    """A teacher writes the reasoning behind each chunk's real continuation; rows go to train/val files.

    An existing output is refused without --force, unless its .journal is beside it: then the run goes
    on from there (finished rows are not asked again)."""
    from pipeline.data import teacher, teaching

    teaching.check_outputs(output, opts.val_output, force)
    jobs = teaching.load(chunks, lambda recs: teacher.reason_jobs(recs, str(chunks)), opts.limit)
    teaching.run(jobs, output, opts)


@takes(TeacherOptions, "opts", temperature=0.8, max_tokens=2048)
def distill(
    prompts: Annotated[
        Path, typer.Argument(help="pairs.jsonl from `data writing-prompts` (a prompt per line)")
    ],
    output: Output,
    opts: TeacherOptions,
    length: Annotated[
        str | None, typer.Option(help="Ask for short/medium/long stories (or N words); adds a Length line")
    ] = None,
    min_words: Annotated[int, typer.Option(**ranged("Refuse teacher stories shorter than this", min=0))] = 50,
    force: Force = False,
) -> None:
    """Sequence-level distillation: a teacher reasons and writes a story per prompt, the targets.

    An existing output is refused without --force, unless its .journal is beside it (a resume)."""
    from contract import prompt as P
    from pipeline.data import teacher, teaching

    teaching.check_outputs(output, opts.val_output, force)
    size: str | int | None = int(length) if length and length.isdigit() else length
    try:
        P.render_prompt("x", length=size)  # a bad --length fails here, before any request
    except P.PromptError as e:
        fail(str(e))
    make_jobs = lambda recs: teacher.distill_jobs(recs, size, min_words, str(prompts))  # noqa: E731
    jobs = teaching.load(prompts, make_jobs, opts.limit)
    teaching.run(jobs, output, opts)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="data")
    root.command("reason")(reason)
    root.command("distill")(distill)
