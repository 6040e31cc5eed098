"""The values the schema stores in its enumerated columns (the CHECK lists in migrations.py), named once.

They are `StrEnum`s whose values are the stored strings: a member equals its string, binds as one on
both engines, and stands for itself in SQL text (`f"status = '{Status.RUNNING}'"` keeps the literal the
partial indexes are written against). The bot writes them; the pipeline's feedback export reads them.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """Where a generation or a rolling summary stands (`generations.status`, `summaries.status`)."""

    RUNNING = "running"
    DONE = "done"  # finished, and it entered the story
    FAILED = "failed"
    DISCARDED = "discarded"  # finished, but the story had changed under it: kept, never shown


class DeliveryState(StrEnum):
    """Whether a generation's driver messages show its final state (`generations.delivery`; NULL when
    there are none to keep up to date, as on the console)."""

    PENDING = "pending"
    DONE = "done"
    LOST = "lost"  # they never can: deleted, or no access


class AuthorKind(StrEnum):
    """Who wrote a passage (`passages.author_kind`)."""

    MEMBER = "member"
    MODEL = "model"


__all__ = ["AuthorKind", "DeliveryState", "Status"]
