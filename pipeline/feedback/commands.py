"""`story-pipeline feedback export` and `feedback stats`: the bot's ratings and the writers' edits, take
choices and erasures as training rows and figures."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pipeline.flags import fail
from plumbing import jsonl
from plumbing.atomic import check_output, check_outputs
from plumbing.extras import needs

console = Console(stderr=True, soft_wrap=True)  # long paths and reasons stay on one line
app = typer.Typer(help="Turn the writers' ratings, edits, takes and erasures into training rows and figures.")

DbOption = Annotated[
    str,
    typer.Option(
        "--db",
        help="The bot's SQLite file or postgresql:// URL (STORY_BOT_DB); read-only, safe while it runs",
    ),
]


MAX_VOTES = 1_000_000  # a net rating is a count of members' votes; far more than any server has


class Format(StrEnum):
    sft = "sft"
    kto = "kto"
    dpo = "dpo"


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="feedback")


def _since(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{value!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC unless an offset is given)",
            param_hint="--since",
        ) from exc
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


@app.command("export")
def export_cmd(
    db: DbOption,
    fmt: Annotated[
        Format,
        typer.Option(
            "--format",
            help="sft: liked and edited passages; kto: thumbs up/down, erased passages; dpo: edits over the "
            "model's words, chosen takes over the others, regenerations rated differently",
        ),
    ],
    out: Annotated[Path, typer.Option("-o", "--output", help="JSONL file to write")],
    min_votes: Annotated[
        int, typer.Option(min=1, max=MAX_VOTES, help="Net rating that counts as a clear signal")
    ] = 1,
    since: Annotated[str | None, typer.Option(help="Only passages written on or after this date")] = None,
    model: Annotated[str | None, typer.Option(help="Only passages by this model (writer: writer:latest)")] = (
        None
    ),
    force: Annotated[bool, typer.Option("--force", help="Replace the output file if it exists")] = False,
) -> None:
    """Write training rows from the writers' feedback; print how many, and why the others were left out."""
    from pipeline.feedback import export, snapshot

    check_output(out, force)

    filters = export.Filters(min_votes=min_votes, since=_since(since), model=model)
    try:
        snap = snapshot.read(db)
    except snapshot.FeedbackError as e:
        fail(str(e))
    rows, report = export.export(snap, fmt.value, filters)
    jsonl.write(out, rows)
    path = Path(out)
    head, *rest = report.lines()
    console.print(f"wrote {path}: {head}")
    for line in rest:
        console.print(line)
    if fmt is Format.kto and rows and len(+report.written) < 2:
        console.print(
            "[yellow]warning:[/yellow] KTO trains on both thumbs up and thumbs down rows; this file has "
            "only one kind: wait for more ratings, or lower --min-votes"
        )
    if not rows:
        hint = "the database holds no ratings yet" if not report.votes else "no rating passed the rules above"
        console.print(f"[yellow]warning:[/yellow] {path} is empty: {hint}")


@app.command("stats")
@needs("feedback stats", "eval")
def stats_cmd(
    db: DbOption,
    out_dir: Annotated[Path, typer.Option("-o", "--output", help="Folder for the summary and the chart")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace the summary and chart if they exist")
    ] = False,
) -> None:
    """Votes, share of thumbs up and regeneration rate per model and week: Markdown and PNG."""
    from pipeline.feedback import snapshot, stats

    check_outputs(out_dir, (stats.MARKDOWN_NAME, stats.CHART_NAME), force)

    try:
        snap = snapshot.read(db)
    except snapshot.FeedbackError as e:
        fail(str(e))
    md, png = stats.write(snap, out_dir)
    console.print(f"wrote {md} and {png}")
