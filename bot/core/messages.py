"""Sentences members read that more than one module says, each written once. Pure.

The store keeps some of them as a generation's or a summary's error, and the drivers show that error;
a driver that sees the bot stop shows the same sentence the store records for it.
"""

from __future__ import annotations

STOPPED = "the bot stopped while the model was writing this passage; nothing was added: ask again"
SUMMARY_STOPPED = "the bot stopped while the summary was written"
CANCELLED = "cancelled before the model finished"  # the error kept when the driver went away
STORY_CHANGED = "the story changed while the model was writing"
NOT_IN_STORY = "that passage is not part of this channel's story"  # a button from another story or channel
SUMMARY_STORY_CHANGED = "the story changed while the summary was written"
SUMMARY_EDITED = (
    "a writer edited the summary while the model was writing a new one: the edit wins, and the model's "
    "summary was dropped"
)
SUMMARY_PAUSED = "the summaries were paused while this one was written, so it was dropped"


def failure_shown(error: str | None) -> str:
    """What a failed generation's messages say: its error, or, when it has none to tell (the bot stopped,
    the driver went away), that the bot stopped and the member may ask again."""
    return STOPPED if error is None or error == CANCELLED else error


def get_the_model(model: str) -> str:
    """How to give a server the model it lacks (a single Ollama server, or every one of a pool)."""
    return f"(`ollama create {model} -f <Modelfile>` or `ollama pull {model}`), or set STORY_BOT_MODEL"
