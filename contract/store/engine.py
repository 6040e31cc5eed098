"""The two database engines behind the store: SQLite (a file, the default) and PostgreSQL (a URL).

The repository's SQL is written once, in the dialect both engines share (`?` placeholders, `RETURNING`,
`ON CONFLICT`, aggregate `FILTER`); :class:`PgConnection` makes a psycopg 3 connection answer like a
`sqlite3.Connection` (placeholders, rows read by index or by column name), and :func:`write_lock` gives
PostgreSQL SQLite's one-writer-at-a-time rule, on which the leases and the "check, then write"
transactions rely.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(target: object) -> bool:
    return str(target).startswith(URL_SCHEMES)


def shown(target: str) -> str:
    """A database named for messages: a URL without its password."""
    if not is_url(target):
        return target
    parts = urlsplit(target)
    host = parts.hostname or ""
    netloc = (
        (f"{parts.username}@" if parts.username else "") + host + (f":{parts.port}" if parts.port else "")
    )
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class Connection(Protocol):
    """What the store's SQL runs on: a `sqlite3.Connection`, or a :class:`PgConnection` answering like one."""

    def execute(self, query: str, params: Any = ..., /) -> Any: ...

    def executemany(self, query: str, rows: Any, /) -> Any: ...

    def close(self) -> None: ...


class Row(tuple):
    """A result row: by position (`row[0]`) or by column name (`row["id"]`), like sqlite3.Row."""

    names: dict[str, int]

    def __getitem__(self, key):
        if isinstance(key, str):
            return tuple.__getitem__(self, self.names[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self.names)


def _row_factory(cursor):
    names = {d.name: i for i, d in reversed(list(enumerate(cursor.description or ())))}
    kind = type("Row", (Row,), {"names": names})  # one class per result: the names are shared
    return kind


def _sql(query: str) -> str:
    """sqlite's `?` placeholders as psycopg's `%s` (a literal `%` doubled)."""
    return query.replace("%", "%%").replace("?", "%s")


class PgConnection:
    """A psycopg connection in autocommit mode (each statement alone, unless inside :meth:`begin`)."""

    dialect = "postgresql"

    def __init__(self, url: str):
        self.url, self.closed = url, False
        self.raw = self._connect()

    def _connect(self):
        try:
            import psycopg
        except ImportError as exc:
            raise ModuleNotFoundError(
                "a postgresql:// database needs psycopg: pip install -c requirements/lock.txt '.[postgres]'",
                name="psycopg",
            ) from exc

        return psycopg.connect(self.url, autocommit=True, row_factory=_row_factory)

    def _live(self):
        """The connection, opened again if the last one broke (the server restarted, a network cut): the
        call that met the break failed, its transaction rolled back by the server; the next one works."""
        if self.raw.broken and not self.closed:
            self.raw = self._connect()
        return self.raw

    def execute(self, query: str, params: Sequence[Any] | None = None):
        if params is None:
            return self._live().execute(query)
        return self._live().execute(_sql(query), params)

    def executemany(self, query: str, rows: Iterable[Sequence[Any]]):
        cursor = self._live().cursor()
        cursor.executemany(_sql(query), list(rows))
        return cursor

    def close(self) -> None:
        self.closed = True
        self.raw.close()


def dialect(conn) -> str:
    return getattr(conn, "dialect", "sqlite")


def write_lock(conn) -> None:
    """Inside a PostgreSQL transaction: wait for, then hold until it ends, the schema's one write lock
    (SQLite's BEGIN IMMEDIATE). Under READ COMMITTED every statement after it sees what the writers
    before it committed, so a transaction that reads, decides and writes is never raced."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('story-bot:' || current_schema()))")
