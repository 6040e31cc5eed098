"""JSON lines: reading inputs strictly (a missing file, a broken line or a line that is not an object is an
error naming the file, the line and the fix; the training loader counts and skips bad rows instead), and
the one writer of .jsonl outputs (atomic, UTF-8, one object a line) with its appending twin for logs."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from plumbing.atomic import atomic_path


class JsonlError(ValueError):
    pass


WHAT = "a .jsonl file, one JSON object a line"


def file_problem(path: str | Path, what: str = WHAT) -> str | None:
    """Why `path` cannot be read as an input file (a folder, missing, unreadable), or None."""
    path = Path(path)
    if path.is_dir():
        return f"{path} is a folder, not a file: give {what}"
    if not path.exists():
        return f"{path} does not exist: give {what}"
    if not path.is_file():
        return f"{path} is not a regular file: give {what}"
    return None


def lines(path: str | Path, what: str = WHAT) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 text file; a missing, folder or binary file is a JsonlError."""
    path = Path(path)
    if (problem := file_problem(path, what)) is not None:
        raise JsonlError(problem)
    n = 0
    try:
        with open(path, encoding="utf-8-sig") as f:
            for n, line in enumerate(f, 1):
                yield n, line
    except UnicodeDecodeError as exc:
        raise JsonlError(
            f"{path} is not UTF-8 text (line {n + 1}): is it a binary file? give {what}"
        ) from exc
    except OSError as e:
        raise JsonlError(f"cannot read {path} ({e.strerror}): give {what}") from e


def iter_objects(
    path: str | Path, what: str = WHAT, on_bad: Callable[[str, int], None] | None = None
) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a .jsonl file.

    A line that is not a JSON object is a JsonlError naming it; with `on_bad` it is skipped and reported
    as on_bad(reason, line number) instead ("not valid JSON" or "not a JSON object"), for readers that
    count bad rows (the training loader) or that outlive a crash (the teacher's journal).
    """
    path = Path(path)
    for n, line in lines(path, what):
        if not line.strip():
            continue
        got = _parse(line)
        if isinstance(got, dict):
            yield n, got
        elif on_bad is None:
            raise JsonlError(f"{path} line {n} {got[1]}")
        else:
            on_bad(got[0], n)


def _parse(line: str) -> dict | tuple[str, str]:
    """The object on a line, or (reason, what is wrong with the line)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        return "not valid JSON", f"is not valid JSON ({e.msg}): one JSON object a line"
    if not isinstance(obj, dict):
        return "not a JSON object", f"is a JSON {type(obj).__name__}, not an object"
    return obj


def _line(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False) + "\n"


def write(path: str | Path, rows: Iterable[dict]) -> int:
    """Write rows as JSON lines, atomically (all or nothing); the number written."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(_line(row))
            n += 1
    return n


def append(path: str | Path, rows: Iterable[dict]) -> int:
    """Append rows as JSON lines, flushed and fsynced before returning, for logs that grow across runs
    (a journal, a failure log); the folder is made if missing. The number appended.

    A crash can cut only the last line, which `iter_objects(..., on_bad=...)` skips when read back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "a", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(_line(row))
            n += 1
        f.flush()
        os.fsync(f.fileno())
    return n
