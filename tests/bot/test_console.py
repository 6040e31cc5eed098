"""The terminal console over the same service, against the stand-in Ollama."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from bot.console import Console
from bot.core.story import Member

from .conftest import ANSWER

REPO = Path(__file__).resolve().parents[2]


async def _lines(*lines: str):
    for line in lines:
        yield line + "\n"


async def test_a_session_writes_continues_rates_and_exports(make_service, tmp_path):
    service = make_service("writer")
    out = io.StringIO()
    console = Console(service, out, Member("console:me", "me"))
    export = tmp_path / "story.md"
    await console.run(
        _lines(
            "/rate +1",  # nothing to rate yet
            "The lighthouse keeper counted the ships.",
            "/continue a storm comes --length short",
            "/rate -1",
            "/rate +1",
            "/reasoning",
            "/story show",
            f"/export {export}",
            "/bogus",
            "/quit",
            "never read",
        )
    )
    text = out.getvalue()
    assert "the model has not written a passage" in text
    assert ANSWER in text and "(passage 2 by the model" in text
    assert "0 👍 1 👎" in text and "1 👍 0 👎" in text  # the rating changed, not doubled
    assert "the storm makes her decision" in text
    assert "[1 · me] The lighthouse keeper counted the ships." in text
    assert export.read_text().startswith("# Untitled story") and ANSWER in export.read_text()
    assert "unknown command /bogus" in text
    gen = service.store.generation(service.show(console_channel()).passages[1].generation_id)
    assert gen.direction == "a storm comes" and gen.length == "short"
    assert len(service.show(console_channel()).passages) == 2


async def test_failures_and_undo_in_the_console(make_service, ollama_server):
    ollama_server.script("writer", error_after=2, error_message="out of memory")
    service = make_service("writer")
    out = io.StringIO()
    await Console(service, out).run(_lines("Once.", "/continue", "/undo", "/undo", "/regenerate"))
    text = out.getvalue()
    assert "! the model 'writer' stopped with an error mid-passage: out of memory" in text
    assert "(undone: Once.)" in text and "! the story is empty: there is nothing to undo" in text
    assert "! the newest passage is not the model's" in text or "nothing to regenerate" in text


def console_channel():
    from bot.console import CHANNEL

    return CHANNEL


def test_story_bot_console_end_to_end_through_stdin(ollama_server, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "STORY_BOT_DB": str(tmp_path / "c.db")}
    env.pop("STORY_BOT_CONFIG", None)
    session = "It was a dark night.\n/continue\n/export\n"
    run = subprocess.run(
        [sys.executable, "-m", "bot", "console", "--model", "writer", "--host", ollama_server.url],
        input=session,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert ANSWER in run.stdout and "# Untitled story" in run.stdout
    again = subprocess.run(
        [sys.executable, "-m", "bot", "console", "--model", "missing", "--host", ollama_server.url],
        input="",
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert again.returncode == 1 and "'missing' is not on the Ollama server" in again.stderr
