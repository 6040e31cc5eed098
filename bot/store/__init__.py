"""Storage for stories, passages, generations, ratings and opt-outs on SQLite or PostgreSQL (schema in
migrations.py)."""

from bot.store.repository import Delivery, GenerationRow, Interrupted, Store
from contract.store.migrations import SCHEMA_VERSION, SchemaError, schema_version

__all__ = [
    "SCHEMA_VERSION", "Delivery", "GenerationRow", "Interrupted", "SchemaError", "Store", "schema_version",
]  # fmt: skip
