"""The error boundary's lines for the failures a user can cause, without a traceback."""

from __future__ import annotations

import errno
import sqlite3

import httpx
import pytest

from contract.boundary import explain


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
)  # fmt: skip
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
