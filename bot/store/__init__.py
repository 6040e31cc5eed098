"""SQLite storage for stories, passages, generations, ratings and opt-outs (schema in migrations.py)."""

from bot.store.migrations import SCHEMA_VERSION, SchemaError, schema_version
from bot.store.repository import GenerationRow, Interrupted, Store

__all__ = ["SCHEMA_VERSION", "GenerationRow", "Interrupted", "SchemaError", "Store", "schema_version"]
