"""The same command under torchrun: two processes (gloo on the CPU), QLoRA, one adapter written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.train.helpers import sft_rows, write_jsonl

REPO = Path(__file__).resolve().parents[2]


def test_torchrun_with_two_processes(train_base, tiny_texts, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", sft_rows(tiny_texts, 16))
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "-m",
        "pipeline",
        "train",
        "--base",
        str(train_base),
        "-o",
        str(out),
        "--data",
        str(data),
        "--max-length",
        "320",
        "--max-steps",
        "2",
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
        "--log-steps",
        "1",
        "--no-gradient-checkpointing",
    ]
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (
        done.stdout.count("trainable parameters:") + done.stderr.count("trainable parameters:") == 1
    )  # rank 0
    meta = json.loads((out / "training.json").read_text())
    assert meta["status"] == "done" and meta["global_step"] == 2
    assert meta["processes"] == 2 and (out / "adapter_model.safetensors").is_file()
