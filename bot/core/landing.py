"""Whether work the model finished may still enter the story. Pure; the store asks it inside the
transaction that records the work, so nothing can change the story between the question and the write.

The model writes from a snapshot of the story (the passages its context was built from). Members may
undo, reset or start a new story meanwhile; what was written from passages that are gone no longer fits
and is kept aside ('discarded') instead of entering the story.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from .story import Passage, Summary
from .summary import digest


def passage_lands(needed: Iterable[int], present: Collection[int], story_active: bool) -> bool:
    """A generation's answer enters the story if the story is still the channel's and still holds every
    passage in `needed` (those its context used, and for a regeneration the passage it replaces);
    `present` is which of them are still in the story."""
    return story_active and all(i in present for i in needed)


def summary_lands(summary: Summary, covered: Iterable[Passage], story_active: bool) -> bool:
    """A summary is kept if the story is still the channel's and the passages it covers that are still
    in the story (`covered`, in story order) are exactly those it was written from, unchanged."""
    return story_active and digest(covered) == summary.digest
