"""The one builder of generate requests (contract/serving.py `request_for`) and who uses it."""

from __future__ import annotations

import asyncio

import pytest

from bot.core import summary
from contract import prompt, serving
from pipeline.data import backends
from tests.families import plain_template, qwen, writer_template

QWEN = qwen()


def test_plain_model_gets_the_user_turn_and_its_own_system_field():
    plain = plain_template()
    request = serving.request_for(plain, "Write.", system="Be a teacher.", model_system="ignored")
    assert (request.prompt, request.raw, request.system) == ("Write.", False, "Be a teacher.")
    assert request.fields() == {"prompt": "Write.", "raw": False, "system": "Be a teacher."}
    assert serving.request_for(plain, "Write.").fields() == {"prompt": "Write.", "raw": False}


def test_our_model_gets_the_chat_text_with_the_right_system_turn():
    ours = writer_template()
    assert serving.request_for(ours, "U").prompt == QWEN.prompt("U")  # the default system turn
    assert serving.request_for(ours, "U", model_system="M").prompt == QWEN.prompt("U", "M")
    assert serving.request_for(ours, "U", "S", "M").prompt == QWEN.prompt("U", "S")
    assert serving.request_for(ours, "U", "S").fields() == {
        "prompt": QWEN.prompt("U", "S"),
        "raw": True,
    }


def test_a_writer_prompt_not_of_ours_is_refused_with_the_fix():
    custom = "USER: " + prompt.PROMPT_PREFIX + "{{ .Prompt }}\nASSISTANT:"
    with pytest.raises(serving.ServingError, match="recreate the model with `story-pipeline modelfile`"):
        serving.request_for(custom, "summarise this")
    with pytest.raises(summary.SummaryUnavailable, match="summary_model"):
        summary.summary_request("summarise this", custom)


def test_summary_on_a_writer_model_keeps_its_system():
    request = summary.summary_request("Summarise.", writer_template(), "Terse.")
    assert request.raw and request.prompt == QWEN.prompt("Summarise.", "Terse.")


def test_teacher_asks_a_model_of_ours_raw_in_its_format(fake_ollama):
    fake_ollama.add_model("writer", template=writer_template())
    teacher = backends.OllamaChat(backends.ChatSettings(model="writer", base_url=fake_ollama.url))
    messages = [{"role": "system", "content": "Reason."}, {"role": "user", "content": "The story."}]

    async def ask():
        try:
            return await teacher.complete(messages)
        finally:
            await teacher.aclose()

    reply = asyncio.run(ask())
    assert reply.text and fake_ollama.rendered[-1] == QWEN.prompt("The story.", "Reason.")
    [body] = fake_ollama.calls("/api/generate")
    assert body["raw"] is True and "system" not in body
    with pytest.raises(ValueError, match="one user turn"):
        backends._one_exchange([{"role": "assistant", "content": "x"}])


def test_missing_teacher_is_fatal(fake_ollama):
    teacher = backends.OllamaChat(backends.ChatSettings(model="nope", base_url=fake_ollama.url))
    with pytest.raises(backends.Fatal, match="ollama pull nope"):
        asyncio.run(teacher.complete([{"role": "user", "content": "x"}]))
