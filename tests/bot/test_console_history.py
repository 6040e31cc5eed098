"""Writers shape the story from the console: several members edit a model passage, flip between three
takes and pick the second, erase the last two passages and redo them, fork at passage 3, list and reopen
a story; after each step the database, what the console shows and the next prompt agree."""

from __future__ import annotations

import io
import itertools
import sqlite3

import pytest

from bot.console import CHANNEL, Console
from bot.core.story import Member

from .discord_world import model_text

pytestmark = pytest.mark.timeout(60)
ALICE, BOB = Member("console:alice", "Alice"), Member("console:bob", "Bob")


def takes_script(ollama_server, model: str = "writer"):
    """Each request answers a new take: "Take 1.", "Take 2.", ..."""
    n = itertools.count(1)
    ollama_server.script(model, text=lambda body: model_text(f"Take {next(n)} of the harbour."))


class Session:
    """Two members at the console on one service, and what each one's console printed."""

    def __init__(self, service):
        self.service = service
        self.outs = {m.id: io.StringIO() for m in (ALICE, BOB)}
        self.consoles = {m.id: Console(service, self.outs[m.id], m) for m in (ALICE, BOB)}

    async def do(self, who: Member, line: str) -> str:
        out = self.outs[who.id]
        start = len(out.getvalue())
        await self.consoles[who.id].handle(line)
        return out.getvalue()[start:]

    async def prompt(self) -> str:
        """The next prompt as `/story context` shows it (what the model will receive)."""
        return (await self.service.context_preview(CHANNEL, ALICE)).user_text


def rows(service, query: str, *args) -> list[tuple]:
    return [tuple(r) for r in service.store.conn.execute(query, args).fetchall()]


async def test_a_console_session_edits_takes_erases_redoes_forks_and_reopens(make_service, ollama_server):
    takes_script(ollama_server)
    service = make_service("writer")
    s = Session(service)
    await s.do(ALICE, "The harbour slept under the fog.")
    await s.do(ALICE, "/story memory A quiet harbour town; past tense.")
    await s.do(ALICE, "/lore add Mara | Mara | Mara is the harbour master.")
    assert "(passage 2 by the model" in await s.do(BOB, "/continue")

    # Bob asked for passage 2, so he may edit it; the edit is what the story and the next prompt read.
    said = await s.do(BOB, "/edit 2 Mara walked the harbour at dawn.")
    assert "(passage 2 edited: Mara walked the harbour at dawn.)" in said
    assert "[2 · model · edited] Mara walked the harbour at dawn." in await s.do(ALICE, "/show")
    assert "Mara walked the harbour at dawn." in await s.prompt()
    assert "Take 1 of the harbour." not in await s.prompt()
    assert "Mara is the harbour master." in await s.prompt()  # the lore follows the edit's keyword
    [(gen1,)] = rows(service, "SELECT id FROM generations")
    assert rows(service, "SELECT version, generation_id, text, edited_by FROM passage_versions") == [
        (1, gen1, "Take 1 of the harbour.", BOB.id),
        (2, gen1, "Mara walked the harbour at dawn.", BOB.id),
    ]
    assert rows(service, "SELECT answer FROM generations") == [("Take 1 of the harbour.",)]

    # Three takes of passage 4; Alice picks the second.
    await s.do(ALICE, "The bell rang twice.")
    await s.do(ALICE, "/continue")
    await s.do(BOB, "/regenerate")
    assert "take 3/3" in await s.do(ALICE, "/regenerate")
    listed = await s.do(BOB, "/takes")
    assert "▶ take 3/3: Take 4 of the harbour." in listed and "  take 1/3: Take 2 of the harbour." in listed
    assert "(passage 4 shows take 2/3: Take 3 of the harbour.)" in await s.do(ALICE, "/take 2")
    assert "[4 · model · take 2/3] Take 3 of the harbour." in await s.do(BOB, "/show")
    takes = [g for (g,) in rows(service, "SELECT id FROM generations WHERE id > ? ORDER BY id", gen1)]
    assert rows(service, "SELECT generation_id, chosen_by FROM take_choices") == [(takes[1], ALICE.id)]
    assert "Take 3 of the harbour." in await s.prompt()
    assert "Take 4 of the harbour." not in await s.prompt()

    # Erase the last two passages, then redo them: the chosen take comes back with them.
    assert "(erased passages 3–4: /redo brings them back)" in await s.do(ALICE, "/erase 3")
    assert "The bell rang twice." not in await s.prompt()
    assert rows(service, "SELECT count(*) FROM passages WHERE removed_at IS NULL") == [(2,)]
    [(erasure, frm, by, redone)] = rows(
        service, "SELECT id, from_position, erased_by, redone_at FROM erasures"
    )
    assert (frm, by, redone) == (3, ALICE.id, None)
    assert rows(service, "SELECT position FROM passages WHERE erasure_id = ? ORDER BY position", erasure) == [
        (3,),
        (4,),
    ]
    assert "(brought back 2 passages, 3–4)" in await s.do(BOB, "/redo")
    assert "[4 · model · take 2/3] Take 3 of the harbour." in await s.do(ALICE, "/show")
    assert "The bell rang twice." in await s.prompt()
    assert rows(service, "SELECT redone_by FROM erasures") == [(BOB.id,)]
    assert "no erased run to bring back" in await s.do(BOB, "/redo")

    # Fork at passage 3: the console has no threads, so the fork is the story now and the original is kept.
    original = service.show(CHANNEL)
    said = await s.do(ALICE, "/fork 3 The other shore")
    assert "“The other shore” with 3 passages is the story now" in said
    fork = service.show(CHANNEL)
    assert [p.text for p in fork.passages] == [p.text for p in original.passages[:3]]
    assert rows(service, "SELECT forked_from, forked_at FROM stories WHERE id = ?", fork.id) == [
        (original.id, 3)
    ]
    origins = rows(service, "SELECT origin_id FROM passages WHERE story_id = ? ORDER BY position", fork.id)
    assert origins == [(p.id,) for p in original.passages[:3]]
    assert "A quiet harbour town" in await s.prompt() and "Mara is the harbour master." in await s.prompt()
    assert "Take 3 of the harbour." not in await s.prompt()

    # The library lists both; reopening the original archives the fork.
    listed = await s.do(BOB, "/stories")
    assert f"{original.id}: untitled · 4 passages" in listed and "archived" in listed
    assert f"{fork.id}: The other shore · 3 passages" in listed and f"fork of {original.id}" in listed
    assert f"(story {original.id} “untitled” is the story again: 4 passages)" in await s.do(
        BOB, f"/open {original.id}"
    )
    assert "Take 3 of the harbour." in await s.prompt()
    assert [i.active for i in service.library(CHANNEL)] == [True, False]

    # The next passage is asked with the story as shown: the fake Ollama receives the edit and take 2.
    await s.do(ALICE, "/continue")
    sent = ollama_server.calls("/api/generate")[-1]["prompt"]
    assert "Mara walked the harbour at dawn." in sent and "Take 3 of the harbour." in sent
    assert "Take 1 of the harbour." not in sent and "Take 4 of the harbour." not in sent


async def test_console_refusals_say_what_to_do(make_service, ollama_server):
    takes_script(ollama_server)
    service = make_service("writer")
    s = Session(service)
    await s.do(ALICE, "One.")
    assert "give a number: /edit N text" in await s.do(ALICE, "/edit two words")
    assert "there is no passage 7 in this story" in await s.do(ALICE, "/edit 7 words")
    assert "the passage is empty" in await s.do(ALICE, "/edit 1  ")
    assert "the model has not written a passage in this story yet" in await s.do(ALICE, "/take 1")
    await s.do(ALICE, "Two.")
    await s.do(ALICE, "/erase 2")
    assert "passage 2 was taken out of the story" in await s.do(ALICE, "/fork 2")
    await s.do(ALICE, "Three.")  # something new after the erase: the erased run cannot come back
    assert "passages were added after the erase" in await s.do(ALICE, "/redo")
    assert "there is no story 99 here" in await s.do(ALICE, "/open 99")


def test_the_history_tables_read_plainly_from_sqlite(tmp_path):
    """What the feedback export will read, with no bot code: the migration's tables exist as documented."""
    from bot.store import Store

    Store(tmp_path / "s.db").close()
    with sqlite3.connect(tmp_path / "s.db") as c:
        cols = {
            t: [r[1] for r in c.execute(f"PRAGMA table_info({t})")]
            for t in ("passage_versions", "take_choices", "erasures", "passages", "stories")
        }
    assert cols["passage_versions"][1:] == [
        "passage_id",
        "version",
        "generation_id",
        "text",
        "edited_by",
        "edited_at",
    ]
    assert cols["take_choices"][1:] == ["passage_id", "generation_id", "chosen_by", "chosen_at"]
    assert cols["erasures"][1:] == [
        "story_id",
        "from_position",
        "erased_by",
        "erased_at",
        "redone_by",
        "redone_at",
    ]
    assert {"revision", "erasure_id", "origin_id", "message_ref"} <= set(cols["passages"])
    assert {"home_id", "forked_from", "forked_at"} <= set(cols["stories"])
