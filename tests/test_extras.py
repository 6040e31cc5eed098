"""A verb whose extra is missing says which extra to install, exits 1, and writes nothing."""

from __future__ import annotations

import importlib.util
import sqlite3

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from plumbing import extras


@pytest.fixture
def without(monkeypatch):
    """without(*modules): make find_spec report those modules as not installed."""

    def hide(*modules: str) -> None:
        real = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name, *a: None if name in modules else real(name, *a)
        )

    return hide


@pytest.mark.parametrize(
    ("argv", "module", "extra"),
    [
        (["eval", "metrics", "texts.jsonl", "-o", "OUT"], "textstat", "eval"),
        (["eval", "perplexity", "--base", "b", "--data", "d.jsonl", "-o", "OUT"], "torch", "train"),
        (["train", "--base", "b", "-o", "OUT", "--data", "d.jsonl"], "peft", "train"),
        (["data", "writing-prompts", "--source", "wp", "-o", "OUT"], "datasets", "data"),
        (["feedback", "stats", "--db", "bot.db", "-o", "OUT"], "matplotlib", "eval"),
        (["hub", "push", "OUT", "--repo", "you/writer"], "huggingface_hub", "hub"),
    ],
)
def test_a_missing_extra_is_named_with_its_install_line(tmp_path, without, argv, module, extra):
    sqlite3.connect(tmp_path / "bot.db").close()
    out = tmp_path / "OUT"
    without(module)
    paths = {"OUT": str(out)} | {a: str(tmp_path / a) for a in argv if "." in a or a in ("b", "wp")}
    argv = [paths.get(a, a) for a in argv]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert f"{module} of the '{extra}' extra" in text and f"'.[{extra}]'" in text
    assert not out.exists()


def test_every_extra_names_modules_pyproject_installs():
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    declared = pyproject["project"]["optional-dependencies"]
    for extra, modules in extras.EXTRAS.items():
        assert extra in declared
        for module in modules:
            assert importlib.util.find_spec(module) is not None, (extra, module)
    assert extras.extra_of("transformers.models") == "train" and extras.extra_of("sqlite3") is None
