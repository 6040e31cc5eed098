"""The rules of a story's history: who may edit a passage, which take a member may choose, when an erased
run may come back, where a fork may start. Pure; the store asks them inside the transaction that writes,
so two members acting at once are decided by whoever commits first, and the other is told why.

Races, decided once here (docs/bot.md says the same):

- two members edit one passage: each edit names the revision it was made from (a Discord form carries
  it); the second is refused (:func:`check_revision`) and told to look again; both versions are kept.
- an edit while a passage is being written (`/continue`, a regeneration): the passage still lands. The
  model wrote from the text before the edit (its generation record keeps that context); the next passage
  reads the edit. Only passages taken out (undone, erased, reset) discard a generation (landing.py).
- a take chosen while a regeneration streams: the choice stands until the new take lands, which then
  shows (the newest take), with the chosen one still a take to go back to.
- a fork from a passage that is erased or undone: refused, saying /redo brings it back.
"""

from __future__ import annotations

from .events import StoryError
from .story import Passage

MODAL_TEXT_LIMIT = 4000  # Discord's most characters in one text input of a form


def check_editable(passage: Passage, member_id: str, may_manage: bool) -> None:
    """The passage's author, or for a model passage the member who asked for it, or anyone with the
    Manage Messages permission may edit it."""
    if passage.author_id != member_id and not may_manage:
        whose = f"asked for by {passage.author_name}" if passage.by_model else f"{passage.author_name}'s"
        raise StoryError(
            f"passage {passage.position} is {whose}: editing another member's passage needs the Manage "
            "Messages permission"
        )


def check_revision(passage: Passage, seen: int | None) -> None:
    """An edit or take made from the revision `seen` (None: whatever is there now) must still be it."""
    if seen is not None and passage.revision != seen:
        raise StoryError(
            f"passage {passage.position} changed while you were editing it (another member's edit or "
            "take): nothing was overwritten; look at it again and redo your change"
        )


def check_text(text: str, limit: int) -> str:
    if not text:
        raise StoryError("the passage is empty: to take it out use /story undo or /story erase")
    if len(text) > limit:
        raise StoryError(
            f"the passage has {len(text):,} characters, over the limit of {limit:,}: shorten it, or "
            "write the rest as a new passage"
        )
    return text


def take_wanted(passage: Passage, takes: list[int], k: int) -> int:
    """The generation id of take `k` (1-based) of a model passage whose finished takes are `takes`."""
    if not passage.by_model or not takes:
        raise StoryError(f"passage {passage.position} is a member's: only model passages have takes")
    if not 1 <= k <= len(takes):
        raise StoryError(f"passage {passage.position} has takes 1 to {len(takes)}: choose one of them")
    return takes[k - 1]


def missing_passage(position: int, present: bool | None) -> StoryError:
    """What to say when a command names a passage the story does not show (`present`: None when it
    never existed, False when it was taken out)."""
    if present is None:
        return StoryError(f"there is no passage {position} in this story: `/story show` numbers them")
    return StoryError(
        f"passage {position} was taken out of the story (undone or erased): `/story redo` brings back "
        "the newest erased run; choose a passage the story shows"
    )
