"""What a story is: ordered passages by members or by the model, and its Markdown export. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field

from contract.store.status import AuthorKind, Status  # stored values: named with the schema


@dataclass(frozen=True)
class Member:
    """Whoever acts: a Discord user, or the person at the console. Ids are strings (Discord snowflakes)."""

    id: str
    name: str


@dataclass(frozen=True)
class Channel:
    """Where a story lives: one active story per channel or thread.

    `parent_id` is a thread's channel, so a per-channel model applies to its threads too.
    """

    id: str
    guild_id: str | None = None
    parent_id: str | None = None


@dataclass(frozen=True)
class Passage:
    id: int
    story_id: int
    position: int
    author_kind: AuthorKind
    author_id: str  # the writer, or for a model passage the member who asked for it
    author_name: str
    text: str
    generation_id: int | None = None  # model passages: the take shown
    alternatives: int = 1  # model passages: how many finished takes the slot holds
    take: int = 1  # model passages: which of them is shown (1-based, oldest first)
    revision: int = 1  # bumped by every change of the text shown (an edit, a take chosen)
    edited: bool = False  # the text shown is an edit of what its author (or the model) wrote

    @property
    def by_model(self) -> bool:
        return self.author_kind is AuthorKind.MODEL


@dataclass(frozen=True)
class Story:
    id: int
    channel_id: str
    title: str | None
    passages: tuple[Passage, ...] = field(default_factory=tuple)

    @property
    def last(self) -> Passage | None:
        return self.passages[-1] if self.passages else None

    @property
    def text(self) -> str:
        return "\n\n".join(p.text for p in self.passages)


@dataclass(frozen=True)
class StoryInfo:
    """A story as a channel's library lists it (`/story list`)."""

    id: int
    title: str | None
    channel_id: str  # where it lives: the channel, or a thread of it
    passages: int
    last_activity: float  # its newest passage, edit or creation
    active: bool  # the story of its channel or thread now (not archived)
    forked_from: int | None = None


@dataclass(frozen=True)
class Note:
    """A story's memory or author's note as set at one moment (the newest one is current)."""

    id: int
    kind: str  # "memory" or "note"
    text: str  # "" when cleared
    set_by: str = ""
    set_at: float = 0.0


@dataclass(frozen=True)
class Summary:
    """A rolling summary: every passage up to `upto_position` told in brief, for contexts that overflow."""

    id: int
    story_id: int
    upto_position: int
    passage_ids: tuple[int, ...]
    digest: str  # fingerprint of the covered passages when it was written
    status: Status
    model: str
    text: str | None = None
    error: str | None = None
    previous_id: int | None = None
    created_at: float = 0.0
    edited_by: str | None = None  # a writer's summary (`/story summary edit`), not the model's


MAX_PERSONA_NAME, MAX_PERSONA_CHARS, MAX_CAST = 60, 300, 20  # a persona's name, its description, a cast


@dataclass(frozen=True)
class Persona:
    """The character a member writes in a story (`/persona set`): the cast is every member's."""

    id: int
    member_id: str
    member_name: str
    name: str
    description: str


def to_markdown(story: Story, model_label: str = "the model") -> str:
    """The story as a Markdown document: the title, then each passage with a quiet attribution line."""
    lines = [f"# {story.title or 'Untitled story'}", ""]
    if not story.passages:
        lines += ["*(no passages yet)*", ""]
    for p in story.passages:
        who = f"{model_label} (asked by {p.author_name})" if p.by_model else p.author_name
        lines += [f"<!-- passage {p.position} by {_comment_safe(who)} -->", p.text.strip(), ""]
    return "\n".join(lines)


def _comment_safe(text: str) -> str:
    return text.replace("--", "- -")
