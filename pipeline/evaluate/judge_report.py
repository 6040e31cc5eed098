"""The judging as people read it: a markdown table (also printed), and a PNG of the win rates with their
intervals. The summary JSON is written by the command (records.write_json)."""

from __future__ import annotations

from pathlib import Path

from pipeline import plots
from pipeline.evaluate import judge

LABELS = {
    judge.OVERALL: "Overall",
    "context": "Follows the context",
    "motivation": "Characters' motivations",
    "pacing": "Pacing",
    "prose": "Prose",
}
COLUMNS = (
    "Criterion",
    "Win rate of {a}",
    "95% interval",
    "{a} both orders",
    "{b} both orders",
    "Tie both",
    "Split",
    "Unparsed verdicts",
    "Consistency",
)
METHOD = (
    "Win rate of {a} over {b}: items score 1 when {a} wins, 0.5 for a tie, 0 when {b} wins, averaged over "
    "the two orders each item was shown in; 95% Wilson score interval over the {n} judged "
    "(conservative with ties). Consistency: share of items whose two orders agree. An unparsed verdict "
    "is left out of its item, never counted a tie."
)


def _items(n: int) -> str:
    return f"{n} item" if n == 1 else f"{n} items"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def rows(summary: dict) -> list[tuple[str, dict]]:
    """(label, tally) of the overall verdict, then each criterion the judge answered."""
    return [(LABELS[judge.OVERALL], summary[judge.OVERALL])] + [
        (LABELS[c], t) for c, t in summary["criteria"].items()
    ]


def cells(t: dict) -> list[str]:
    ci = t["ci95"]
    return [
        _pct(t["win_rate"]),
        "—" if ci is None else f"{_pct(ci[0])} – {_pct(ci[1])}",
        str(t["a_both"]),
        str(t["b_both"]),
        str(t["tie_both"]),
        str(t["split"]),
        str(t["unparsed_verdicts"]),
        "—" if t["consistency"] is None else f"{_pct(t['consistency'])} of {t['both_parsed']}",
    ]


def headers(a: str, b: str) -> list[str]:
    return [c.format(a=a, b=b) for c in COLUMNS]


def markdown(summary: dict, a: str, b: str, settings: dict) -> str:
    lines = ["| " + " | ".join(headers(a, b)) + " |", "| --- |" + " ---: |" * (len(COLUMNS) - 1)]
    lines += [f"| {label} | " + " | ".join(cells(t)) + " |" for label, t in rows(summary)]
    overall = summary[judge.OVERALL]
    notes = [
        "",
        METHOD.format(a=a, b=b, n=_items(overall["judged"])),
        f"Judge: `{settings['judge']}` ({settings['backend']}), prompt {judge.PROMPT_VERSION}; "
        f"{_items(overall['items'])}, each judged in both orders.",
    ]
    if summary["first_shown_rate"] is not None:
        notes.append(
            f"The judge chose the continuation shown first in {_pct(summary['first_shown_rate'])} "
            "of its decisive verdicts (50% is no position bias)."
        )
    if overall["unparsed"]:
        notes.append(f"{_items(overall['unparsed'])} had no readable verdict in either order: left out.")
    return "\n".join(lines) + "\n" + "\n".join(notes) + "\n"


def write_chart(path: str | Path, summary: dict, a: str, b: str) -> Path:
    """A horizontal bar per criterion: the win rate of a with its interval, the 50% line for parity."""
    plt = plots.pyplot()
    shown = [(label, t) for label, t in rows(summary) if t["win_rate"] is not None]
    fig, ax = plt.subplots(figsize=(7, 0.6 * max(1, len(shown)) + 1.4))
    ys = list(range(len(shown)))[::-1]
    rates = [t["win_rate"] for _, t in shown]
    low = [t["win_rate"] - t["ci95"][0] for _, t in shown]
    high = [t["ci95"][1] - t["win_rate"] for _, t in shown]
    ax.barh(ys, rates, xerr=[low, high], capsize=4, color="#4c72b0")
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(ys, [f"{label}\n{_items(t['judged'])}" for label, t in shown])  # how many items
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"win rate of {a} over {b} (95% interval)")
    ax.set_title(f"{a} vs {b}: judged pairwise, both orders", fontsize=10)
    fig.tight_layout()
    return plots.save_png(fig, path)
