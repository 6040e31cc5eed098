"""`data gutenberg` as a run: its options (declared once; the command's flags are generated from them),
then find the books, cut them into windows with a progress bar, write them and say what was kept."""

from __future__ import annotations

from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from pipeline.flags import fail, option

if TYPE_CHECKING:
    from pipeline.data.gutenberg import TokenBudget, WindowSpec

console = Console(stderr=True, soft_wrap=True)  # paths and messages stay on one line


@dataclass(frozen=True)
class GutenbergOptions:
    """Where the windows go, how each is cut and sized, and how the books are split and read."""

    output: Path = option(MISSING, "JSON-lines file to write", "-o", "--output")
    context_sentences: int = option(80, "Most sentences of context per window", min=1)
    continuation_sentences: int = option(20, "Most sentences of continuation per window", min=1)
    chunk_chars: int | None = option(
        None, "Cut ~N-character chunks instead of sentence windows (e.g. 6500)", min=2
    )
    split_ratio: float = option(0.6, "With --chunk-chars: share of a chunk used as context", above=0, below=1)
    max_context_chars: int = option(
        12_000, "Cap: a context stops before the sentence that would pass it", min=1
    )
    max_continuation_chars: int = option(
        4_000, "Cap: a continuation stops before the sentence that would pass it", min=1
    )
    tokenizer: Path | None = option(
        None, "Size windows in tokens with this local tokenizer (or base model) folder"
    )
    max_length: int | None = option(
        None, "With --tokenizer: tokens per row, as `train --max-length` (2048)", min=64
    )
    reasoning_tokens: int = option(
        400, "With --tokenizer: tokens left in each row for the teacher's reasoning", min=0
    )
    chat_template: Path | None = option(
        None, "With --tokenizer: the chat template train will use, as `train --chat-template`"
    )
    val_ratio: float = option(0.1, "Share of books held out for validation", min=0, below=1)
    encoding: str | None = option(None, "Force a text encoding (default: detect)")
    force: bool = option(False, "Replace the output file(s) if they exist", "--force")


def run(opts: GutenbergOptions, paths: list[str]) -> None:
    """Cut the books matched by `paths` into windows and write them; exit 2 when none came out."""
    from pipeline.data import gutenberg
    from plumbing import jsonl
    from plumbing.atomic import check_output

    check_output(opts.output, opts.force)
    spec, files, budget = _inputs(opts, paths)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
    ) as bars:
        task = bars.add_task("books", total=len(files))

        def on_book(path: Path) -> None:
            bars.update(task, description=path.name)
            bars.advance(task)

        records, stats = gutenberg.build_chunks(files, spec, opts.val_ratio, opts.encoding, on_book, budget)
    for line in stats.skipped:
        console.print(f"[yellow]{line}[/yellow]")
    for cov in stats.coverage:
        console.print(f"  {cov.summary()}", highlight=False)
    if not records:
        fail(f"no windows from {len(files)} file(s): nothing written")
    jsonl.write(opts.output, records)
    console.print(
        f"wrote {len(records)} windows {_windows_summary(stats, spec, budget)} to {opts.output}: "
        + _split_summary(stats)
    )


def _inputs(opts: GutenbergOptions, paths: list[str]) -> tuple[WindowSpec, list[Path], TokenBudget | None]:
    """The window spec, the book files and the token budget (None without --tokenizer); or a clear error."""
    from pipeline.data import gutenberg

    if opts.tokenizer is None and (opts.max_length is not None or opts.chat_template is not None):
        fail("--max-length and --chat-template need --tokenizer (the base model's folder)")
    try:
        spec = gutenberg.WindowSpec(
            opts.context_sentences,
            opts.continuation_sentences,
            opts.chunk_chars,
            opts.split_ratio,
            opts.max_context_chars,
            opts.max_continuation_chars,
        )
        files = gutenberg.expand_paths(paths)
        budget: TokenBudget | None = None
        if opts.tokenizer is not None:
            with console.status(f"loading the tokenizer of {opts.tokenizer}"):
                budget = gutenberg.load_budget(
                    opts.tokenizer, opts.max_length or 2048, opts.reasoning_tokens, opts.chat_template
                )
    except (ValueError, gutenberg.BookError) as e:
        fail(str(e))
    return spec, files, budget


def _windows_summary(stats, spec, budget) -> str:
    """How the windows were cut and sized, and from how many books."""
    sizing = (
        budget.describe()
        if budget
        else "sized in characters only; pass --tokenizer (the base model's folder) to fit --max-length tokens"
    )
    return f"({spec.describe()}; {sizing}) from {stats.books} book(s)"


def _split_summary(stats) -> str:
    """Windows per split, sentences used, duplicates dropped."""
    from pipeline.data import gutenberg

    used = sum(c.used_sentences for c in stats.coverage)
    total = sum(c.sentences for c in stats.coverage)
    return (
        f"{stats.windows[gutenberg.TRAIN]} train, {stats.windows[gutenberg.VALIDATION]} validation; "
        f"{used:,} of {total:,} story sentences used"
        + (f"; {stats.duplicate_windows} duplicate windows dropped" if stats.duplicate_windows else "")
    )
