"""How the served models fare with the writers: votes, share of thumbs up and regeneration rate, per
model and per ISO week, as a Markdown summary and a PNG chart.

Everything is attributed to the generation: its model and the week it was written (UTC). Votes are the
ones the export counts (members who opted out are left out). The first finished generation of a slot
is a *take*; each later one is a *regeneration*; the regeneration rate is regenerations / takes. The
writers' actions are counted as the export counts them (export.signals): takes edited, take choices
standing (on the chosen take) and takes erased and not brought back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipeline import plots
from pipeline.feedback.export import counted_votes, signals
from pipeline.feedback.snapshot import Snapshot
from plumbing.atomic import write_text

MARKDOWN_NAME, CHART_NAME = "feedback-stats.md", "feedback-stats.png"


@dataclass
class Group:
    model: str
    week: str  # ISO week, e.g. 2025-W07; "all" in totals
    generations: int = 0
    takes: int = 0  # slots first filled in this group
    regenerations: int = 0
    up: int = 0
    down: int = 0
    edited: int = 0
    chosen: int = 0
    erased: int = 0

    @property
    def votes(self) -> int:
        return self.up + self.down

    @property
    def positive_share(self) -> float | None:
        return self.up / self.votes if self.votes else None

    @property
    def regeneration_rate(self) -> float | None:
        return self.regenerations / self.takes if self.takes else None

    def add(self, other: Group) -> None:
        for name in ("generations", "takes", "regenerations", "up", "down", "edited", "chosen", "erased"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def iso_week(ts: float) -> str:
    year, week, _ = datetime.fromtimestamp(ts, UTC).isocalendar()
    return f"{year}-W{week:02d}"


def by_model_and_week(snap: Snapshot) -> list[Group]:
    sig = signals(snap)
    votes, chosen = sig.votes, {c.generation_id for c in sig.chosen.values()}
    first_of_slot: dict[int, int] = {}
    for g in snap.generations:  # ordered by id: the first seen is the take
        if g.slot is not None:
            first_of_slot.setdefault(g.slot, g.id)
    groups: dict[tuple[str, str], Group] = {}
    for g in snap.generations:
        key = (g.model, iso_week(g.created_at))
        group = groups.setdefault(key, Group(*key))
        group.generations += 1
        if g.slot is None or first_of_slot[g.slot] == g.id:
            group.takes += 1
        else:
            group.regenerations += 1
        up, down = votes.get(g.id, (0, 0))
        group.up += up
        group.down += down
        group.edited += g.id in sig.edits
        group.chosen += g.id in chosen
        group.erased += g.id in sig.erased
    return [groups[k] for k in sorted(groups)]


def totals(groups: list[Group]) -> list[Group]:
    """One row per model, then all models together."""
    per_model: dict[str, Group] = {}
    overall = Group("all models", "all")
    for g in groups:
        per_model.setdefault(g.model, Group(g.model, "all")).add(g)
        overall.add(g)
    return [per_model[m] for m in sorted(per_model)] + ([overall] if len(per_model) > 1 else [])


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _table(groups: list[Group], with_week: bool) -> list[str]:
    head = ["week"] * with_week + [
        "model",
        "generations",
        "regenerations",
        "regeneration rate",
        "votes",
        "👍",
        "👎",
        "positive",
        "edited",
        "chosen",
        "erased",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        cells = [g.week] * with_week + [
            f"`{g.model}`",
            g.generations,
            g.regenerations,
            _ratio(g.regeneration_rate),
            g.votes,
            g.up,
            g.down,
            _pct(g.positive_share),
            g.edited,
            g.chosen,
            g.erased,
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def markdown(snap: Snapshot, groups: list[Group]) -> str:
    _, ignored = counted_votes(snap)
    out = [f"# Feedback from `{Path(snap.path).name}`", ""]
    if not groups:
        out += ["No finished generations yet: the bot has not written a passage into this database.", ""]
        return "\n".join(out)
    total = totals(groups)[-1]
    out.append(
        f"{total.generations} finished generations ({total.regenerations} of them regenerations), "
        f"{total.votes} counted votes, {_pct(total.positive_share)} of them 👍."
        + (f" {ignored} votes by members who opted out are not counted." if ignored else "")
    )
    out += [
        "",
        "Regeneration rate: regenerations per first take of a passage. Edited, chosen, erased: takes "
        "the writers rewrote, picked among others, or erased (and did not bring back).",
        "",
        "## Per model",
        "",
    ]
    out += _table(totals(groups), with_week=False)
    out += ["", "## Per model and ISO week (UTC, by when the passage was written)", ""]
    out += _table(groups, with_week=True)
    out += ["", f"Chart: `{CHART_NAME}`", ""]
    return "\n".join(out)


def chart(groups: list[Group], out: Path) -> Path:
    plt = plots.pyplot()

    weeks = sorted({g.week for g in groups})
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True, constrained_layout=True)
    panels = (
        ("votes", "votes"),
        ("positive_share", "share of up votes"),
        ("regeneration_rate", "regeneration rate"),
    )
    for ax, (_, label) in zip(axes, panels, strict=True):
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if not groups:
        axes[0].text(
            0.5, 0.5, "no finished generations yet", ha="center", va="center", transform=axes[0].transAxes
        )
    for model in sorted({g.model for g in groups}):
        mine = {g.week: g for g in groups if g.model == model}
        for ax, (attr, _) in zip(axes, panels, strict=True):
            ys = [getattr(mine[w], attr) if w in mine else None for w in weeks]
            ax.plot(weeks, [float("nan") if y is None else y for y in ys], marker="o", label=model)
    if groups:
        axes[0].legend(loc="best", fontsize="small")
        axes[1].set_ylim(-0.05, 1.05)
        axes[-1].set_xlabel("ISO week (UTC)")
        axes[-1].tick_params(axis="x", rotation=45)
    fig.suptitle("Writers' feedback per model and week")
    return plots.save_png(fig, out)


def write(snap: Snapshot, out_dir: str | Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    groups = by_model_and_week(snap)
    md = write_text(out_dir / MARKDOWN_NAME, markdown(snap, groups))
    return md, chart(groups, out_dir / CHART_NAME)
