"""`story-pipeline data gutenberg | sentences | writing-prompts`, `reason` and `distill`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from contract import jsonl
from contract.atomic import check_output
from contract.extras import needs, require
from pipeline.ranges import ranged

console = Console(stderr=True, soft_wrap=True)  # paths and messages stay on one line
app = typer.Typer(
    help="Build training data: book chunks, Writing Prompts pairs, a look at the sentence splitter."
)

Output = Annotated[Path, typer.Option("-o", "--output", help="JSON-lines file to write")]
Force = Annotated[bool, typer.Option("--force", help="Replace the output file(s) if they exist")]


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


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
def gutenberg(
    paths: Annotated[list[str], typer.Argument(help="Book files, folders of .txt files, or glob patterns")],
    output: Output,
    context_sentences: Annotated[
        int, typer.Option(**ranged("Most sentences of context per window", min=1))
    ] = 80,
    continuation_sentences: Annotated[
        int, typer.Option(**ranged("Most sentences of continuation per window", min=1))
    ] = 20,
    chunk_chars: Annotated[
        int | None,
        typer.Option(**ranged("Cut ~N-character chunks instead of sentence windows (e.g. 6500)", min=2)),
    ] = None,
    split_ratio: Annotated[
        float,
        typer.Option(**ranged("With --chunk-chars: share of a chunk used as context", above=0, below=1)),
    ] = 0.6,
    max_context_chars: Annotated[
        int, typer.Option(**ranged("Cap: a context stops before the sentence that would pass it", min=1))
    ] = 12_000,
    max_continuation_chars: Annotated[
        int, typer.Option(**ranged("Cap: a continuation stops before the sentence that would pass it", min=1))
    ] = 4_000,
    tokenizer: Annotated[
        Path | None,
        typer.Option(help="Size windows in tokens with this local tokenizer (or base model) folder"),
    ] = None,
    max_length: Annotated[
        int | None,
        typer.Option(**ranged("With --tokenizer: tokens per row, as `train --max-length` (2048)", min=64)),
    ] = None,
    reasoning_tokens: Annotated[
        int,
        typer.Option(
            **ranged("With --tokenizer: tokens left in each row for the teacher's reasoning", min=0)
        ),
    ] = 400,
    chat_template: Annotated[
        Path | None,
        typer.Option(help="With --tokenizer: the chat template train will use, as `train --chat-template`"),
    ] = None,
    val_ratio: Annotated[
        float, typer.Option(**ranged("Share of books held out for validation", min=0, below=1))
    ] = 0.1,
    encoding: Annotated[str | None, typer.Option(help="Force a text encoding (default: detect)")] = None,
    force: Force = False,
) -> None:
    from pipeline.data import gutenberg

    check_output(output, force)
    if tokenizer is None and (max_length is not None or chat_template is not None):
        raise _fail("--max-length and --chat-template need --tokenizer (the base model's folder)")
    try:
        spec = gutenberg.WindowSpec(context_sentences, continuation_sentences, chunk_chars, split_ratio,
                            max_context_chars, max_continuation_chars)  # fmt: skip
        files = gutenberg.expand_paths(paths)
        budget = None
        if tokenizer is not None:
            with console.status(f"loading the tokenizer of {tokenizer}"):
                budget = gutenberg.load_budget(tokenizer, max_length or 2048, reasoning_tokens, chat_template)
    except (ValueError, gutenberg.BookError) as e:
        raise _fail(str(e)) from e
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
    ) as bars:
        task = bars.add_task("books", total=len(files))

        def on_book(path: Path) -> None:
            bars.update(task, description=path.name)
            bars.advance(task)

        records, stats = gutenberg.build_chunks(files, spec, val_ratio, encoding, on_book, budget)
    for line in stats.skipped:
        console.print(f"[yellow]{line}[/yellow]")
    for cov in stats.coverage:
        console.print(f"  {cov.summary()}", highlight=False)
    if not records:
        raise _fail(f"no windows from {len(files)} file(s): nothing written")
    jsonl.write(output, records)
    sizing = (
        budget.describe()
        if budget
        else "sized in characters only; pass --tokenizer (the base model's folder) to fit --max-length tokens"
    )
    used = sum(c.used_sentences for c in stats.coverage)
    total = sum(c.sentences for c in stats.coverage)
    console.print(
        f"wrote {len(records)} windows ({spec.describe()}; {sizing}) from {stats.books} book(s) to {output}: "
        f"{stats.windows[gutenberg.TRAIN]} train, {stats.windows[gutenberg.VALIDATION]} validation; "
        f"{used:,} of {total:,} story sentences used"
        + (f"; {stats.duplicate_windows} duplicate windows dropped" if stats.duplicate_windows else "")
    )


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
        raise _fail(str(e)) from e
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
        raise _fail(f"--min-words {min_words} is above --max-words {max_words}: no story could pass")

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
        raise _fail(str(e)) from e
    console.print(
        f"wrote {n} pairs ({len(stats.prompts)} prompts) to {output}: {stats.kept[gutenberg.TRAIN]} train, "
        f"{stats.kept[gutenberg.VALIDATION]} validation; dropped {stats.too_short} too short, "
        f"{stats.too_long} too long, {stats.duplicates} duplicates, {stats.empty_prompt} without a prompt"
    )


# --- teacher verbs -------------------------------------------------------------------------------
Teacher = Annotated[
    str,
    typer.Option(
        "--teacher", help="The teacher model's name on the backend (llama.cpp: a GGUF file, or smollm2)"
    ),
]
Backend = Annotated[
    str, typer.Option(help="ollama, openai (any OpenAI-compatible endpoint) or llama.cpp (a GGUF in-process)")
]
BaseUrl = Annotated[
    str | None, typer.Option(help="Server URL (default: OLLAMA_HOST / localhost:11434, or api.openai.com)")
]
ApiKeyEnv = Annotated[str, typer.Option(help="Environment variable holding the API key (openai backend)")]
ValOutput = Annotated[
    Path | None, typer.Option(help="Validation rows (default: train.jsonl -> val.jsonl beside the output)")
]
Concurrency = Annotated[int, typer.Option(**ranged("Requests in flight at once", min=1, max=64))]
Retries = Annotated[
    int, typer.Option(**ranged("Retries per item on 429/5xx/timeouts/unusable replies", min=0, max=100))
]
Timeout = Annotated[float, typer.Option(**ranged("Seconds to wait for one teacher reply", above=0))]
Limit = Annotated[
    int | None,
    typer.Option(**ranged("A trial run on N items: the first of each split, in proportion", min=1)),
]
Temperature = "Teacher sampling temperature"
MaxTokens = "Most tokens the teacher may write per item"
Backoff = "Seconds before the first retry, doubling"


def _check_outputs(output: Path, val_output: Path | None, force: bool) -> None:
    """An existing output is replaced with --force, or when its journal is there: that run is resumed."""
    from pipeline.data import teacher

    resuming = teacher.journal_path_for(output).is_file()
    check_output(output, force or resuming)
    check_output(val_output or teacher.val_path_for(output), force or resuming)


def _run_teacher(jobs, output, val_output, model, backend, base_url, api_key_env, concurrency, retries,
                 timeout, temperature, max_tokens, backoff) -> None:  # fmt: skip
    import asyncio

    from pipeline.data import backends

    if backend == "openai":
        require("reason/distill --backend openai", "data")
    from pipeline.data import teacher

    settings = backends.ChatSettings(model, backend, base_url, api_key_env, timeout, temperature, max_tokens)
    opts = teacher.RunOptions(concurrency=concurrency, retries=retries, backoff=backoff)
    journal = teacher.journal_path_for(output)

    async def go(bars: Progress, task) -> teacher.RunResult:
        client = backends.make_backend(settings)
        try:

            def tick(r: teacher.RunResult) -> None:
                tokens = f"{r.prompt_tokens:,} in / {r.completion_tokens:,} out tokens"
                bars.update(task, completed=r.finished + len(r.failed), description=f"{model}: {tokens}")

            return await teacher.run_jobs(jobs, client, output, val_output, opts, tick)
        finally:
            await client.aclose()

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console) as bars:
            task = bars.add_task(model, total=len(jobs))
            result = asyncio.run(go(bars, task))
    except backends.Fatal as e:
        raise _fail(str(e)) from e
    except KeyboardInterrupt as exc:
        raise _fail(
            f"interrupted: finished rows are kept in {journal}; run the same command to resume", 130
        ) from exc
    console.print(
        f"{result.finished}/{result.total} done ({result.already_done} from an earlier run), "
        f"{len(result.failed)} failed, {result.retries} retries; tokens: {result.prompt_tokens:,} prompt, "
        f"{result.completion_tokens:,} completion"
    )
    for path, n in result.written.items():
        console.print(f"wrote {n} rows to {path}")
    if result.reasons:
        console.print(f"failed tries by reason (each with its reply in {teacher.failed_path_for(output)}):")
        for reason, n in result.reasons.most_common():
            console.print(f"  {n:>4}  {reason}")
    if result.failed:
        raise _fail(f"{len(result.failed)} item(s) failed (appended to {teacher.failed_path_for(output)}): "
                    "run the same command again to retry them", 1)  # fmt: skip


def _trial(jobs: list, limit: int) -> list:
    """The first `limit` jobs with each split in its share (at least one of each), in file order, so a
    trial run writes a train file and a validation file like the whole run would."""
    splits = sorted({j.split for j in jobs})
    if limit >= len(jobs) or len(splits) < 2:
        return jobs[:limit]
    share = {s: sum(j.split == s for j in jobs) for s in splits}
    quota = {s: max(1, round(limit * n / len(jobs))) for s, n in share.items()}
    while sum(quota.values()) > limit:  # rounding up to one of each can overshoot a tiny limit
        biggest = max(quota, key=quota.__getitem__)
        quota[biggest] -= 1
    taken = {s: 0 for s in splits}
    chosen = []
    for job in jobs:
        if taken[job.split] < quota[job.split]:
            taken[job.split] += 1
            chosen.append(job)
    return chosen


def _load(path: Path, make_jobs, limit: int | None):
    from contract import jsonl
    from pipeline.data import gutenberg, teacher

    if (problem := jsonl.file_problem(path)) is not None:
        raise _fail(problem)
    try:
        jobs = make_jobs(gutenberg.read_jsonl(path))
    except (gutenberg.BookError, teacher.InputError) as e:
        raise _fail(str(e)) from e
    jobs = _trial(jobs, limit) if limit else jobs
    if not jobs:
        raise _fail(f"{path} has no records")
    return jobs


def reason(
    chunks: Annotated[Path, typer.Argument(help="chunks.jsonl from `data gutenberg`")],
    output: Output,
    teacher_model: Teacher,
    backend: Backend = "ollama",
    base_url: BaseUrl = None,
    api_key_env: ApiKeyEnv = "OPENAI_API_KEY",
    val_output: ValOutput = None,
    concurrency: Concurrency = 4,
    retries: Retries = 3,
    timeout: Timeout = 300.0,
    temperature: Annotated[float, typer.Option(**ranged(Temperature, min=0, max=100))] = 0.7,
    max_tokens: Annotated[int, typer.Option(**ranged(MaxTokens, min=1))] = 1024,
    backoff: Annotated[float, typer.Option(**ranged(Backoff, min=0, hidden=True))] = 2.0,
    limit: Limit = None,
    force: Force = False,
) -> None:
    """A teacher writes the reasoning behind each chunk's real continuation; rows go to train/val files.

    An existing output is refused without --force, unless its .journal is beside it: then the run goes
    on from there (finished rows are not asked again)."""
    from pipeline.data import teacher

    _check_outputs(output, val_output, force)
    jobs = _load(chunks, lambda recs: teacher.reason_jobs(recs, str(chunks)), limit)
    _run_teacher(jobs, output, val_output, teacher_model, backend, base_url, api_key_env, concurrency,
                 retries, timeout, temperature, max_tokens, backoff)  # fmt: skip


def distill(
    prompts: Annotated[
        Path, typer.Argument(help="pairs.jsonl from `data writing-prompts` (a prompt per line)")
    ],
    output: Output,
    teacher_model: Teacher,
    backend: Backend = "ollama",
    base_url: BaseUrl = None,
    api_key_env: ApiKeyEnv = "OPENAI_API_KEY",
    val_output: ValOutput = None,
    length: Annotated[
        str | None, typer.Option(help="Ask for short/medium/long stories (or N words); adds a Length line")
    ] = None,
    min_words: Annotated[int, typer.Option(**ranged("Refuse teacher stories shorter than this", min=0))] = 50,
    concurrency: Concurrency = 4,
    retries: Retries = 3,
    timeout: Timeout = 300.0,
    temperature: Annotated[float, typer.Option(**ranged(Temperature, min=0, max=100))] = 0.8,
    max_tokens: Annotated[int, typer.Option(**ranged(MaxTokens, min=1))] = 2048,
    backoff: Annotated[float, typer.Option(**ranged(Backoff, min=0, hidden=True))] = 2.0,
    limit: Limit = None,
    force: Force = False,
) -> None:
    """Sequence-level distillation: a teacher reasons and writes a story per prompt, the targets.

    An existing output is refused without --force, unless its .journal is beside it (a resume)."""
    from contract import prompt as P
    from pipeline.data import teacher

    _check_outputs(output, val_output, force)

    size: str | int | None = int(length) if length and length.isdigit() else length
    try:
        P.render_prompt("x", length=size)  # a bad --length fails here, before any request
    except P.PromptError as e:
        raise _fail(str(e)) from e
    jobs = _load(prompts, lambda recs: teacher.distill_jobs(recs, size, min_words, str(prompts)), limit)
    _run_teacher(jobs, output, val_output, teacher_model, backend, base_url, api_key_env, concurrency,
                 retries, timeout, temperature, max_tokens, backoff)  # fmt: skip


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="data")
    root.command("reason")(reason)
    root.command("distill")(distill)
