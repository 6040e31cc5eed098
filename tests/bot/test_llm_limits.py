"""The stream's time limits, kept by one timer per stream instead of httpx's timer per read."""

from __future__ import annotations

import asyncio

import pytest

from bot.llm import OllamaBackend, TimedOut, Timeouts
from contract.serving import GenerateRequest

REQUEST = GenerateRequest(prompt="Once.", raw=False, user_text="Once.")


async def pieces(backend: OllamaBackend, hold: float = 0.0) -> list:
    out = []
    async for piece in backend.generate("writer", REQUEST, {}):
        out.append(piece)
        await asyncio.sleep(hold)  # the driver holding a piece (an edit to Discord, say)
    return out


async def test_a_server_that_trickles_trips_the_total_limit(ollama_server):
    ollama_server.script("writer", text="<answer>" + "word " * 40 + "</answer>", tokens_per_second=20)
    backend = OllamaBackend(ollama_server.url, Timeouts(connect=1, idle=0.5, total=0.4))
    try:
        with pytest.raises(TimedOut, match="did not answer in time"):
            await pieces(backend)
    finally:
        await backend.close()


async def test_a_driver_holding_pieces_longer_than_idle_is_no_timeout(ollama_server):
    ollama_server.script("writer", text="<answer>A short one.</answer>", tokens_per_second=200)
    backend = OllamaBackend(ollama_server.url, Timeouts(connect=1, idle=0.1, total=5))
    try:
        out = await pieces(backend, hold=0.15)
    finally:
        await backend.close()
    assert out[-1].done and "".join(p.text for p in out).endswith("</answer>")


async def test_the_first_word_may_take_longer_for_a_long_prompt_and_the_message_says_why(ollama_server):
    """Ollama sends nothing before the first token, and a cold server evaluates the whole prompt first:
    the wait for the first piece grows with the prompt (idle plus prompt_per_1k a 1000 tokens)."""
    ollama_server.script("writer", text="<answer>Late.</answer>", first_token_delay=0.6)
    timeouts = Timeouts(connect=1, idle=0.3, total=10, prompt_per_1k=1.0)
    long = GenerateRequest(prompt="word " * 400, raw=True, user_text="x")  # 2000 chars: ~571 tokens
    assert 0.85 < timeouts.first(long.prompt) < 0.9
    backend = OllamaBackend(ollama_server.url, timeouts)
    try:
        out = [p async for p in backend.generate("writer", long, {})]  # waited 0.6 s: within 0.87
        assert out[-1].done
        with pytest.raises(TimedOut) as caught:  # a short prompt gets the plain idle wait
            [p async for p in backend.generate("writer", REQUEST, {})]
        message = str(caught.value)
        assert "did not answer in time: nothing came in" in message and "per 1000 prompt tokens" in message
        assert "about 2 tokens" in message and "STORY_BOT_PROMPT_TIMEOUT_PER_1K_TOKENS" in message
    finally:
        await backend.close()


def test_the_character_estimate_never_undercounts_other_scripts():
    from bot.core.context import CharCounter

    counter = CharCounter(3.5)
    assert counter.count("a" * 35) == 10  # ASCII at 3.5 characters a token, as before
    # Each non-ASCII character counts its UTF-8 bytes, the most tokens a byte-level tokenizer can give it.
    for text in ("Жили-были дед да баба", "从前有座山，山上有座庙", "Οἱ ἄνθρωποι 🙂"):
        non_ascii = [c for c in text if ord(c) > 127]
        ascii_chars = len(text) - len(non_ascii)
        assert counter.count(text) == -(-ascii_chars // 3.5) + sum(len(c.encode()) for c in non_ascii)
        assert counter.count(text) >= len(text.encode()) * 0.5  # at least a token per two bytes


async def test_a_system_the_model_carries_is_said_not_silently_used(fake_ollama, caplog):
    """FROM another model inherits its SYSTEM (Ollama's server/model.go parseFromModel): the bot uses a
    served SYSTEM as the raw prompt's system turn, and says so, once per /api/show."""
    from .conftest import WRITER

    fake_ollama.add_model("writer", template=WRITER, system="You are a pirate.")
    fake_ollama.add_model("plain", template=WRITER)
    backend = OllamaBackend(fake_ollama.url)
    try:
        with caplog.at_level("WARNING", logger="bot.llm"):
            info = await backend.model_info("writer")
            await backend.model_info("plain")
    finally:
        await backend.close()
    assert info.system == "You are a pirate."
    [record] = [r for r in caplog.records if "has a SYSTEM" in r.getMessage()]
    assert "'writer'" in record.getMessage() and "You are a pirate." in record.getMessage()
    assert "FROM" in record.getMessage()
