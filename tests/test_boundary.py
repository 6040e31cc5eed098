"""The error boundary's lines for the failures a user can cause, without a traceback."""

from __future__ import annotations

import ast
import errno
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from plumbing.boundary import explain

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (FileNotFoundError(2, "No such file", "in.jsonl"), "in.jsonl does not exist: check the path"),
        (IsADirectoryError(21, "Is a directory", "out"), "out is a folder, not a file"),
        (NotADirectoryError(20, "Not a directory", "f/x"), "f/x: part of this path is a file, not a folder"),
        (PermissionError(13, "Permission denied", "/root/x"), "/root/x: permission denied"),
        (OSError(errno.ENOSPC, "No space left", "big"), "no space left on the disk while writing big"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "an input is not UTF-8 text"),
        (sqlite3.DatabaseError("file is not a database"), "SQLite: file is not a database"),
        (ValueError("a bad number"), "bad value: a bad number"),
        (KeyboardInterrupt(), "interrupted"),
    ],
)
def test_expected_failures_are_one_line(error, line):
    message = explain(error)
    assert message is not None and line in message and "\n" not in message


def test_http_failures_name_the_server():
    request = httpx.Request("GET", "http://127.0.0.1:9/api/tags")
    message = explain(httpx.ConnectError("refused", request=request))
    assert "cannot reach the server http://127.0.0.1:9/api/tags" in message
    response = httpx.Response(503, request=request)
    message = explain(httpx.HTTPStatusError("busy", request=request, response=response))
    assert "answered 503" in message


def test_a_bug_is_not_passed_off_as_bad_input():
    assert explain(ZeroDivisionError("division by zero")) is None


@pytest.mark.parametrize("tool", ["pipeline", "bot"])
def test_both_tools_take_debug(tool):
    from typer.testing import CliRunner

    app = __import__(f"{tool}.cli", fromlist=["app"]).app
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0 and "--debug" in result.output


# --- causes kept: one line by default, the whole chain with --debug ------------------------------------
def _tool(tmp_path, *argv: str) -> subprocess.CompletedProcess:
    """A tool run as a user runs it (`python -m ...`), so what reaches the terminal is what is checked."""
    # A wide terminal: rich (the pipeline's and the demo's console) wraps a long line at 80 columns.
    env = {**os.environ, "PYTHONPATH": str(REPO), "STORY_BOT_DB": str(tmp_path / "s.db"), "COLUMNS": "250"}
    for name in ("STORY_DEBUG", "STORY_BOT_CONFIG"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", *argv], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )


def _bot_case(tmp_path, fake_ollama):
    # Ollama answers /api/show with a 404: the client's ResponseError, under ModelMissing, under CannotStart.
    args = ["console", "--model", "missing", "--host", fake_ollama.url]
    return "bot", args, "'missing' is not on the Ollama server", "ollama._types.ResponseError"


def _pipeline_case(tmp_path, fake_ollama):
    (tmp_path / "binary.jsonl").write_bytes(b"\xff\xfe\x00 not text")
    args = ["eval", "metrics", "binary.jsonl", "-o", "out"]
    return "pipeline", args, "binary.jsonl is not UTF-8 text", "UnicodeDecodeError"


def _demo_case(tmp_path, fake_ollama):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "mine.txt").write_text("kept\n")
    return "demo", ["-o", "used"], "used is not empty", "demo.chain.DemoError"


@pytest.mark.parametrize("case", [_bot_case, _pipeline_case, _demo_case], ids=["bot", "pipeline", "demo"])
def test_debug_shows_the_original_cause_and_the_default_is_one_line(case, tmp_path, fake_ollama):
    tool, args, line, original = case(tmp_path, fake_ollama)
    plain = _tool(tmp_path, tool, *args)
    shown = (plain.stdout + plain.stderr).strip().splitlines()
    assert plain.returncode != 0 and len(shown) == 1 and line in shown[0], shown
    debug = _tool(tmp_path, tool, "--debug", *args)
    assert debug.returncode == plain.returncode and line in debug.stderr
    assert "Traceback (most recent call last)" in debug.stderr and original in debug.stderr, debug.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "s.db").exists()  # nothing written either


def test_the_boundary_keeps_the_chain_of_a_bug_for_debug():
    from typer.testing import CliRunner

    from pipeline.cli import app
    from pipeline.evaluate import records

    def broken(path):
        try:
            {}["missing"]
        except KeyError as exc:
            raise RuntimeError("a bug on top of a lookup") from exc

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(records, "read_jsonl", broken)
        plain = CliRunner().invoke(app, ["eval", "metrics", "x.jsonl", "-o", "new"])
        debug = CliRunner().invoke(app, ["--debug", "eval", "metrics", "x.jsonl", "-o", "new"])
    assert plain.exit_code == 1 and "unexpected RuntimeError" in plain.output
    assert "KeyError" not in plain.output and "During handling" not in plain.output
    assert isinstance(debug.exception, RuntimeError) and isinstance(debug.exception.__cause__, KeyError)


# --- `raise ... from None` is rare and says why -------------------------------------------------------
def _dropped_causes() -> list[tuple[str, int, bool]]:
    """(file, line, justified) of each `raise ... from None` in the packages: justified when a
    `# why:` comment sits on the raise's first line or the line above it."""
    found = []
    for package in ("bot", "pipeline", "contract", "demo"):
        for path in sorted((REPO / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            lines = text.splitlines()
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.Raise) and isinstance(node.cause, ast.Constant):
                    near = lines[max(0, node.lineno - 2) : node.lineno]
                    found.append((f"{path.relative_to(REPO)}", node.lineno, any("# why:" in s for s in near)))
    return found


def test_a_dropped_cause_says_why():
    """Library code keeps the chain (`raise Ours(...) from exc`): the boundary alone decides what the
    user sees, and --debug must reach the original cause. `from None` is kept only where the cause is
    noise (our own mechanism, not a failure), with a `# why:` comment on its line or the one above."""
    found = _dropped_causes()
    unjustified = [f"{file}:{line}" for file, line, why in found if not why]
    assert not unjustified, f"`from None` without a `# why:` comment (use `from exc`): {unjustified}"
    assert len(found) <= 4, f"`from None` should stay rare; found {len(found)}: {found}"
