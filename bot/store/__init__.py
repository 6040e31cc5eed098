"""Storage for stories, passages, generations, ratings and opt-outs on SQLite or PostgreSQL (schema in
contract/store/migrations.py): the Store's operations (repository.py), each a unit of work (unit.py)."""

from bot.store.repository import Delivery, Interrupted, Store
from bot.store.unit import GenerationRow
from contract.store.migrations import SCHEMA_VERSION, SchemaError, schema_version

__all__ = [
    "SCHEMA_VERSION",
    "Delivery",
    "GenerationRow",
    "Interrupted",
    "SchemaError",
    "Store",
    "schema_version",
]
