"""The story's history in the store, on SQLite and PostgreSQL (engine_store): the races each have one
outcome (bot/core/history.py), summaries follow edits, forks carry the story's parts, takes are new draws."""

from __future__ import annotations

import json

import pytest

from bot.core import summary as summaries
from bot.core.events import StoryError
from bot.core.lore import LoreChange, new_entry
from bot.core.story import Channel

from .conftest import ALICE, BOB, HERE, collect

THREAD = Channel("t1", HERE.guild_id, HERE.id)


def begin(store, sid: int, context: list[int], slot: int | None = None) -> int:
    return store.begin_generation(
        sid,
        ALICE,
        "writer",
        user_text="u",
        prompt="p",
        raw=False,
        options={},
        direction=None,
        length=None,
        context={"passage_ids": context},
        slot=slot,
    )


def finish(store, gen: int, answer: str):
    return store.finish_generation(
        gen, requested_by=ALICE, output=answer, reasoning="", answer=answer, issues=[], stats={}
    )


def test_two_members_editing_one_passage_the_second_is_refused_and_nothing_is_lost(engine_store):
    store = engine_store
    sid = store.ensure_story(HERE, ALICE)
    p = store.add_passage(sid, ALICE, "Once.")
    seen = store.passage_at(sid, 1).revision  # both opened the form on this revision
    store.edit_passage(sid, 1, BOB, "Twice.", seen, may_manage=True)
    with pytest.raises(StoryError, match="changed while you were editing it"):
        store.edit_passage(sid, 1, ALICE, "Thrice.", seen, may_manage=False)
    assert [(v[0], v[2], v[3]) for v in store.versions(p.id)] == [
        (1, "Once.", ALICE.id),
        (2, "Twice.", BOB.id),
    ]
    assert store.passage_at(sid, 1).text == "Twice." and store.passage_at(sid, 1).edited
    with pytest.raises(StoryError, match="needs the Manage Messages permission"):
        store.edit_passage(sid, 1, BOB, "Mine now.", None, may_manage=False)  # Alice's passage


def test_an_edit_while_a_passage_is_written_lets_it_land_and_an_erase_discards_it(engine_store):
    store = engine_store
    sid = store.ensure_story(HERE, ALICE)
    p = store.add_passage(sid, ALICE, "Once.")
    gen = begin(store, sid, [p.id])
    store.edit_passage(sid, 1, ALICE, "Once, edited.", None, may_manage=False)
    landed = finish(store, gen, "Then rain.")
    assert landed is not None and landed.position == 2
    gen = begin(store, sid, [p.id, landed.id])
    store.erase(sid, 2, ALICE)
    assert finish(store, gen, "Lost.") is None  # written from an erased passage: discarded
    with pytest.raises(StoryError, match="passage 2 was taken out"):
        store.fork(sid, 2, THREAD, ALICE, None, archived=False)  # a fork of an erased passage


def test_a_take_chosen_while_a_regeneration_streams_stands_until_the_new_take_lands(engine_store):
    store = engine_store
    sid = store.ensure_story(HERE, ALICE)
    p1 = store.add_passage(sid, ALICE, "Once.")
    slot = finish(store, begin(store, sid, [p1.id]), "A.")
    second = begin(store, sid, [p1.id], slot=slot.id)
    finish(store, second, "B.")
    running = begin(store, sid, [p1.id], slot=slot.id)
    chosen = store.choose_take(sid, 2, BOB, 1)
    assert (chosen.text, chosen.take, chosen.alternatives) == ("A.", 1, 2)
    landed = finish(store, running, "C.")
    assert (landed.text, landed.take, landed.alternatives) == ("C.", 3, 3)
    assert store.takes(slot.id) == [slot.generation_id, second, running]
    rows = store.conn.execute("SELECT generation_id, chosen_by FROM take_choices").fetchall()
    assert [tuple(r) for r in rows] == [(slot.generation_id, BOB.id)]
    with pytest.raises(StoryError, match="has takes 1 to 3"):
        store.choose_take(sid, 2, BOB, 4)


def test_redo_only_while_nothing_was_added_and_only_the_newest_run(engine_store):
    store = engine_store
    sid = store.ensure_story(HERE, ALICE)
    for text in ("One.", "Two.", "Three."):
        store.add_passage(sid, ALICE, text)
    store.erase(sid, 3, ALICE)
    store.erase(sid, 2, ALICE)
    assert [p.text for p in store.redo(sid, BOB)] == ["Two."]  # the newest run first
    with pytest.raises(StoryError, match="no erased run to bring back"):
        store.redo(sid, BOB)  # the older run is not reached back for
    store.erase(sid, 2, ALICE)
    store.add_passage(sid, ALICE, "Four.")
    with pytest.raises(StoryError, match="passages were added after the erase"):
        store.redo(sid, BOB)


def test_a_summary_no_longer_counts_once_a_passage_it_covers_is_edited_and_a_fork_carries_it(engine_store):
    store = engine_store
    sid = store.ensure_story(HERE, ALICE)
    ps = [store.add_passage(sid, ALICE, t) for t in ("One.", "Two.", "Three.")]
    s = store.begin_summary(sid, 2, ps[:2], None, "writer")
    assert store.finish_summary(s, "One and two, in brief.")
    store.set_note(sid, "memory", "A grim tale.", ALICE)
    store.add_lore(sid, new_entry(LoreChange("Mara", ("Mara",), "Mara keeps the bell."), ALICE.id))
    fork_id = store.fork(sid, 3, THREAD, BOB, "Fork", archived=False)
    fork = store.story(fork_id)
    current = summaries.current(store.summaries(fork_id), fork.passages)
    assert current is not None and current.text == "One and two, in brief."
    assert json.loads(
        store.conn.execute("SELECT passage_ids FROM summaries WHERE story_id = ?", (fork_id,)).fetchone()[0]
    ) == [p.id for p in fork.passages[:2]]
    assert (
        store.note(fork_id, "memory").text == "A grim tale." and store.lore_entries(fork_id)[0].name == "Mara"
    )
    assert store.active_story_id(HERE.id) == sid and store.active_story_id(THREAD.id) == fork_id
    store.edit_passage(sid, 2, ALICE, "Two, edited.", None, may_manage=False)
    assert summaries.current(store.summaries(sid), store.passages(sid)) is None  # the edit outdated it
    assert (
        summaries.current(store.summaries(fork_id), store.passages(fork_id)) is not None
    )  # the fork's stays
    assert [(i.id, i.channel_id, i.passages, i.forked_from) for i in store.library(HERE.id)] == [
        (sid, HERE.id, 3, None),
        (fork_id, THREAD.id, 3, sid),
    ]


async def test_each_take_is_a_new_draw_with_its_own_recorded_seed(make_service, ollama_server):
    service = make_service("writer", options={"seed": 42})
    service.write(HERE, ALICE, "Once.")
    await collect(service.continue_story(HERE, ALICE))
    await collect(service.regenerate(HERE, ALICE))
    await collect(service.regenerate(HERE, BOB))
    sent = [body["options"]["seed"] for body in ollama_server.calls("/api/generate")]
    assert sent == [42, 43, 44]
    rows = service.store.conn.execute("SELECT options FROM generations ORDER BY id").fetchall()
    assert [json.loads(r[0])["seed"] for r in rows] == [42, 43, 44]
