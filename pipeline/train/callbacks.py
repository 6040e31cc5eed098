"""Trainer callbacks: the JSONL loss log and its PNG curve, and a graceful stop on Ctrl-C."""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from transformers import TrainerCallback

from contract import jsonl
from pipeline import plots


def read_log(path: Path) -> list[dict]:
    return [entry for _, entry in jsonl.iter_objects(path)] if Path(path).is_file() else []


def plot_losses(entries: list[dict], png: Path, title: str = "") -> None:
    """Train and eval loss against the optimizer step, as a PNG."""
    plt = plots.pyplot()

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for key, label, style in (("loss", "train", "-"), ("eval_loss", "eval", "o-")):
        points = [(e["step"], e[key]) for e in entries if isinstance(e.get(key), int | float)]
        if points:  # a single point draws no line: give it a marker so it shows
            ax.plot(*zip(*points, strict=True), style if len(points) > 1 else "o", label=label,
                    markersize=3 if len(points) > 1 else 6)  # fmt: skip
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title or "loss")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    plots.save_png(fig, png)


class LossLog(TrainerCallback):
    """One JSON line per Trainer log (train loss, eval loss, learning rate, DPO/KTO rewards...) and
    the curve redrawn after each evaluation and at the end. On resume, lines from steps after the
    checkpoint (work that was lost) are dropped, so the log tells the history of the adapter."""

    def __init__(self, out_dir: Path, title: str = "") -> None:
        self.log = Path(out_dir) / "log.jsonl"
        self.png = Path(out_dir) / "loss.png"
        self.title = title
        self.entries: list[dict] = []

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            resumed = state.global_step > 0  # a fresh run starts a fresh log
            self.entries = [e for e in read_log(self.log) if resumed and e["step"] <= state.global_step]
            self._write()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        entry = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        entry |= {k: v for k, v in logs.items() if isinstance(v, int | float) and math.isfinite(v)}
        self.entries.append(entry)
        self._write()
        if "eval_loss" in logs:
            self.draw()

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.draw()

    def draw(self) -> None:
        plot_losses(self.entries, self.png, self.title)

    def _write(self) -> None:
        jsonl.write(self.log, self.entries)


class GracefulStop(TrainerCallback):
    """The first Ctrl-C ends training after the current step with a checkpoint saved; a second one
    interrupts at once. Installed only in the main thread of a single process (under torchrun every
    rank would stop at a different step)."""

    def __init__(self, announce=print) -> None:
        self.requested = False
        self.announce = announce
        self._previous: Callable[[int, FrameType | None], Any] | int | None = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.announce("stopping after this step and saving a checkpoint (Ctrl-C again to stop now)")

    def on_train_begin(self, args, state, control, **kwargs):
        if args.world_size == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        self.restore()

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
