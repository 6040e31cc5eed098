"""Which file the bot may open as its database: a new one, or one that holds the bot's schema.

The file says so itself: `PRAGMA application_id` is the bot's (set on the first migration run), or,
for a database made before the id existed, it has the bot's migrations (user_version) and tables. All
of it is read before SQLite is allowed to write: a folder, a read-only file, a file that is not SQLite,
a corrupt one, or another application's database is said plainly and left byte for byte as it was.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from pathlib import Path

from contract.store.migrations import SCHEMA_VERSION, SchemaError

APPLICATION_ID = 0x53544252  # "STBR": the bot's databases, in the SQLite header at offset 68
_MAGIC = b"SQLite format 3\x00"
_CORE_TABLES = {"stories", "generations", "passages"}  # what migration 1 creates
_POINT = "set STORY_BOT_DB (or --db) to the bot's database, or to a new file"


class NotTheBotsDatabase(SchemaError):
    """The file cannot be the bot's database; the message names the file, why, and the fix."""


def check(path: str | os.PathLike) -> None:
    """Raise NotTheBotsDatabase unless `path` is new (or empty) or holds the bot's schema."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise NotTheBotsDatabase(
            f"{path} is a folder, not a database file: {_POINT} (e.g. {path}/story-bot.db)"
        )
    above = next(p for p in path.parents if p.exists() or p == p.parent)
    if not above.is_dir():
        raise NotTheBotsDatabase(f"{path} lies under {above}, which is a file, not a folder: {_POINT}")
    if not path.exists():
        if not os.access(above, os.W_OK | os.X_OK):
            raise NotTheBotsDatabase(f"cannot create {path}: {above} is not writable: {_POINT}")
        return
    if not path.is_file():
        raise NotTheBotsDatabase(f"{path} is not a regular file: {_POINT}")
    mode = path.stat().st_mode
    if not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(path, os.W_OK):
        raise NotTheBotsDatabase(
            f"{path} is read-only: the bot writes to its database; make it writable or {_POINT}"
        )
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except OSError as e:
        raise NotTheBotsDatabase(f"cannot read {path} ({e.strerror}): {_POINT}") from e
    if not header:
        return  # an empty file is a new database to SQLite
    if not header.startswith(_MAGIC):
        raise NotTheBotsDatabase(f"{path} is not a SQLite database: it is not the bot's; {_POINT}")
    _check_schema(path)


def _check_schema(path: Path) -> None:
    # Without a -wal file beside it nothing is pending, and immutable=1 reads without making one (a
    # plain read-only open of a WAL-mode file would leave -wal and -shm files behind).
    pending = path.with_name(path.name + "-wal").exists()
    uri = f"{path.resolve().as_uri()}?mode=ro" + ("" if pending else "&immutable=1")
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as c:
            app_id = c.execute("PRAGMA application_id").fetchone()[0]
            version = c.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            c.execute("PRAGMA quick_check(1)").fetchone()
    except sqlite3.DatabaseError as e:
        raise NotTheBotsDatabase(
            f"{path} is damaged or not a database SQLite can read ({e}): {_POINT}"
        ) from e
    if app_id == APPLICATION_ID or (app_id == 0 and not tables and version == 0):
        return
    if app_id == 0 and version > 0 and tables >= _CORE_TABLES:
        return  # the bot's, from before the application id: claimed after the migrations
    if app_id == 0 and version > SCHEMA_VERSION and not tables:
        return  # the migrations refuse it (a newer bot's) without writing
    what = f"application id {app_id:#x}" if app_id else f"tables {', '.join(sorted(tables)[:5]) or 'none'}"
    raise NotTheBotsDatabase(f"{path} is another application's database ({what}), not the bot's: {_POINT}")


def claim(conn: sqlite3.Connection) -> None:
    """Mark a database the migrations have just brought to the bot's schema as the bot's."""
    if conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")


__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "NotTheBotsDatabase", "check", "claim"]
