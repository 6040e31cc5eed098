"""The store's side of the story's world, on SQLite and PostgreSQL alike: settings rows (the newest
stands, a fork copies it), one persona per member, a writer's summary standing in for the model's, a
restore, and a model's summary that lands after an edit or a pause dropped with why."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bot.core import messages
from bot.core.events import StoryError
from bot.core.settings import StorySettings
from bot.core.story import Status

from .conftest import ALICE, BOB, HERE

DOC = Path(__file__).resolve().parents[2] / "docs" / "story-files.md"


def story_with_summary(store):
    story_id = store.ensure_story(HERE, ALICE)
    passages = [store.add_passage(story_id, ALICE, f"Passage {i}.") for i in range(1, 5)]
    sid = store.begin_summary(story_id, 2, passages[:2], None, "writer")
    assert store.finish_summary(sid, "The model's summary.")
    return story_id, passages


def test_settings_rows_the_newest_stands_and_a_fork_copies_it(engine_store):
    store = engine_store
    story_id, _ = story_with_summary(store)
    assert store.settings(story_id) == StorySettings()
    store.set_settings(story_id, StorySettings(model="writer-b", temperature=0.5), ALICE)
    latest = store.set_settings(story_id, StorySettings(temperature=0.7, length="long"), BOB)
    assert store.settings(story_id) == latest and latest.values() == {"temperature": 0.7, "length": "long"}
    store.set_persona(story_id, ALICE, "Mara", "A smuggler.", 20)
    fork = store.fork(story_id, 3, HERE, BOB, "Fork", archived=True)
    assert store.settings(fork).values() == latest.values()
    assert [(p.member_id, p.name) for p in store.personas(fork)] == [(ALICE.id, "Mara")]
    assert [s.text for s in store.summaries(fork)] == ["The model's summary."]


def test_one_persona_per_member_and_no_name_twice(engine_store):
    store = engine_store
    story_id = store.ensure_story(HERE, ALICE)
    store.set_persona(story_id, ALICE, "Mara", "A smuggler.", 2)
    store.set_persona(story_id, ALICE, "Mara", "A smuggler in debt.", 2)  # replaces hers
    with pytest.raises(StoryError, match="Alice plays Mara already"):
        store.set_persona(story_id, BOB, "MARA", "Another.", 2)
    store.set_persona(story_id, BOB, "Jon", "A fisherman.", 2)
    with pytest.raises(StoryError, match="the cast is full"):
        store.set_persona(story_id, type(BOB)("1003", "Cy"), "Cy", "A cook.", 2)
    assert [(p.name, p.description) for p in store.personas(story_id)] == [
        ("Mara", "A smuggler in debt."),
        ("Jon", "A fisherman."),
    ]
    assert store.clear_persona(story_id, BOB) and not store.clear_persona(story_id, BOB)


def test_an_edit_stands_a_restore_brings_the_previous_back_and_a_late_summary_is_dropped(engine_store):
    store = engine_store
    story_id, passages = story_with_summary(store)
    [model] = store.summaries(story_id)
    late = store.begin_summary(story_id, 3, passages[:3], model.id, "writer")  # being written...
    edit = store.edit_summary(story_id, "A writer's summary.", BOB, seen=model.id)
    assert edit.edited_by == BOB.id and edit.passage_ids == model.passage_ids
    assert not store.finish_summary(late, "The model's late summary.")  # ...the edit wins
    dropped = next(s for s in store.summaries(story_id) if s.id == late)
    assert dropped.status == Status.DISCARDED and dropped.error == messages.SUMMARY_EDITED
    with pytest.raises(StoryError, match="changed while you were editing it"):
        store.edit_summary(story_id, "Stale.", ALICE, seen=model.id)
    assert store.restore_summary(story_id, ALICE).id == model.id
    with pytest.raises(StoryError, match="no earlier version"):
        store.restore_summary(story_id, ALICE)

    store.pause_summaries(story_id, True)
    paused = store.begin_summary(story_id, 3, passages[:3], model.id, "writer")
    assert not store.finish_summary(paused, "Written while paused.")
    assert store.summaries(story_id)[0].error == messages.SUMMARY_PAUSED
    store.pause_summaries(story_id, False)
    assert not store.summary_paused(story_id)


def test_a_story_file_imports_whole_and_exports_as_it_came(engine_store):
    from bot.core import storyfile
    from bot.core.lorefiles import Candidate

    store = engine_store
    document = json.loads(re.search(r"```json\n(.*?)\n```", DOC.read_text(), re.S).group(1))
    doc = storyfile.read(document, max_passage_chars=6000, max_memory_chars=2000, max_note_chars=300)
    lore = [
        Candidate(1, "Mara", ("Mara", "smuggler"), "Mara owes a boat."),
        Candidate(2, "Mara", ("boat",), "Again."),
    ]
    story_id, outcomes = store.import_story(
        HERE, BOB, doc, StorySettings(temperature=0.7, length="medium"), lore
    )
    assert [o.action for o in outcomes] == ["kept", "skipped"]
    assert store.story_document(story_id).model_dump() == document
    assert store.active_story_id(HERE.id) == story_id
    [model_passage] = [p for p in store.passages(story_id) if p.by_model]
    assert model_passage.edited and model_passage.take == 1
