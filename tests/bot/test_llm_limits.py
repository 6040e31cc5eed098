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
