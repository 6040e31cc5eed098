"""The error boundary of both command-line tools: an expected failure (a path that cannot be read or
written, a binary file, a SQLite file that is not a database, a server that cannot be reached, a bad
value) becomes one line naming the problem and the fix, exit 1; a traceback only with --debug.

It sits in the root group's `invoke`, so it holds for `main()` and for `CliRunner().invoke(app)` alike;
usage errors (click's, exit 2) and a verb's own `typer.Exit` pass through untouched.

Library code keeps the chain (`raise Ours(...) from exc`); this boundary alone decides what is shown:
the one line by default, and with --debug the whole chain down to the original cause (the httpx or
ollama error under a backend's message), also under a verb's own one line and `typer.Exit`.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import sys
import traceback
from collections.abc import Callable
from typing import Any

import typer
from typer import _click
from typer.core import TyperGroup

DEBUG_HELP = "Show the full traceback of an error (for a bug report)"
_PASS = (_click.exceptions.ClickException, typer.Exit, typer.Abort)


def explain_os(e: OSError) -> str:
    """What went wrong with a path, and what to do about it."""
    path = "a path" if e.filename is None else str(e.filename)
    if isinstance(e, IsADirectoryError):
        return f"{path} is a folder, not a file: give the path of a file"
    if isinstance(e, NotADirectoryError):
        return f"{path}: part of this path is a file, not a folder: choose a path under a folder"
    if isinstance(e, FileNotFoundError):
        return f"{path} does not exist: check the path"
    if isinstance(e, PermissionError):
        return f"{path}: permission denied: choose a path you may read (or write), or change its permissions"
    if isinstance(e, FileExistsError):
        return f"{path} already exists: pass --force to replace it, or choose another path"
    if e.errno == errno.ENOSPC:
        return f"no space left on the disk while writing {path}: free some space and run it again"
    if e.errno == errno.EROFS:
        return f"{path} is on a read-only file system: choose an output path on a writable disk"
    if e.filename is None and e.strerror is None:
        return f"{e}: check the paths given"
    return f"{path}: {e.strerror or e}: check the path"


def _http(e: BaseException) -> str | None:
    """httpx and aiohttp (discord.py's transport) failures, without importing either."""
    module = type(e).__module__.split(".")[0]
    if module == "httpx":
        request = getattr(e, "_request", None)
        url = f" {request.url}" if request is not None else ""
        response = getattr(e, "response", None)
        if response is not None and type(e).__name__ == "HTTPStatusError":
            return f"the server at{url} answered {response.status_code}: check the URL and the server's log"
        return f"cannot reach the server{url} ({type(e).__name__}: {e}): start it, or check --host / the URL"
    if module == "aiohttp":
        return f"cannot reach the server ({e}): check the network connection and the URL, then try again"
    return None


def explain(e: BaseException) -> str | None:
    """One line for an expected failure, None for a bug (which the boundary still keeps to one line)."""
    from plumbing import atomic, extras

    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    if isinstance(e, ModuleNotFoundError) and (extra := extras.extra_of(e.name or "")):
        return f"{e.name} is not installed (the {extra!r} extra): {extras.install_line(extra)}"
    if (message := _http(e)) is not None:
        return message
    if isinstance(e, ConnectionError):
        return f"the connection failed ({e}): check that the server is running and reachable"
    if isinstance(e, atomic.OutputError):
        return str(e)
    if isinstance(e, OSError):
        return explain_os(e)
    if isinstance(e, UnicodeError):
        return f"an input is not UTF-8 text ({e}): give a text file, not a binary one"
    if isinstance(e, json.JSONDecodeError):
        return f"an input is not valid JSON ({e}): check the file"
    if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
        return f"SQLite: {e}: another process is writing the database; try again when it is done"
    if isinstance(e, sqlite3.DatabaseError):
        return f"SQLite: {e}: check that the database path names the right file, and that it is intact"
    if isinstance(e, sqlite3.Error):
        return f"SQLite: {e}"
    if isinstance(e, (ValueError, OverflowError)):
        return f"bad value: {e}"
    return None


def boundary_group(tool: str, echo: Callable[[str], None]) -> type[TyperGroup]:
    """A root group class whose invoke turns failures into `echo(line)` and exit 1."""

    class Boundary(TyperGroup):
        def invoke(self, ctx: _click.Context) -> Any:
            debug = bool(ctx.params.get("debug") or os.environ.get("STORY_DEBUG"))
            try:
                return super().invoke(ctx)
            except _PASS as e:
                if debug:
                    _show_cause(e)
                raise
            except (Exception, KeyboardInterrupt) as e:
                if debug:
                    raise
                message = explain(e)
                if message is None:  # not an input problem: a bug; still one line, and how to see more
                    message = (
                        f"unexpected {type(e).__name__}: {e} (a bug: run again with "
                        f"`{tool} --debug ...` for the traceback, and report it)"
                    )
                echo(message)
                raise typer.Exit(130 if isinstance(e, KeyboardInterrupt) else 1) from e

    return Boundary


def cause_of(e: BaseException) -> BaseException | None:
    """The exception `e` was raised from or while handling, as Python's own traceback would show it."""
    if e.__cause__ is not None:
        return e.__cause__
    return None if e.__suppress_context__ else e.__context__


def _show_cause(e: BaseException) -> None:
    """With --debug, a verb that failed with its own line (a non-zero `typer.Exit`, a usage error) also
    shows what it was handling: the chain it hid, down to the original cause."""
    code = getattr(e, "exit_code", 1)
    if code and (cause := cause_of(e)) is not None:
        print("The failure above was caused by:", file=sys.stderr)
        traceback.print_exception(cause, file=sys.stderr)
