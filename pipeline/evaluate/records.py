"""Reading the JSONL files the evaluation takes, and writing what it produces (atomically)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from plumbing import atomic, jsonl


class InputError(ValueError):
    """An input file the evaluation cannot use; the message names the file, the line and the fix."""


def read_jsonl(path: str | Path) -> list[dict]:
    try:
        rows = [obj for _, obj in jsonl.iter_objects(path)]
    except jsonl.JsonlError as e:
        raise InputError(str(e)) from e
    if not rows:
        raise InputError(f"{path} holds no rows")
    return rows


def field_values(
    rows: list[dict], field: str, path: str | Path = "input", flag: str = "--field"
) -> list[str]:
    """The text in `field` of every row; a missing or non-text field is an error naming the row (and
    the option, `flag`, that chose the field)."""
    out = []
    for n, row in enumerate(rows, 1):
        value = row.get(field)
        if value is None:
            keys = ", ".join(sorted(row)) or "none"
            raise InputError(f"{path} row {n} has no {field!r} field (it has: {keys}): pick one with {flag}")
        if not isinstance(value, str):
            raise InputError(f"{path} row {n}: {field!r} is a {type(value).__name__}, not text")
        out.append(value)
    return out


@dataclass(frozen=True)
class Context:
    """A held-out story context and what to ask for; `reference` is the human continuation, if known."""

    text: str
    length: str | int | None = None
    guidance: str | None = None
    reference: str | None = None


def contexts(rows: list[dict], field: str, reference_field: str | None, path: str | Path) -> list[Context]:
    """Contexts from the data step's records: `field` (default `context`), optional `length`, `guidance`."""
    texts = field_values(rows, field, path)
    refs = (
        field_values(rows, reference_field, path, "--reference-field")
        if reference_field
        else [None] * len(rows)
    )
    out = []
    for n, (text, ref, row) in enumerate(zip(texts, refs, rows, strict=True), 1):
        if not isinstance(row.get("guidance"), str | None):
            raise InputError(f"{path} row {n}: 'guidance' must be text, not {type(row['guidance']).__name__}")
        length = row.get("length")
        out.append(
            Context(text, length if isinstance(length, (str, int)) else None, row.get("guidance"), ref)
        )
    return out


def clean(value):
    """JSON-safe: NaN and infinities become null (json.dumps would write NaN, which is not JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    jsonl.write(path, (clean(row) for row in rows))
    return Path(path)


def write_json(path: str | Path, data) -> Path:
    return atomic.write_text(path, json.dumps(clean(data), indent=2, ensure_ascii=False) + "\n")
