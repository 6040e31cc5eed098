"""Reading JSON-lines inputs strictly: a missing file, a broken line or a line that is not an object is an
error naming the file, the line and the fix. (The training loader counts and skips bad rows instead.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


class JsonlError(ValueError):
    pass


def iter_objects(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a .jsonl file."""
    path = Path(path)
    if not path.is_file():
        raise JsonlError(
            f"{path} does not exist or is not a file: give a .jsonl file, one JSON object a line"
        )
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise JsonlError(
                    f"{path} line {n} is not valid JSON ({e.msg}): one JSON object a line"
                ) from None
            if not isinstance(obj, dict):
                raise JsonlError(f"{path} line {n} is a JSON {type(obj).__name__}, not an object")
            yield n, obj
