"""Experiment trackers (`--report-to`): the library each one needs, checked before any work, and where
each writes, inside the run folder where the tracker lets us choose, so a run carries its own curves.

transformers' own reporting callbacks do the logging; this module only checks and points them."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.train.options import TrainError, TrainOptions
from pipeline.train.outputs import TENSORBOARD
from plumbing.extras import install_line


def check(report_to: str) -> None:
    """Refuse a tracker whose library is missing, naming the extra that brings it (same name)."""
    if report_to != "none" and importlib.util.find_spec(report_to) is None:
        raise TrainError(
            f"--report-to {report_to} needs the {report_to} library, which is not installed: "
            f"{install_line(report_to)}, or drop --report-to"
        )


def tensorboard_dir(out_dir: Path) -> Path:
    return Path(out_dir).resolve() / TENSORBOARD


def _settings(opts: TrainOptions) -> tuple[dict[str, str], dict[str, str]]:
    """(forced, defaults): environment variables the tracker reads. TensorBoard always writes into the
    run folder (the sample texts go there too); W&B and MLflow only unless the caller chose a place."""
    out = Path(opts.out_dir).resolve()
    if opts.report_to == "tensorboard":
        return {"TENSORBOARD_LOGGING_DIR": str(tensorboard_dir(out))}, {}
    if opts.report_to == "wandb":
        return {}, {"WANDB_DIR": str(out)}
    if opts.report_to == "mlflow":
        return {}, {"MLFLOW_TRACKING_URI": (out / "mlruns").as_uri()}
    return {}, {}


@contextmanager
def environment(opts: TrainOptions) -> Iterator[None]:
    """The tracker's environment for the length of the run (transformers' callbacks read it when
    built and when training begins), restored afterwards."""
    forced, defaults = _settings(opts)
    values = forced | {k: v for k, v in defaults.items() if not os.environ.get(k)}
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
