"""A model's training target as the bot serves it: an `answer` model (no reasoning) gets the prompt it
was trained on and its passages carry no format fault; a `text` model is refused by name."""

from __future__ import annotations

from dataclasses import replace

from bot.core.service import Done, Failed
from contract import go_chat, prompt
from tests.families import qwen

from .conftest import ALICE, ANSWER, BOB, HERE, collect


async def test_an_answer_model_is_served_its_prompt_and_its_passage_has_no_fault(make_service, ollama_server):
    ollama_server.add_model(
        "answer-writer", template=go_chat.writer_template(replace(qwen(), target="answer"))
    )
    ollama_server.script("answer-writer", text=f"<answer>{ANSWER}</answer>")
    service = make_service("answer-writer")
    service.write(HERE, ALICE, "The storm rolled in over the harbour.")
    done = (await collect(service.continue_story(HERE, BOB)))[-1]
    assert isinstance(done, Done) and done.passage.text == ANSWER
    assert done.issues == () and done.reasoning == ""  # no reasoning is this target's shape, not a fault
    [body] = ollama_server.calls("/api/generate")
    assert body["raw"] and body["prompt"] == qwen().prompt(
        prompt.render_prompt("The storm rolled in over the harbour.")
    )


async def test_a_text_model_is_refused_with_what_to_do(make_service, ollama_server):
    ollama_server.add_model("book-text", template=go_chat.writer_template(replace(qwen(), target="text")))
    service = make_service("book-text")
    service.write(HERE, ALICE, "The storm rolled in over the harbour.")
    [*_, failed] = await collect(service.continue_story(HERE, BOB))
    assert isinstance(failed, Failed) and "--target text" in failed.message and "train" in failed.message
    assert ollama_server.calls("/api/generate") == []
