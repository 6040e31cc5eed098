"""eval compare on the local engine: the real SmolLM2 GGUF in-process, a GGUF that is not there, and
the options that only make sense with it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

pytest.importorskip("llama_cpp")


def _compare(tmp_path, *args):
    from pipeline.cli import app

    contexts = tmp_path / "ctx.jsonl"
    row = {"context": "The rain fell on the old house.", "continuation": "It was cold."}
    contexts.write_text(json.dumps(row) + "\n")
    return CliRunner().invoke(
        app,
        ["eval", "compare", "--contexts", str(contexts), "-o", str(tmp_path / "o"), "--workers", "1", *args],
    )


def test_a_gguf_runs_in_process_and_a_missing_one_is_named_before_any_output(tmp_path, smollm2_gguf):
    r = _compare(
        tmp_path,
        "--engine",
        "llama.cpp",
        "--model",
        f"base={smollm2_gguf}",
        "--model",
        f"gone={tmp_path / 'gone.gguf'}",
        "--num-predict",
        "8",
        "--n-ctx",
        "1024",
    )
    assert r.exit_code == 2 and "gone.gguf is not a file" in r.output, r.output
    assert not (tmp_path / "o").exists()  # nothing written
    r = _compare(
        tmp_path,
        "--engine",
        "llama.cpp",
        "--model",
        f"base={smollm2_gguf}",
        "--num-predict",
        "8",
        "--n-ctx",
        "1024",
        "--reference-field",
        "continuation",
    )
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["columns"]["base"]["status"] == "ok" and summary["columns"]["base"]["outputs"] == 1
    out = json.loads((tmp_path / "o" / "outputs.jsonl").read_text().splitlines()[0])
    assert out["eval_count"] <= 8 and out["done_reason"] in ("length", "stop")
    settings = summary["settings"]
    assert settings["engine"] == "llama.cpp" and settings["models"]["base"] == str(smollm2_gguf)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "a=x", "--lora", "a=y.gguf"], "--lora needs --engine llama.cpp"),
        (["--engine", "vllm", "--model", "a=x"], "--engine 'vllm'"),
        (["--engine", "llama.cpp", "--model", "a=x", "--lora", "b=y.gguf"], "no --model has that name"),
    ],
)
def test_bad_engine_options_are_one_clear_line(tmp_path, args, message):
    r = _compare(tmp_path, *args)
    assert r.exit_code == 2 and message in r.output
