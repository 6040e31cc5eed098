"""The store's side of long stories: migration 2, memory history, the lorebook under concurrent edits."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from bot.core import lore as lorebook
from bot.core.lore import LoreChange, LoreConflict, LoreEntry, new_entry
from bot.core.story import Channel, Member
from bot.store import SCHEMA_VERSION, Store, schema_version
from contract.store.migrations import MIGRATIONS, _statements

ALICE, BOB = Member("1", "Alice"), Member("2", "Bob")
ROOM = Channel("c1", "g1")


@pytest.fixture
def store(engine_store):
    return engine_store


def test_a_version_1_database_is_migrated_and_keeps_its_stories(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for statement in _statements(MIGRATIONS[0]):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO stories (channel_id, created_by, created_at) VALUES ('c1', '1', 0)")
    conn.commit()
    conn.close()
    store = Store(path)
    assert schema_version(store.conn) == SCHEMA_VERSION >= 2
    sid = store.active_story_id("c1")
    assert sid and store.note(sid, "memory") is None and store.lore_entries(sid) == []
    store.close()


def test_memory_is_kept_as_a_history(store):
    sid = store.ensure_story(ROOM, ALICE)
    first = store.set_note(sid, "memory", "Grim.", ALICE)
    second = store.set_note(sid, "memory", "Cheerful.", BOB)
    assert store.note(sid, "memory") == second
    [(kept,)] = store.conn.execute("SELECT text FROM story_notes WHERE id = ?", (first.id,)).fetchall()
    assert kept == "Grim."  # the row a generation's context named stays
    assert store.note(sid, "note") is None


def test_names_and_keywords_are_unique_and_stale_edits_are_refused(store):
    sid = store.ensure_story(ROOM, ALICE)
    mara = store.add_lore(sid, new_entry(LoreChange("Mara", ("Mara", "smuggler"), "A smuggler."), ALICE.id))
    with pytest.raises(LoreConflict, match="already has a lore entry named 'MARA'"):
        store.add_lore(sid, new_entry(LoreChange("MARA", ("boat",), "x"), BOB.id))
    with pytest.raises(LoreConflict, match="'Smuggler' already brings in the entry 'Mara'"):
        store.add_lore(sid, new_entry(LoreChange("Jon", ("Jon", "Smuggler"), "x"), BOB.id))
    edited = store.edit_lore(sid, BOB, "mara", LoreChange(text="A smuggler with a debt."), mara.version)
    assert edited.version == 2 and edited.keywords == mara.keywords  # unnamed fields kept
    with pytest.raises(LoreConflict, match="changed meanwhile.*nothing was overwritten"):
        store.edit_lore(sid, ALICE, "Mara", LoreChange(text="Alice's text, from version 1"), 1)
    [now] = store.lore_entries(sid)
    assert now.text == "A smuggler with a debt." and now.version == 2 and now.updated_by == BOB.id
    store.remove_lore(sid, "Mara")
    assert store.lore_entries(sid) == []
    back = new_entry(LoreChange("Mara", ("Mara",), "Back."), BOB.id)
    assert store.add_lore(sid, back).version == 1  # the name is free
    with pytest.raises(LoreConflict, match="no lore entry named 'Nobody'.*entries: Mara"):
        store.remove_lore(sid, "Nobody")


def test_the_lore_rules_hold_without_a_store():
    entries = [LoreEntry(i, f"Entry {i}", (f"word{i}",), "x", version=3) for i in range(lorebook.MAX_ENTRIES)]
    with pytest.raises(LoreConflict, match="holds 100 entries, the limit"):
        lorebook.check_add(entries, "One more", ("new",))
    lorebook.check_add(entries[:-1], "One more", ("new",))  # room for one
    edited = lorebook.edit(entries, BOB.id, "entry 7", LoreChange(keywords=("word7", "seven")), 3)
    assert (edited.id, edited.name, edited.version, edited.updated_by) == (7, "Entry 7", 4, BOB.id)
    with pytest.raises(LoreConflict, match="'word8' already brings in the entry 'Entry 8'"):
        lorebook.edit(entries, BOB.id, "Entry 7", LoreChange(keywords=("word8",)))
    with pytest.raises(LoreConflict, match="changed meanwhile"):
        lorebook.find(entries, "Entry 7", version=2)


def test_two_members_editing_at_once_lose_nothing(tmp_path):
    """Two processes' worth of connections race on one entry: one edit lands, the other is told."""
    path = tmp_path / "race.db"
    setup = Store(path)
    sid = setup.ensure_story(ROOM, ALICE)
    entry = setup.add_lore(sid, new_entry(LoreChange("Mara", ("Mara",), "v1"), ALICE.id))
    stores = [Store(path), Store(path)]
    barrier, results = threading.Barrier(2), {}

    def edit(i: int, member: Member) -> None:
        barrier.wait()
        try:
            text = f"by {member.name}"
            results[i] = stores[i].edit_lore(sid, member, "Mara", LoreChange(text=text), entry.version)
        except LoreConflict as exc:
            results[i] = exc

    threads = [threading.Thread(target=edit, args=(i, m)) for i, m in enumerate((ALICE, BOB))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    conflicts = [r for r in results.values() if isinstance(r, LoreConflict)]
    [won] = [r for r in results.values() if not isinstance(r, LoreConflict)]
    assert len(conflicts) == 1 and "changed meanwhile" in str(conflicts[0])
    [stored] = setup.lore_entries(sid)
    assert stored.text == won.text and stored.version == 2
    for s in (*stores, setup):
        s.close()


def test_a_summary_left_running_by_a_dead_process_is_marked_failed(store):
    sid = store.ensure_story(ROOM, ALICE)
    passages = [store.add_passage(sid, ALICE, f"Passage {i}.") for i in range(3)]
    running = store.begin_summary(sid, 2, passages[:2], None, "writer")
    store.recover()
    [row] = store.summaries(sid)
    assert row.id == running and row.status == "failed" and "stopped" in row.error
    done = store.begin_summary(sid, 2, passages[:2], None, "writer")
    assert store.finish_summary(done, "In brief.") and store.summaries(sid)[0].status == "done"
    stale = store.begin_summary(sid, 3, passages, done, "writer")
    store.remove_passages([passages[2].id])  # undone while the summary was written
    assert not store.finish_summary(stale, "Too late.") and store.summaries(sid)[0].status == "discarded"


def test_settings_reach_the_limits():
    from bot.config import Settings

    limits = Settings(summary_model="plain", max_memory_chars=500, summary_timeout=9).limits()
    assert (limits.summary_model, limits.max_memory_chars, limits.summary_timeout) == ("plain", 500, 9)
