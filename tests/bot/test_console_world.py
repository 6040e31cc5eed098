"""The story's world from the console: its settings, the rolling summary corrected by hand (restored,
paused, an edit that wins over a summary being written) and the cast change what the next prompt holds
exactly as `/story context` shows it, and what the stand-in Ollama receives."""

from __future__ import annotations

import asyncio
import json

import pytest

from bot.console import CHANNEL
from bot.core import messages
from bot.core.service import Limits, StoryService
from bot.llm import OllamaBackend
from contract import serving

from . import test_console_history as history
from .conftest import PLAIN, WRITER
from .test_console_history import ALICE, BOB
from .test_long_story import SUMMARY, _answers

pytestmark = pytest.mark.timeout(60)
LONG = "The keeper climbed the stairs and counted ships. " * 4


class Session(history.Session):
    """Two members at the console, and `/story context` as printed."""

    async def context(self) -> tuple[str, str]:
        """`/story context` as printed: (its header lines, the prompt exactly as the model reads it)."""
        text = await self.do(ALICE, "/story context")
        header, settings, prompt = text.split("\n", 2)
        return header + "\n" + settings, prompt.removesuffix("\n")


def rows(service, query: str, *args) -> list[tuple]:
    return [tuple(r) for r in service.store.conn.execute(query, args).fetchall()]


@pytest.fixture
async def service(ollama_server, store):
    ollama_server.add_model("writer-b", template=WRITER)
    ollama_server.add_model("summ", template=PLAIN)
    for model in ("writer", "writer-b"):
        _answers(ollama_server, model)
    _answers(ollama_server, "summ", tokens_per_second=15)  # slow: an edit can come while it is written
    limits = Limits(num_ctx=1400, summary_model="summ")
    backend = OllamaBackend(ollama_server.url)
    s = StoryService(store, backend, lambda c: "writer", limits=limits, models_allowed=lambda c: ["writer-b"])
    yield s
    await s.aclose()
    await backend.close()


async def test_settings_and_the_cast_shape_the_next_prompt_and_forks_inherit_them(service, ollama_server):
    s = Session(service)
    shown = await s.do(ALICE, "/story settings")
    assert "(settings: model writer (the channel's) · temperature default · top_p default" in shown
    assert "(models allowed here: writer, writer-b)" in shown
    await s.do(ALICE, "Mara rowed out past the lighthouse.")
    refused = await s.do(ALICE, "/story settings model=writer-c")
    assert "! the model 'writer-c' is not one this channel may use: pick one of writer, writer-b" in refused
    assert "! temperature 3 is out of range" in await s.do(ALICE, "/story settings temperature=3")
    assert "! unknown settings ['colour']" in await s.do(ALICE, "/story settings colour=red")
    assert "! give numbers for top_p" in await s.do(ALICE, "/story settings top_p=high")
    assert rows(service, "SELECT count(*) FROM story_settings") == [(0,)]  # nothing half-set
    changed = await s.do(
        ALICE, "/story settings model=writer-b temperature=0.3 top_p=0.9 repeat_penalty=1.2 length=short"
    )
    line = "model writer-b · temperature 0.3 · top_p 0.9 · repeat_penalty 1.2 · length short"
    assert f"(settings: {line})" in changed

    assert "(you play Mara: A smuggler who owes the harbour master.)" in await s.do(
        ALICE, "/persona set Mara | A smuggler who owes the harbour master."
    )
    assert "(you play Jon: A fisherman with a leaking boat.)" in await s.do(
        BOB, "/persona set Jon | A fisherman with a leaking boat."
    )
    assert "! Alice plays Mara already" in await s.do(BOB, "/persona set mara | Another Mara.")
    header, prompt = await s.context()
    assert header.startswith("(for writer-b: window 1400 tokens, ")
    assert "cast: Mara, Jon)" in header and f"(settings: {line})" in header
    assert "parts: cast, passages" in header
    assert (
        "### Context:\nCast:\nMara: A smuggler who owes the harbour master.\nJon: A fisherman with a leaking "
        "boat.\n\n* * *\n\nMara rowed out past the lighthouse.\n"
    ) in prompt
    assert prompt == (await service.context_preview(CHANNEL, ALICE)).user_text

    # The next passage is asked exactly so: the model, the sampling and the default length.
    assert "(passage 2 by the model" in await s.do(ALICE, "/continue")
    [body] = [b for b in ollama_server.calls("/api/generate") if b["model"] == "writer-b"]
    options = body["options"]
    assert (options["temperature"], options["top_p"], options["repeat_penalty"]) == (0.3, 0.9, 1.2)
    assert options["num_predict"] == serving.num_predict("short")
    assert prompt in body["prompt"]
    [(model, length, context, sent)] = rows(
        service, "SELECT model, length, context, options FROM generations"
    )
    assert (model, length) == ("writer-b", "short") and json.loads(sent)["temperature"] == 0.3
    recorded = json.loads(context)
    assert recorded["settings"] == {
        "id": 1,
        "model": "writer-b",
        "temperature": 0.3,
        "top_p": 0.9,
        "repeat_penalty": 1.2,
        "length": "short",
    }
    assert [p["name"] for p in recorded["cast"]] == ["Mara", "Jon"] and recorded["parts"][0] == "cast"

    # A fork inherits them; Bob leaves the cast of the fork only.
    await s.do(ALICE, "/fork 2 The other harbour")
    assert f"(settings: {line})" in await s.do(ALICE, "/story settings")
    assert "(you left the cast)" in await s.do(BOB, "/persona clear")
    assert "Jon" not in await s.do(ALICE, "/persona list") and "Mara (Alice)" in await s.do(
        ALICE, "/persona list"
    )
    assert rows(service, "SELECT story_id, name FROM personas WHERE removed_at IS NULL ORDER BY id") == [
        (1, "Mara"),
        (1, "Jon"),
        (2, "Mara"),
    ]
    assert "! you have no persona in this story" in await s.do(BOB, "/persona clear")
    # --reset: back to the operator's defaults (kept as a new row).
    assert "(settings: model writer (the channel's) · temperature default" in await s.do(
        ALICE, "/story settings --reset"
    )
    header, _ = await s.context()
    assert header.startswith("(for writer:")


async def test_the_summary_edited_restored_paused_and_an_edit_wins_over_one_being_written(service):
    s = Session(service)
    assert "! there is no story in this channel yet" in await s.do(ALICE, "/story summary restore")
    await s.do(ALICE, "The harbour slept.")
    assert "! this story has no summary yet to edit" in await s.do(ALICE, "/story summary edit Too soon.")
    for i in range(12):
        await s.do(ALICE, f"Passage {i}. {LONG}")
    await s.do(ALICE, "/continue")
    await service.idle()
    _, prompt = await s.context()
    assert "Earlier: " + SUMMARY in prompt

    edited = "Mara and the keeper quarrelled over the lamp."
    assert "(summary rewritten)" in await s.do(ALICE, f"/story summary edit {edited}")
    _, prompt = await s.context()
    assert "Earlier: " + edited in prompt and SUMMARY not in prompt
    assert f"(previous summary restored: {SUMMARY})" in await s.do(ALICE, "/story summary restore")
    _, prompt = await s.context()
    assert "Earlier: " + SUMMARY in prompt and edited not in prompt
    assert "! there is no earlier version of the summary to restore" in await s.do(
        ALICE, "/story summary restore"
    )
    await s.do(ALICE, f"/story summary edit {edited}")

    # Paused: the story overflows further, and no summary is asked.
    assert "(summaries paused)" in await s.do(ALICE, "/story summary pause")
    before = rows(service, "SELECT count(*) FROM summaries")
    for i in range(12, 18):
        await s.do(ALICE, f"Passage {i}. {LONG}")
    await s.do(ALICE, "/continue")
    await service.idle()
    assert rows(service, "SELECT count(*) FROM summaries") == before
    assert "(summaries are paused: /story summary resume)" in await s.do(ALICE, "/story show --summary")
    _, prompt = await s.context()
    assert "Earlier: " + edited in prompt

    # Resumed: the next passage asks for one, and a writer's edit made while it is written wins.
    assert "(summaries resumed)" in await s.do(ALICE, "/story summary resume")
    await s.do(ALICE, "/continue")
    await _until(lambda: rows(service, "SELECT 1 FROM summaries WHERE status = 'running'"))
    late = "The lamp went north with Mara; the keeper stayed."
    said = await s.do(ALICE, f"/story summary edit {late}")
    assert "(summary rewritten; the one being written now will be dropped)" in said
    await service.idle()
    shown = await s.do(ALICE, "/story show --summary")
    assert late in shown and messages.SUMMARY_EDITED in shown
    _, prompt = await s.context()
    assert "Earlier: " + late in prompt and SUMMARY not in prompt
    dropped = rows(
        service, "SELECT status, text, error FROM summaries WHERE error IS NOT NULL AND edited_by IS NULL"
    )
    assert dropped[-1] == ("discarded", SUMMARY, messages.SUMMARY_EDITED)
    edits = rows(service, "SELECT text, edited_by FROM summaries WHERE edited_by IS NOT NULL ORDER BY id")
    assert edits == [(edited, ALICE.id), (edited, ALICE.id), (late, ALICE.id)]  # every version kept


async def _until(predicate, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")
