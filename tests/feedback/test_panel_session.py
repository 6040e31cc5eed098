"""The demo's simulated writers at the bot's console (demo/chain.writers_session) on the stand-in Ollama:
what they do to the takes lands in the store, and `feedback export` turns every kind of action into a
DPO pair."""

from __future__ import annotations

import pytest

from bot.core.service import Limits, StoryService
from bot.llm import OllamaBackend
from bot.store import Store
from contract import prompt
from demo import chain
from tests.families import writer_template

from .conftest import rows_of

pytestmark = pytest.mark.timeout(60)
WINDOW = {
    "context": "Gregor woke to find the room dark. Grete knocked at the door and called to him twice. "
    "Then the father came, and Grete stepped back. The clock struck seven.",
    "continuation": "The door stayed shut. Nothing moved in the hall for a long while after that.",
}


async def _session(fake_ollama, db, outputs: list[str]):
    replies = iter(outputs)
    fake_ollama.add_model("writer", template=writer_template())
    fake_ollama.script("writer", text=lambda _body: next(replies))
    store = Store(db)
    backend = OllamaBackend(fake_ollama.url)
    service = StoryService(store, backend, lambda channel: "writer", limits=Limits())
    try:
        return await chain.writers_session(service, [WINDOW], asked=40)
    finally:
        await service.aclose()
        await backend.close()
        store.close()


async def test_writers_erase_two_poor_takes_ask_again_and_fix_the_new_one(fake_ollama, db):
    poor = prompt.render_target("Grete waits.", "It rained.")  # in format, too short, names no one
    retried = prompt.render_target("Grete waits.", "She sat down by the window.")
    transcript, actions = await _session(fake_ollama, db, [poor, poor.replace("rained", "snowed"), retried])

    assert actions == {"rating": 3, "erase": 1, "edit": 1}
    assert "> /erase 2" in transcript and "> /edit 3 Grete sat down by the window." in transcript
    rows, report = rows_of(db, "dpo")
    fixed = prompt.render_target("Grete waits.", "Grete sat down by the window. " + WINDOW["continuation"])
    assert [(r["source"]["action"], r["chosen"], r["rejected"]) for r in rows] == [
        ("edit", fixed, retried),
        ("erasure", fixed, poor.replace("rained", "snowed")),  # the take the erased passage showed
    ]
    assert report.actions == {"edits": 1, "erasures": 1}


async def test_a_liked_take_over_a_disliked_one_is_picked(fake_ollama, db):
    liked = prompt.render_target("Grete waits.", "Grete opened the door and looked in at him. " * 3)
    _, actions = await _session(fake_ollama, db, [liked, prompt.render_target("He waits.", "It rained.")])
    assert actions == {"rating": 2, "take": 1}
    rows, report = rows_of(db, "dpo")
    assert [(r["source"]["action"], r["chosen"]) for r in rows] == [("take", liked)]
    assert report.pairs_left_out == {}  # the rating pair is the same pair, written once
    assert report.duplicates == 1


async def test_writers_ask_again_until_a_take_they_like_and_each_erased_take_is_rejected_under_it(
    fake_ollama, db
):
    poor = prompt.render_target("Grete waits.", "It rained.")
    snowed = poor.replace("rained", "snowed")
    liked = prompt.render_target("Grete waits.", "Grete opened the door and looked in at him. " * 3)
    transcript, actions = await _session(fake_ollama, db, [poor, snowed, "no tags at all", liked])

    assert actions == {"rating": 4, "erase": 2, "keep": 1}
    assert "> /erase 2" in transcript and "> /erase 3" in transcript
    rows, _ = rows_of(db, "dpo")
    assert [(r["source"]["action"], r["chosen"], r["rejected"]) for r in rows] == [
        ("erasure", liked, snowed),  # the take the erased passage showed, in format
        ("erasure", liked, "no tags at all"),  # out of format: as the model wrote it
    ]
