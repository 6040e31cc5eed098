"""The story's history survives a kill -9 (real OS processes, tests/bot/process_worker.py), on SQLite and
PostgreSQL: edits, takes chosen and an erased run made before a process is killed mid-passage stay as
they were; the next process fails the dead one's passage, redoes the erased run, and the prompt it sends
is the story as shown (the edit, the chosen take, the passages brought back)."""

from __future__ import annotations

import signal

import pytest

from bot.core.service import StoryService
from bot.core.story import Member
from bot.llm import OllamaBackend
from bot.store import Store

from .discord_world import model_text
from .test_two_processes import HERE, said, spawn, until

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_errors_logged")]
ALICE, BOB = Member("1", "Alice"), Member("2", "Bob")


def take(store: Store, story_id: int, context: list[int], answer: str, slot: int | None = None):
    gen = store.begin_generation(
        story_id,
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
    return store.finish_generation(
        gen, requested_by=ALICE, output=answer, reasoning="", answer=answer, issues=[], stats={}
    )


def shaped(db) -> dict:
    """A story of four passages: passage 2 has two takes, the first chosen and then edited; 3.. erased."""
    store = Store(db)
    sid = store.ensure_story(HERE, ALICE)
    p1 = store.add_passage(sid, ALICE, "The bell rang.")
    p2 = take(store, sid, [p1.id], "Take one.")
    take(store, sid, [p1.id], "Take two.", slot=p2.id)
    store.choose_take(sid, 2, BOB, 1)
    store.edit_passage(sid, 2, ALICE, "Mara rang it again.", revision=None, may_manage=False)
    store.add_passage(sid, BOB, "The fog lifted.")
    store.add_passage(sid, BOB, "Boats came in.")
    store.erase(sid, 3, BOB)
    ids = {"story": sid, "p2": p2.id}
    store.close()
    return ids


def history(store: Store, story_id: int) -> tuple:
    rows = store.conn.execute
    return (
        rows("SELECT version, text, edited_by FROM passage_versions ORDER BY version").fetchall(),
        rows("SELECT chosen_by FROM take_choices").fetchall(),
        rows("SELECT from_position, erased_by FROM erasures WHERE story_id = ?", (story_id,)).fetchall(),
        [p.text for p in store.passages(story_id)],
    )


async def test_the_history_survives_a_kill_mid_passage_and_the_next_prompt_follows_it(
    ollama_server, shared_db
):
    db = shared_db
    ids = shaped(db)
    store = Store(db)
    before = history(store, ids["story"])
    assert [tuple(r) for r in before[0]] == [(1, "Take one.", "1"), (2, "Mara rang it again.", "1")]
    assert before[3] == ["The bell rang.", "Mara rang it again."]

    ollama_server.script("writer", text=model_text("Slowly. " * 200), tokens_per_second=5)
    doomed = await spawn("continue", db, ollama_server.url, HERE.id)
    lost = (await until(doomed, "started"))["generation_id"]
    doomed.send_signal(signal.SIGKILL)
    await doomed.wait()
    assert history(store, ids["story"]) == before  # nothing of it was touched

    # A new process: the dead one's passage is failed at once, and the erased run comes back.
    service = StoryService(store, OllamaBackend(ollama_server.url), lambda channel: "writer")
    back = service.redo(HERE, ALICE)
    assert [p.text for p in back] == ["The fog lifted.", "Boats came in."]
    assert store.generation(lost).status == "failed"
    assert service.show(HERE).passages[1].text == "Mara rang it again."  # take 1, as edited
    ollama_server.script("writer", text=model_text("The tide came in."))
    second = await spawn("continue", db, ollama_server.url, HERE.id)
    assert (await said(second))["lost"] == []
    assert (await until(second, "done"))["position"] == 5
    await second.wait()
    sent = ollama_server.calls("/api/generate")[-1]["prompt"]
    assert "Mara rang it again." in sent and "Boats came in." in sent
    assert "Take one." not in sent and "Take two." not in sent
    assert store.conn.execute("SELECT redone_by FROM erasures").fetchall()[0][0] == "1"
    await service.aclose()
    await service.backend.close()
    store.close()
