"""The export verbs through the real CLI: output, notes, verification verdict and exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_export_gguf_then_verify_on_base(make_adapter, base_gguf, tiny_model, tmp_path):
    out = tmp_path / "writer.gguf"
    args = ["export-gguf", make_adapter("llama"), "--base", tiny_model("llama"), "-o", out]
    result = invoke(*args, "--outtype", "q8_0", "--verify-on", base_gguf("llama"))
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "F16 14, Q8_0 14" in result.output
    assert "not Q8_0: rows of 8" in result.output and "PASS" in result.output
    again = invoke(*args)
    assert again.exit_code == 2 and "already exists" in again.output


def test_export_gguf_bad_adapter_exit_code(tiny_model, tmp_path):
    result = invoke("export-gguf", tmp_path, "--base", tiny_model("qwen2"), "-o", tmp_path / "a.gguf")
    assert result.exit_code == 2 and "adapter_config.json" in result.output
    assert not (tmp_path / "a.gguf").exists()


def test_verify_gguf_fails_on_the_wrong_adapter(make_adapter, base_gguf, tiny_model, tmp_path):
    other = tmp_path / "other.gguf"  # an adapter from another training run on the same base
    assert (
        invoke(
            "export-gguf", make_adapter("qwen2", r=4), "--base", tiny_model("qwen2"), "-o", other
        ).exit_code
        == 0
    )  # noqa: E501
    args = ["verify-gguf", "--hf", tiny_model("qwen2"), "--gguf", base_gguf("qwen2")]
    result = invoke(*args, "--adapter", make_adapter("qwen2"), "--lora", other)
    assert result.exit_code == 1 and "FAIL" in result.output


@pytest.mark.parametrize("arch", ["qwen2", "gemma2", "phi3"])
def test_export_base_and_merged_with_verify(arch, make_adapter, tiny_model, tmp_path):
    base = invoke("export-base", tiny_model(arch), "-o", tmp_path / "base.gguf", "--verify")
    assert base.exit_code == 0 and "PASS" in base.output, base.output
    merged = invoke(
        "export-merged",
        make_adapter(arch),
        "--base",
        tiny_model(arch),
        "-o",
        tmp_path / "m.gguf",
        "--verify",
    )
    assert merged.exit_code == 0 and "PASS" in merged.output, merged.output
    lora = invoke(
        "export-gguf",
        make_adapter(arch),
        "--base",
        tiny_model(arch),
        "-o",
        tmp_path / "a.gguf",
        "--verify-on",
        tmp_path / "base.gguf",
    )
    assert lora.exit_code == 0 and "PASS" in lora.output, lora.output


def test_cli_stays_light():
    code = "import sys, pipeline.cli; heavy = {'torch', 'transformers', 'peft', 'llama_cpp'} & set(sys.modules); assert not heavy, heavy"  # noqa: E501
    subprocess.run([sys.executable, "-c", code], check=True)
