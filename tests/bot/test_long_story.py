"""Long stories through the service against the stand-in Ollama: memory, author's note, lorebook,
the context preview, and rolling summaries written in the background (and failing safely)."""

from __future__ import annotations

import asyncio

import pytest

from bot.core.context import BREAK, LORE_LEAD, SUMMARY_LEAD
from bot.core.lore import LoreChange
from bot.core.service import Done, StoryError
from bot.core.summary import INSTRUCTIONS
from contract import prompt
from tests.families import writer_template

from .conftest import ALICE, ANSWER, BOB, HERE, collect

SUMMARY = "Mara stole the lamp and the keeper followed her north."
MARKER = INSTRUCTIONS.split(".")[0]  # "Summarise the story below for a writer who will continue it"


def _answers(ollama_server, model: str = "writer", **kw) -> None:
    """The model answers a summary request with SUMMARY (bare, as a plain model would) and a passage
    request with the usual tagged answer."""

    def reply(body: dict) -> str:
        if MARKER in body.get("prompt", ""):
            return SUMMARY
        return f"<reasoning>r</reasoning><answer>{ANSWER}</answer>"

    ollama_server.script(model, text=reply, **kw)


def _fill(service, n: int, start: int = 1) -> None:
    for i in range(start, start + n):
        service.write(HERE, ALICE, f"Passage {i}. " + "The keeper climbed the stairs and counted ships. " * 4)


def _summary_calls(ollama_server) -> list[dict]:
    return [b for b in ollama_server.calls("/api/generate") if MARKER in b.get("prompt", "")]


async def test_memory_lore_and_note_reach_the_prompt_in_order(make_service, ollama_server):
    service = make_service("plain")
    service.set_memory(HERE, ALICE, "A grim tale.\n\n\nTold in the first person.")
    service.set_note(HERE, BOB, "Keep it tense.")
    mara = service.lore_add(
        HERE, BOB, LoreChange("Mara", "Mara, the smuggler", "A smuggler who owes the harbour.")
    )
    service.lore_add(HERE, BOB, LoreChange("The lamp", ["lamp"], "It never goes out."))
    service.write(HERE, ALICE, "Mara knocked at the door.")
    done = (await collect(service.continue_story(HERE, ALICE)))[-1]
    context = "\n\n".join(  # triggered lore after the passages: the long stable part comes first
        [
            "A grim tale.\nTold in the first person.",
            BREAK,
            "Mara knocked at the door.",
            BREAK,
            LORE_LEAD,
            "Mara: " + mara.text,
        ]
    )
    [body] = ollama_server.calls("/api/generate")
    assert body["prompt"] == prompt.render_prompt(context, "Keep it tense.")  # the note is the guidance
    gen = service.store.generation(done.generation_id)
    assert gen.user_text == body["prompt"] and gen.direction is None
    record = gen.context
    assert record["parts"] == ["memory", "lore", "passages"]
    assert record["memory_id"] == service.memory(HERE).id
    assert record["lore"] == [{"id": mara.id, "version": 1, "name": "Mara"}]
    assert record["guidance"] == "note" and record["note_id"] == service.note(HERE).id
    # A one-off direction replaces the note for its request, and its mentions bring lore in.
    await collect(service.continue_story(HERE, ALICE, direction="She drops the lamp."))
    body = ollama_server.calls("/api/generate")[-1]
    assert "### Guidance: She drops the lamp." in body["prompt"] and "Keep it tense" not in body["prompt"]
    assert "The lamp: It never goes out." in body["prompt"]
    last = service.store.generation(service.show(HERE).last.generation_id).context
    assert last["guidance"] == "direction" and last["note_id"] is None


async def test_bad_input_gets_clear_answers_and_nothing_is_lost(make_service):
    service = make_service("plain", max_memory_chars=100)
    with pytest.raises(StoryError, match="over the limit of 100.*lorebook"):
        service.set_memory(HERE, ALICE, "x" * 101)
    with pytest.raises(StoryError, match="over the limit of 1,000"):
        service.set_note(HERE, ALICE, "y" * 1001)
    with pytest.raises(StoryError, match="no keywords"):
        service.lore_add(HERE, ALICE, LoreChange("Mara", " , ,", "A smuggler."))
    service.lore_add(HERE, ALICE, LoreChange("Mara", "Mara", "A smuggler."))
    with pytest.raises(StoryError, match="already has a lore entry named 'mara'"):
        service.lore_add(HERE, BOB, LoreChange("mara", "boat", "x"))
    with pytest.raises(StoryError, match="'MARA' already brings in the entry 'Mara'"):
        service.lore_add(HERE, BOB, LoreChange("Jon", "Jon, MARA", "x"))
    with pytest.raises(StoryError, match="changed meanwhile"):
        service.lore_edit(HERE, BOB, "Mara", LoreChange(text="new"), version=7)
    with pytest.raises(StoryError, match="Manage Messages"):
        service.lore_remove(HERE, BOB, "Mara")
    assert [e.text for e in service.lore(HERE)] == ["A smuggler."]
    assert service.lore_remove(HERE, BOB, "Mara", may_manage=True).name == "Mara" and service.lore(HERE) == []
    assert service.memory(HERE) is None  # the refused memory was not stored


async def test_a_memory_too_big_for_the_window_fails_the_passage_clearly(make_service):
    service = make_service("plain", num_ctx=1400)
    service.set_memory(HERE, ALICE, "The rules of this world are many. " * 40)
    service.write(HERE, ALICE, "Once.")
    [failed] = await collect(service.continue_story(HERE, ALICE))
    assert "memory takes about" in failed.message and "/story memory" in failed.message
    assert len(service.show(HERE).passages) == 1


async def test_the_context_preview_is_exactly_the_next_prompt(make_service, ollama_server):
    service = make_service("plain")
    service.set_memory(HERE, ALICE, "A grim tale.")
    service.write(HERE, ALICE, "Once.")
    preview = await service.context_preview(HERE, ALICE, length="short")
    other = await service.context_preview(HERE, BOB, length="short")  # any member: the same rule as memory
    assert other.user_text == preview.user_text and preview.record["parts"] == ["memory", "passages"]
    done = (await collect(service.continue_story(HERE, ALICE, length="short")))[-1]
    assert service.store.generation(done.generation_id).user_text == preview.user_text
    with pytest.raises(StoryError, match="unknown length"):
        await service.context_preview(HERE, ALICE, length="epic")
    # A number of words, as a writer may ask "about 60 words": the prompt says so, as training rows do.
    short, sixty = [await service.context_preview(HERE, ALICE, length=n) for n in ("short", " 60 ")]
    assert sixty.user_text == short.user_text.replace("about 100 words", "about 60 words") != short.user_text
    for bad in ("5", "5000", "-60", "60.5"):
        with pytest.raises(StoryError, match="a number of words"):
            await service.context_preview(HERE, ALICE, length=bad)


async def test_a_rolling_summary_replaces_the_oldest_passages(make_service, ollama_server):
    _answers(ollama_server)
    service = make_service("writer", num_ctx=1400)
    _fill(service, 12)
    first = (await collect(service.continue_story(HERE, ALICE)))[-1]
    assert isinstance(first, Done)
    record = service.store.generation(first.generation_id).context
    assert record["dropped"] > 0 and record["summary_id"] is None  # the passage did not wait for it
    await service.idle()
    state = service.summary_state(HERE)
    assert state.current.text == SUMMARY and state.covers >= record["dropped"] and state.last_error is None
    call = _summary_calls(ollama_server)[0]  # a tiny window: it may take a request or two
    # A model made from our Modelfiles wraps prompts in the writer prompt: the summary goes raw.
    assert call["raw"] is True and call["prompt"].startswith("<|im_start|>")
    assert "Passage 1." in call["prompt"]
    assert ollama_server.rendered[-1].count(prompt.TASK_LINE) == 0
    second = (await collect(service.continue_story(HERE, BOB)))[-1]
    gen = service.store.generation(second.generation_id)
    used = {s.id: s for s in service.store.summaries(service.show(HERE).id)}[gen.context["summary_id"]]
    assert SUMMARY_LEAD + SUMMARY in gen.user_text and used.status == "done"
    # The newest summary, or an older one while the passages after it still fit: a summary written
    # ahead of time waits for the step that needs it.
    assert used.id == state.current.id or used.upto_position < state.current.upto_position
    covered = set(used.passage_ids)
    assert covered and not covered & set(gen.context["passage_ids"])
    assert max(covered) < min(gen.context["passage_ids"])
    assert gen.context["dropped"] == 0  # the summary made room: everything after it fits


async def test_every_request_asks_ollama_to_keep_the_model_loaded(make_service, ollama_server):
    _answers(ollama_server)
    service = make_service("writer", num_ctx=1400)
    _fill(service, 12)
    await collect(service.continue_story(HERE, ALICE))
    await service.idle()
    calls = ollama_server.calls("/api/generate")
    assert _summary_calls(ollama_server) and len(calls) > len(_summary_calls(ollama_server))
    assert {c.get("keep_alive") for c in calls} == {"30m"}  # passages and summaries alike


async def test_the_next_summary_rolls_the_previous_one_in(make_service, ollama_server):
    _answers(ollama_server)
    service = make_service("writer", num_ctx=1400)
    _fill(service, 12)
    await collect(service.continue_story(HERE, ALICE))
    await service.idle()
    first = service.summary_state(HERE).current
    _fill(service, 8, start=13)
    await collect(service.continue_story(HERE, ALICE))
    await service.idle()
    second = service.summary_state(HERE).current
    rows = {s.id: s for s in service.store.summaries(service.show(HERE).id)}
    chain, at = [], second
    while at is not None:  # each summary names the one it rolled in (a tiny window: several rounds)
        chain.append(at.id)
        at = rows.get(at.previous_id)
    assert second.id != first.id and first.id in chain[1:]
    assert second.upto_position > first.upto_position and set(first.passage_ids) < set(second.passage_ids)
    call = _summary_calls(ollama_server)[-1]["prompt"]
    assert "The story so far, in brief:\n" + SUMMARY in call and "Passage 1." not in call


async def test_undoing_summarised_passages_sets_the_summary_aside_and_it_is_redone(
    make_service, ollama_server
):
    _answers(ollama_server)
    service = make_service("writer", num_ctx=1400)
    _fill(service, 12)
    await collect(service.continue_story(HERE, ALICE))
    await service.idle()
    old = service.summary_state(HERE).current
    while service.show(HERE).last.position > old.upto_position - 1:  # undo into the summarised part
        service.undo(HERE, ALICE, may_manage=True)
    fallback = service.summary_state(HERE).current  # it no longer matches: an earlier one (or none) stands
    assert fallback is None or (fallback.id != old.id and fallback.upto_position < old.upto_position)
    _fill(service, 10, start=40)
    done = (await collect(service.continue_story(HERE, ALICE)))[-1]
    assert service.store.generation(done.generation_id).context["summary_id"] == (fallback and fallback.id)
    await service.idle()
    redone = service.summary_state(HERE).current
    assert redone is not None and redone.id != old.id and redone.digest != old.digest


async def test_a_continue_never_waits_for_a_summary(make_service, ollama_server):
    ollama_server.add_model("slow", template="{{ .Prompt }}")
    ollama_server.script("slow", text=SUMMARY, first_token_delay=0.8)
    service = make_service("writer", num_ctx=1400, summary_model="slow", parallel=2)
    _fill(service, 12)
    await collect(service.continue_story(HERE, ALICE))
    second = (await collect(service.continue_story(HERE, ALICE)))[-1]
    assert isinstance(second, Done) and service.summary_state(HERE).writing  # done while it still writes
    assert service.store.generation(second.generation_id).context["summary_id"] is None  # truncated
    ollama_server.script("slow", text=SUMMARY)  # later rounds answer at once
    await service.idle()
    assert service.summary_state(HERE).current.text == SUMMARY


async def test_with_one_server_slot_a_passage_takes_it_from_a_summary(make_service, ollama_server):
    ollama_server.add_model("slow", template="{{ .Prompt }}")
    ollama_server.script("slow", text=SUMMARY, first_token_delay=0.8)
    service = make_service("writer", num_ctx=1400, summary_model="slow", parallel=1)
    _fill(service, 12)
    await collect(service.continue_story(HERE, ALICE))
    story_id = service.show(HERE).id
    while not any(s.status == "running" for s in service.store.summaries(story_id)):
        await asyncio.sleep(0.01)  # until the summary holds the only slot and waits for the model
    events = await collect(service.continue_story(HERE, ALICE))
    assert isinstance(events[-1], Done)
    assert not any(type(e).__name__ == "Queued" for e in events)
    await service.idle()
    set_aside = service.store.summaries(story_id)
    assert any("set aside for a passage" in (s.error or "") for s in set_aside)
    # The next continue that overflows asks again, and with the server free it lands.
    ollama_server.script("slow", text=SUMMARY)
    await collect(service.continue_story(HERE, ALICE))
    await service.idle()
    assert service.summary_state(HERE).current.text == SUMMARY


@pytest.mark.parametrize(
    ("script", "limits", "expected"),
    [
        ({"http_status": 500, "error_message": "boom", "http_status_times": 1}, {}, "Ollama answered 500"),
        ({"first_token_delay": 1.0}, {"summary_timeout": 0.2}, "not written within 0.2s"),
        ({"text": "<reasoning>only thinking</reasoning>"}, {}, "empty summary"),
    ],
)
async def test_a_failed_summary_leaves_the_story_usable_and_is_retried(
    make_service, ollama_server, script, limits, expected
):
    ollama_server.add_model("sum", template="{{ .Prompt }}")
    ollama_server.script("sum", **script)
    service = make_service("writer", num_ctx=1400, summary_model="sum", summary_retry_s=30, **limits)
    _fill(service, 12)
    assert isinstance((await collect(service.continue_story(HERE, ALICE)))[-1], Done)
    await service.idle()
    state = service.summary_state(HERE)
    assert state.current is None and expected in state.last_error
    # Still usable; no retry before summary_retry_s ...
    assert isinstance((await collect(service.continue_story(HERE, ALICE)))[-1], Done)
    assert not service.summary_state(HERE).writing
    # ... and after it, the summary is asked again and lands.
    ollama_server.script("sum", text=SUMMARY)
    service.limits.__dict__["summary_retry_s"] = 0  # frozen dataclass: a test may bend it (read when due)
    await collect(service.continue_story(HERE, ALICE))
    await service.idle()
    assert service.summary_state(HERE).current.text == SUMMARY


async def test_a_model_with_a_foreign_writer_template_cannot_summarise_but_still_writes(
    make_service, ollama_server
):
    foreign = writer_template().replace("<|im_start|>user", "<|im_start|>user ")
    ollama_server.add_model("odd", template=foreign)
    service = make_service("writer", num_ctx=1400, summary_model="odd")
    _fill(service, 12)
    assert isinstance((await collect(service.continue_story(HERE, ALICE)))[-1], Done)
    await service.idle()
    assert "STORY_BOT_SUMMARY_MODEL" in service.summary_state(HERE).last_error
