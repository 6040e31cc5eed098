"""Reading a file a member hands the bot (a story, a lorebook): its size first, then JSON. Pure.

Every refusal is a :class:`BadFile` (a StoryError: the member reads it) naming the problem and the fix.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from .events import StoryError

#: A story file's format and the version of its schema this bot writes (bot/core/storyfile.py).
STORY_FORMAT, STORY_VERSION = "story-bot.story", 1
#: The largest file `/story import` and `/lore import` read (a long story with its takes is a few MB).
MAX_FILE_BYTES = 4 * 1024 * 1024


class BadFile(StoryError):
    """A file that cannot be imported; nothing was written."""


def check_size(size: int, limit: int = MAX_FILE_BYTES) -> None:
    if size > limit:
        raise BadFile(
            f"the file has {size:,} bytes, over the limit of {limit:,}: split the story (fork it) or the "
            "lorebook before exporting it"
        )


def load_json(data: bytes, limit: int = MAX_FILE_BYTES) -> Any:
    """The JSON document in `data`, read only once its size is known to be within `limit`."""
    check_size(len(data), limit)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadFile("the file is not text (UTF-8): give the .json file the other tool exported") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadFile(
            f"the file is not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}): give the .json file "
            "the export wrote, unchanged"
        ) from exc
    except RecursionError as exc:
        raise BadFile("the file's JSON is nested too deeply to be a story or a lorebook") from exc


def check_version(version: Any, ours: int, what: str) -> None:
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BadFile(f"the {what} file has no valid `version`: it should be {ours}")
    if version > ours:
        raise BadFile(
            f"the {what} file has version {version}, newer than this bot reads ({ours}): upgrade the bot, "
            "or export it again from a bot of this version"
        )


def explain(exc: ValidationError, what: str) -> BadFile:
    """A schema error as a member reads it: where in the file, and what was expected (the first few)."""
    lines = []
    for err in exc.errors()[:5]:
        where = ".".join(str(x) for x in err["loc"]) or "the top level"
        lines.append(f"{where}: {err['msg']}")
    more = f" (and {exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return BadFile(f"the {what} does not follow its schema{more}: " + "; ".join(lines))


def dumps(document: Any) -> str:
    """A document as the exports write it: stable key order, two-space indent, UTF-8, a final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
