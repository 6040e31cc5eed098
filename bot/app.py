"""The story service as the settings describe it: one wiring for `story-bot run` and `story-bot console`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

from contract.store.engine import is_url, shown

from .config import Settings
from .core.service import StoryService
from .llm import LLMError
from .store import SchemaError, Store


class CannotStart(Exception):
    """The model or the store the settings name cannot be used; the message says what to fix."""


@contextlib.asynccontextmanager
async def build_service(settings: Settings) -> AsyncIterator[StoryService]:
    """The settings' story service. Its model is checked first (the server is there and holds it; its
    template is then cached), then the store opened; on leaving, its background work is stopped and its
    leases given up, its backend and store closed. Raises CannotStart."""
    async with contextlib.AsyncExitStack() as stack:
        backend = settings.backend()
        stack.push_async_callback(backend.close)
        try:
            await backend.model_info(settings.model)
        except LLMError as exc:
            raise CannotStart(str(exc)) from exc
        store = open_store(settings.db)
        stack.callback(store.close)
        service = StoryService(
            store, backend, settings.model_for, settings.counter(), settings.limits(), settings.models_allowed
        )
        stack.push_async_callback(service.aclose)  # a summary still being written is tried again next time
        yield service


def open_store(db: str) -> Store:
    """The store on `db` (a file, or a postgresql:// URL), or CannotStart saying why not."""
    try:
        return Store(db)
    except SchemaError as exc:
        raise CannotStart(str(exc)) from exc
    except ImportError as exc:
        raise CannotStart(
            "STORY_BOT_DB is a PostgreSQL URL, which needs psycopg: pip install 'psycopg[binary]'"
        ) from exc
    except Exception as exc:
        if not is_url(db):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CannotStart(
            f"cannot open the PostgreSQL store at {shown(db)} ({first}): check STORY_BOT_DB"
        ) from exc


@contextlib.contextmanager
def removed_unless_used(db: str) -> Iterator[Callable[[], None]]:
    """A SQLite store this run creates is removed again (with its WAL files) if the run ends before it
    calls the function yielded (Discord took the bot's login): a first start that fails leaves nothing
    behind. A store that existed, or a PostgreSQL URL, is never touched."""
    path = Path(db).expanduser()
    new = not is_url(db) and db != ":memory:" and not path.exists()
    used = False

    def use() -> None:
        nonlocal used
        used = True

    try:
        yield use
    finally:
        if new and not used:
            for f in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                f.unlink(missing_ok=True)
