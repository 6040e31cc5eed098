"""The GPU path's two scripts, run here at their CPU settings so a GPU session only has to run them:
benchmarks/bench_train_gpu.py (our train against plain Transformers + PEFT) and
scripts/cuda_end_to_end.py (train, export-gguf, verify-gguf in llama.cpp)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load(relative: str):
    spec = importlib.util.spec_from_file_location(Path(relative).stem, REPO / relative)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_measures_ours_and_the_plain_loop_and_writes_ratios(tmp_path, capsys):
    bench = load("benchmarks/bench_train_gpu.py")
    out = tmp_path / "bench"
    args = [
        "--shape",
        "tiny",
        "--device",
        "cpu",
        "--lengths",
        "512",
        "--packing",
        "on,off",
        "--checkpointing",
        "on",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--out",
        str(out),
    ]
    bench.main(args)
    printed = capsys.readouterr().out
    assert "tokens/s" in printed and "speed" in printed and "peak RSS" in printed
    report = json.loads((out / "bench_train_gpu.json").read_text())
    assert (out / "bench_train_gpu.png").read_bytes()[:4] == b"\x89PNG"
    assert report["environment"]["device"].startswith("CPU") and report["notes"]
    runs = report["runs"]
    systems = {r["system"] for r in runs}
    assert {"ours-lora", "plain-lora"} <= systems  # the QLoRA pair too where bitsandbytes trains 4-bit here
    assert len(runs) == 2 * len(systems)  # packed and unpacked, every system at each
    for r in runs:
        assert r["status"] == "ok", r
        assert set(bench.COLUMNS) <= set(r)
        assert r["tokens_per_s"] > 0 and r["peak_mb"] > 100 and r["steps"] == 2
        # the measured steps are real tokens of rows cut to 512: at most 512 a sequence, more than a prompt
        assert 2 * 200 < r["tokens"] <= 2 * 512
        assert r["tokens_per_s"] == pytest.approx(r["tokens"] / r["seconds"])
    ours = [s for s in systems if s.startswith("ours")]
    assert len(report["ratios"]) == 2 * len(ours)
    for ratio in report["ratios"]:
        assert ratio["against"] == bench.BASELINE[ratio["system"]]
        assert 0 < ratio["speed"] < 100 and 0.2 < ratio["memory"] < 5


def test_the_plain_loop_packs_whole_rows_with_their_own_positions():
    bench = load("benchmarks/bench_train_gpu.py")
    rows = [{"input_ids": [7] * n, "labels": [-100] * (n - 2) + [7, 7]} for n in (5, 4, 3, 6)]
    packed = bench.plain_batches(rows, 10, packing=True, batch=1, pad_id=0)
    assert [b["tokens"] for b in packed] == [9, 9]  # 5+4, then 3+6: no row split across sequences
    assert packed[0]["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 3]]
    padded = bench.plain_batches(rows, 10, packing=False, batch=2, pad_id=0)
    assert sorted(b["tokens"] for b in padded) == [7, 11]
    assert all(b["attention_mask"].sum().item() == b["tokens"] for b in padded)


def test_the_benchmark_refuses_a_gpu_shape_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here")
    bench = load("benchmarks/bench_train_gpu.py")
    with pytest.raises(SystemExit, match="no CUDA GPU here.*--shape tiny --device cpu"):
        bench.main(["--shape", "7b"])
    with pytest.raises(SystemExit, match="hours on a CPU"):
        bench.main(["--shape", "7b", "--device", "cpu"])


def test_the_end_to_end_trains_exports_and_verifies_in_llama_cpp(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the script sets it for --device cpu; keep it local
    e2e = load("scripts/cuda_end_to_end.py")
    out = tmp_path / "e2e"
    e2e.main(["--device", "cpu", "--out", str(out), "--steps", "3"])
    printed = capsys.readouterr().out
    assert "PASS: the adapter" in printed
    facts = json.loads((out / "report.json").read_text())
    assert facts["device"] == "CPU" and facts["global_step"] == 3 and facts["lora_b_max"] > 0
    with pytest.raises(SystemExit, match="exists"):
        e2e.main(["--device", "cpu", "--out", str(out)])
    # What a GPU machine without llama.cpp sends back is verified from the packed file alone.
    shutil.rmtree(out)
    e2e.main(["--verify", str(tmp_path / "e2e.tar.gz")])
    assert "PASS: the adapter" in capsys.readouterr().out
