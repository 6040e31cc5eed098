"""The comparison as people read it: a markdown table shaped like the write-ups', a JSON file, a PNG.

A row per metric, a column per model, the best value of each row in bold. "Best" per metric:
- Flesch Reading Ease: higher (plainer prose reads more easily); Gunning Fog: lower, for the same reason;
- entropy, entropy per window, distinct-1, distinct-2: higher (a richer, less repetitive vocabulary);
- 4-gram repetition: lower; share of outputs that parse into reasoning and answer: higher;
- answer length against the length asked: closest to 1;
- polarity, subjectivity, word count: no best (tone and length are matters of taste, not quality).
Only complete columns compete for bold: a model that failed part-way is shown with what it
produced and what went wrong, never marked best. A reference column (the human continuations) is shown
for scale and never bolded either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline import plots


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    best: str | None  # "max", "min", "one" (closest to 1) or None
    digits: int = 2


ROWS = (
    Row("flesch_reading_ease", "Flesch Reading Ease ↑", "max", 1),
    Row("gunning_fog", "Gunning Fog ↓", "min", 2),
    Row("entropy_bits", "Shannon entropy (bits) ↑", "max", 2),
    Row("entropy_bits_window", "Entropy per {window} words (bits) ↑", "max", 2),
    Row("distinct_1", "Distinct-1 ↑", "max", 3),
    Row("distinct_2", "Distinct-2 ↑", "max", 3),
    Row("repetition_4gram", "Repeated 4-grams ↓", "min", 3),
    Row("polarity", "Sentiment polarity", None, 3),
    Row("subjectivity", "Subjectivity", None, 3),
    Row("words", "Words", None, 0),
    Row("length_ratio", "Length / length asked (→ 1)", "one", 2),
    Row("parsed", "Parsed into reasoning + answer ↑", "max", 2),
)


@dataclass
class Column:
    """One model (or the reference texts): its summary, and whether it may be marked best."""

    label: str
    metrics: dict  # key -> spread dict (mean, std, ...) from metrics.summarize
    status: str = "ok"  # ok, failed, reference
    note: str = ""

    @property
    def competes(self) -> bool:
        return self.status == "ok"


def _mean(col: Column, key: str) -> float | None:
    return (col.metrics.get(key) or {}).get("mean")


def best_columns(columns: list[Column], row: Row) -> set[str]:
    """Labels of the columns holding the best mean of this row (ties all bold)."""
    scored = {c.label: _mean(c, row.key) for c in columns if c.competes and _mean(c, row.key) is not None}
    if not row.best or len(scored) < 2:
        return set()
    goodness = {
        "max": lambda v: v,
        "min": lambda v: -v,
        "one": lambda v: -abs(v - 1.0),
    }[row.best]
    top = max(goodness(v) for v in scored.values())
    return {label for label, v in scored.items() if goodness(v) == top}


def _cell(col: Column, row: Row) -> str:
    spread = col.metrics.get(row.key) or {}
    if spread.get("mean") is None:
        return "—"
    text = f"{spread['mean']:.{row.digits}f}"
    if row.key != "parsed" and spread.get("n", 0) > 1 and spread.get("std") is not None:
        text += f" ± {spread['std']:.{row.digits}f}"
    return text


def markdown_table(columns: list[Column], window: int, outputs_per_model: int | None = None) -> str:
    """The comparison table: a row per metric, a column per model, the best in bold; notes below."""
    lines = ["| Metric | " + " | ".join(c.label for c in columns) + " |"]
    lines.append("| --- |" + " ---: |" * len(columns))
    status = [c.status if c.status in ("ok", "reference") else f"**{c.status}**" for c in columns]
    lines.append("| Status | " + " | ".join(status) + " |")
    lines.append(
        "| Texts scored | "
        + " | ".join(str((c.metrics.get("words") or {}).get("n", 0)) for c in columns)
        + " |"
    )
    for row in ROWS:
        if all(_mean(c, row.key) is None for c in columns):
            continue  # e.g. no length was asked, or only reference texts
        best = best_columns(columns, row)
        cells = [f"**{_cell(c, row)}**" if c.label in best else _cell(c, row) for c in columns]
        lines.append(f"| {row.label.format(window=window)} | " + " | ".join(cells) + " |")
    notes = [f"- {c.label}: {c.note}" for c in columns if c.note]
    text = "\n".join(lines) + "\n"
    text += "\nMean ± standard deviation over texts; bold: best among complete model columns (see README).\n"
    if outputs_per_model:
        text += f"Each model was asked for {outputs_per_model} outputs.\n"
    if notes:
        text += "\n" + "\n".join(notes) + "\n"
    return text


def write_chart(path: str | Path, columns: list[Column], window: int) -> Path:
    """A bar chart per metric (mean with standard deviation), one bar per column, as a PNG."""
    plt = plots.pyplot()

    rows = [r for r in ROWS if any(_mean(c, r.key) is not None for c in columns)]
    ncols = 4
    nrows = max(1, -(-len(rows) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.4 * nrows + 0.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colors = [colors[i % len(colors)] for i in range(len(columns))]
    for ax, row in zip(axes.flat, rows, strict=False):
        means = [_mean(c, row.key) for c in columns]
        stds = [(c.metrics.get(row.key) or {}).get("std") or 0.0 for c in columns]
        xs = list(range(len(columns)))
        ax.bar(xs, [m if m is not None else 0.0 for m in means], yerr=stds, capsize=3, color=colors)
        for x, (m, c) in enumerate(zip(means, columns, strict=True)):
            if m is None:  # a missing model, or a metric that does not apply: say so where the bar would be
                ax.text(x, 0, c.status if c.status != "ok" else "n/a", ha="center", va="bottom", fontsize=7)
        ax.set_title(row.label.format(window=window), fontsize=9)
        ax.set_xticks([])
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(rows) :]:
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors]  # one legend for every panel
    fig.legend(handles, [c.label for c in columns], loc="upper center", ncol=len(columns), fontsize=9)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.04, top=1 - 0.55 / fig.get_figheight(), hspace=0.45)
    return plots.save_png(fig, path)
