"""What the story operations answer: the events of a generation, a rating's tally, and the refusal.

A generation (continue, regenerate) is an async iterator of :data:`Event`; a quick operation returns a
value or raises :class:`StoryError`, whose message is meant for the channel.
"""

from __future__ import annotations

from dataclasses import dataclass

from .story import Passage


class StoryError(Exception):
    """An operation refused; the message says why and what to do instead."""


@dataclass(frozen=True)
class Queued:
    position: int  # how many generations are ahead
    waiting_for: str  # "story": another passage of this story; "server": the model's free slots


@dataclass(frozen=True)
class Started:
    generation_id: int
    model: str


@dataclass(frozen=True)
class Delta:
    answer: str  # the whole answer so far
    reasoning: str


@dataclass(frozen=True)
class Done:
    passage: Passage
    generation_id: int
    reasoning: str
    issues: tuple[str, ...] = ()


@dataclass(frozen=True)
class Failed:
    message: str
    generation_id: int | None = None


Event = Queued | Started | Delta | Done | Failed


@dataclass(frozen=True)
class Tally:
    up: int
    down: int
    value: int  # the member's own rating, as now recorded
