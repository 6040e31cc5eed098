"""loss.png shows every logged step, even when a run logged only one (a point, not an empty plot)."""

from __future__ import annotations

import pytest

from pipeline import plots
from pipeline.train import callbacks

pytest.importorskip("matplotlib")


def test_a_run_with_one_logged_step_draws_a_point(tmp_path, monkeypatch):
    figures = []
    save = plots.save_png
    monkeypatch.setattr(plots, "save_png", lambda fig, png: (figures.append(fig), save(fig, png))[1])
    callbacks.plot_losses([{"step": 1, "loss": 2.5}], tmp_path / "one.png")
    callbacks.plot_losses([{"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.0}], tmp_path / "two.png")
    one, two = (f.axes[0].lines[0] for f in figures)
    assert one.get_marker() not in (None, "", "None") and one.get_markersize() > 0  # it drew nothing before
    assert list(one.get_xdata()) == [1] and (tmp_path / "one.png").stat().st_size > 0
    assert two.get_linestyle() == "-" and list(two.get_xdata()) == [1, 2]  # two points: still a line
