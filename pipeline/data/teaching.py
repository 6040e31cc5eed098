"""What `reason` and `distill` share: the teacher's options (declared once; both commands' flags are
generated from them) and the run: check the outputs, load the work items, ask the teacher with a
progress bar, print the summary, and fail with exit 1 when items are left to retry."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipeline.data import backends
from pipeline.flags import fail, option
from plumbing.atomic import check_output
from plumbing.extras import require

console = Console(stderr=True, soft_wrap=True)  # paths and messages stay on one line


@dataclass(frozen=True)
class TeacherOptions:
    """Which teacher writes the rows, where it runs, and how hard it is pushed."""

    teacher_model: str = option(
        MISSING, "The teacher model's name on the backend (llama.cpp: a GGUF file, or smollm2)", "--teacher"
    )
    backend: str = backends.backend_option()
    base_url: str | None = backends.base_url_option()
    api_key_env: str = backends.api_key_env_option()
    val_output: Path | None = option(
        None, "Validation rows (default: train.jsonl -> val.jsonl beside the output)"
    )
    concurrency: int = option(4, "Requests in flight at once", min=1, max=64)
    retries: int = option(3, "Retries per item on 429/5xx/timeouts/unusable replies", min=0, max=100)
    timeout: float = option(300.0, "Seconds to wait for one teacher reply", above=0)
    temperature: float = option(0.7, "Teacher sampling temperature", min=0, max=100)
    max_tokens: int = option(1024, "Most tokens the teacher may write per item", min=1)
    backoff: float = option(2.0, "Seconds before the first retry, doubling", min=0, hidden=True)
    limit: int | None = option(None, "A trial run on N items: the first of each split, in proportion", min=1)


def check_outputs(output: Path, val_output: Path | None, force: bool) -> None:
    """An existing output is replaced with --force, or when its journal is there: that run is resumed."""
    from pipeline.data import teacher

    resuming = teacher.journal_path_for(output).is_file()
    check_output(output, force or resuming)
    check_output(val_output or teacher.val_path_for(output), force or resuming)


def trial(jobs: list, limit: int) -> list:
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


def load(path: Path, make_jobs: Callable[[Iterable[dict]], list], limit: int | None) -> list:
    """The work items of an input file (all, or a trial run's share), or a clear error."""
    from pipeline.data import gutenberg, teacher
    from plumbing import jsonl

    if (problem := jsonl.file_problem(path)) is not None:
        fail(problem)
    try:
        jobs = make_jobs(gutenberg.read_jsonl(path))
    except (gutenberg.BookError, teacher.InputError) as e:
        fail(str(e))
    jobs = trial(jobs, limit) if limit else jobs
    if not jobs:
        fail(f"{path} has no records")
    return jobs


def run(jobs: list, output: Path, opts: TeacherOptions) -> None:
    """Ask the teacher for every job not already in the journal; print what was done and written."""
    from pipeline.data import teacher

    if opts.backend == "openai":
        require("reason/distill --backend openai", "data")
    journal = teacher.journal_path_for(output)
    try:
        result = _ask_all(jobs, output, opts)
    except backends.Fatal as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail(f"interrupted: finished rows are kept in {journal}; run the same command to resume", 130)
    _report(result, output)


def _ask_all(jobs: list, output: Path, opts: TeacherOptions):
    import asyncio

    from pipeline.data import teacher

    settings = backends.ChatSettings(
        opts.teacher_model,
        opts.backend,
        opts.base_url,
        opts.api_key_env,
        opts.timeout,
        opts.temperature,
        opts.max_tokens,
    )
    run_opts = teacher.RunOptions(concurrency=opts.concurrency, retries=opts.retries, backoff=opts.backoff)
    model = opts.teacher_model

    async def go(bars: Progress, task) -> teacher.RunResult:
        client = backends.make_backend(settings)
        try:

            def tick(r: teacher.RunResult) -> None:
                tokens = f"{r.prompt_tokens:,} in / {r.completion_tokens:,} out tokens"
                bars.update(task, completed=r.finished + len(r.failed), description=f"{model}: {tokens}")

            return await teacher.run_jobs(jobs, client, output, opts.val_output, run_opts, tick)
        finally:
            await client.aclose()

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bars:
        task = bars.add_task(model, total=len(jobs))
        return asyncio.run(go(bars, task))


def _report(result, output: Path) -> None:
    from pipeline.data import teacher

    console.print(
        f"{result.finished}/{result.total} done ({result.already_done} from an earlier run), "
        f"{len(result.failed)} failed, {result.retries} retries; tokens: {result.prompt_tokens:,} prompt, "
        f"{result.completion_tokens:,} completion"
    )
    for path, n in result.written.items():
        console.print(f"wrote {n} rows to {path}")
    failed_path = teacher.failed_path_for(output)
    if result.reasons:
        console.print(f"failed tries by reason (each with its reply in {failed_path}):")
        for reason, n in result.reasons.most_common():
            console.print(f"  {n:>4}  {reason}")
    if result.failed:
        again = "run the same command again to retry them"
        fail(f"{len(result.failed)} item(s) failed (appended to {failed_path}): {again}", 1)
