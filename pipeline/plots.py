"""PNG charts: matplotlib without a display, written atomically like every other output."""

from __future__ import annotations

from pathlib import Path

from plumbing.atomic import atomic_path


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported on use: matplotlib is in the heavy extras)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | Path, dpi: int = 100) -> Path:
    """Write the figure as a PNG atomically and release it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    pyplot().close(fig)
    return Path(path)
