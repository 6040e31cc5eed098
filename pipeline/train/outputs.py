"""The output folder of a run: the PEFT adapter, its tokenizer, training.json, log.jsonl, loss.png,
samples.jsonl, tensorboard/ (with --report-to tensorboard), and checkpoints/ to resume from.

OUT_DIR itself is the adapter folder (`PeftModel.from_pretrained(base, OUT_DIR)` loads it; the export
step takes it as is). A checkpoint counts only once its trainer_state.json is written, which the Trainer
does last: a folder without it (a crash or a full disk mid-save) is removed, never resumed from.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, TypedDict

from pipeline.train.options import TrainError, is_main_process
from plumbing.atomic import write_text

METADATA = "training.json"
LOG = "log.jsonl"
CURVE = "loss.png"
SAMPLES = "samples.jsonl"
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
# What a finished run writes into OUT_DIR besides the tokenizer files; --overwrite replaces these.
_RUN_FILES = ("adapter_config.json", "adapter_model.safetensors", METADATA, LOG, CURVE, SAMPLES)


class HeldOut(TypedDict):
    """The held-out losses of a run (`run.held_out`)."""

    base_eval_loss: float | None  # at step 0: the model the run starts from
    best_eval_loss: float | None
    best_step: int | None
    last_eval_loss: float | None
    worse_than_base: bool | None  # None: no evaluation to compare


class TrainMetadata(TypedDict, total=False):
    """training.json: what a run is and how it went, written as it starts (status "running") and again
    as it ends (the keys from `global_step` on). Export, the Modelfile and the model card read it."""

    method: str
    target: str
    base: str
    chat_template: dict[str, Any]  # contract.chat_template's record (from_record reads it back)
    qlora: bool
    precision: str
    device: str
    processes: int
    trainable_parameters: int
    total_parameters: int
    rows: dict[str, dict[str, Any]]  # split -> rows.RowStats.as_dict()
    packing: dict[str, Any]  # packing's record: used, and why not
    options: dict[str, Any]  # TrainOptions.as_dict()
    resumed_from_step: int | None
    status: str  # "running", then "done" or "stopped"
    started: str
    global_step: int
    max_steps: int
    stopped_early: bool
    early_stopping_patience: int
    best_kept: bool
    base_eval_loss: float | None  # the HeldOut keys
    best_eval_loss: float | None
    best_step: int | None
    last_eval_loss: float | None
    worse_than_base: bool | None
    finished: str


def checkpoints(out_dir: Path) -> list[tuple[int, Path, bool]]:
    """(step, folder, complete) of each checkpoint, oldest first."""
    folder = Path(out_dir) / CHECKPOINTS
    found = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = _CKPT_RE.match(p.name)
            if m and p.is_dir():
                found.append((int(m[1]), p, (p / "trainer_state.json").is_file()))
    return sorted(found)


def last_complete_checkpoint(out_dir: Path) -> Path | None:
    complete = [p for _, p, ok in checkpoints(out_dir) if ok]
    return complete[-1] if complete else None


def remove_incomplete_checkpoints(out_dir: Path) -> list[Path]:
    removed = [p for _, p, ok in checkpoints(out_dir) if not ok]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed


def prepare(out_dir: Path, resume: bool, overwrite: bool) -> Path | None:
    """Check OUT_DIR against --resume / --overwrite; the checkpoint to resume from, if any."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise TrainError(f"{out_dir} is a file: -o takes a folder")
    if is_main_process():  # under torchrun, only rank 0 changes the folder
        remove_incomplete_checkpoints(out_dir)
    last = last_complete_checkpoint(out_dir)
    if resume:
        if last is None:
            raise TrainError(
                f"nothing to resume in {out_dir}: it holds no complete checkpoint; drop --resume"
            )
        return last
    earlier = last is not None or (out_dir / "adapter_config.json").exists()
    if earlier and not overwrite:
        raise TrainError(
            f"{out_dir} holds an earlier run: pass --resume to continue it, --overwrite (or --force) "
            "to start over, or choose another -o folder"
        )
    if earlier and is_main_process():
        shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)
        shutil.rmtree(out_dir / TENSORBOARD, ignore_errors=True)
        for name in _RUN_FILES:
            (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    return None


def discard_failed_run(out_dir: Path, created: bool) -> None:
    """After a run failed: remove its curve and metadata; with no complete checkpoint to resume from,
    its logs too, and the folder itself when this run created it."""
    out_dir = Path(out_dir)
    resumable = last_complete_checkpoint(out_dir) is not None
    for name in (METADATA, CURVE) if resumable else (METADATA, CURVE, LOG, SAMPLES):
        (out_dir / name).unlink(missing_ok=True)
    if not resumable:
        shutil.rmtree(out_dir / TENSORBOARD, ignore_errors=True)
    if created and not resumable:
        shutil.rmtree(out_dir, ignore_errors=True)


def read_metadata(out_dir: Path) -> dict:
    path = Path(out_dir) / METADATA
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def write_metadata(out_dir: Path, data: TrainMetadata) -> None:
    write_text(Path(out_dir) / METADATA, json.dumps(data, indent=2, default=str) + "\n")


def save_adapter(model, tokenizer, out_dir: Path, base: str) -> None:
    """Write the trained adapter (only the one being trained) and the tokenizer into OUT_DIR.

    Everything is written to a temporary folder beside it first and moved in file by file, the adapter
    weights before its config, so a failure leaves the previous files or none, never a torn adapter.
    """
    out_dir = Path(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=".adapter-", dir=out_dir))
    try:
        model.peft_config["default"].base_model_name_or_path = (
            str(Path(base).resolve()) if Path(base).is_dir() else base
        )
        model.save_pretrained(str(tmp), selected_adapters=["default"])
        tokenizer.save_pretrained(str(tmp))
        names = sorted(os.listdir(tmp), key=lambda n: n == "adapter_config.json")
        for name in names:
            os.replace(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
