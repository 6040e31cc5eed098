"""What `eval` verbs show on the terminal: progress bars, notes on texts the metrics mean little for,
and the tables of means and of judged win rates."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

console = Console(stderr=True, soft_wrap=True)


def progress() -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, console=console)


def warn_notes(summary: dict, what: str) -> None:
    from pipeline.evaluate import metrics

    texts, notes = summary["texts"], summary["notes"]
    messages = {
        metrics.NOTE_EMPTY: "have no words: their metrics are left empty and out of the means",
        metrics.NOTE_SHORT: f"have fewer than {metrics.MIN_WORDS} words: their readability means little",
        metrics.NOTE_NON_ENGLISH: "look non-English (few of the commonest English words): "
        "readability and sentiment are English-only measures",
    }
    for note, message in messages.items():
        if notes.get(note):
            console.print(f"[yellow]{what}: {notes[note]} of {texts} texts {message}[/yellow]")


def print_summary(title: str, columns: dict[str, dict], window: int) -> None:
    from pipeline.evaluate.report import ROWS

    table = Table(title=title)
    table.add_column("metric")
    for label in columns:
        table.add_column(label, justify="right")
    for row in ROWS:
        means = [(c["metrics"].get(row.key) or {}).get("mean") for c in columns.values()]
        if all(m is None for m in means):
            continue
        table.add_row(
            row.label.format(window=window), *("—" if m is None else f"{m:.{row.digits}f}" for m in means)
        )
    Console().print(table)


def print_judged(summary: dict, a: str, b: str) -> None:
    from pipeline.evaluate import judge_report

    table = Table(title=f"{a} vs {b}, judged in both orders (table.md has every count)")
    for n, header in enumerate(("Criterion", f"Win rate of {a}", "95% interval", "Consistency", "Unread")):
        table.add_column(header, justify="left" if n == 0 else "right")
    for label, t in judge_report.rows(summary):
        c = judge_report.cells(t)
        table.add_row(label, c[0], c[1], c[7], c[6])
    Console().print(table)
    overall = summary["overall"]
    if overall["unparsed_verdicts"]:
        console.print(
            f"[yellow]{overall['unparsed_verdicts']} verdicts could not be read (see verdicts.jsonl)[/yellow]"
        )
