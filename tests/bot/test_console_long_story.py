"""Memory, author's note, lorebook, summary and context preview through the console."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from bot.console import Console
from bot.core.story import Member

from .conftest import ANSWER
from .test_long_story import SUMMARY, _answers

REPO = Path(__file__).resolve().parents[2]
ME = Member("console:me", "me")


async def _lines(*lines: str):
    for line in lines:
        yield line + "\n"


async def test_a_long_story_session_in_the_console(make_service, ollama_server):
    _answers(ollama_server)
    service = make_service("writer", num_ctx=1400)
    out = io.StringIO()
    console = Console(service, out, ME)
    await console.run(
        _lines(
            "/story memory",
            "/story memory A grim tale, told by the lighthouse keeper.",
            "/story note Keep it tense.",
            "/lore add Mara | Mara, the smuggler | A smuggler who owes the harbour master.",
            "/lore add Mara | boat | again",  # the name is taken
            "/lore add Jon | | A fisherman.",  # no keywords
            "/lore add The sea | | Always cold here. --always",
            "/lore edit Mara | | She owes the harbour master a boat.",
            "/lore list",
            "/lore remove Nobody",
            "/story show --summary",
            "Mara rowed out past the lighthouse.",
            "/story context",
        )
    )
    text = out.getvalue()
    assert "(no memory: `/story memory text` sets it)" in text
    assert "(memory set: 43 characters)" in text and "(author's note set" in text
    assert "(lore entry 'Mara' added: Mara, the smuggler)" in text
    assert "! the story already has a lore entry named 'Mara'" in text
    assert "! the entry has no keywords" in text and "(lore entry 'The sea' added: always on)" in text
    assert "(lore entry 'Mara' updated, version 2)" in text
    assert "Mara [Mara, the smuggler] v2: She owes the harbour master a boat." in text
    assert "! there is no lore entry named 'Nobody'" in text
    assert "(no summary: the whole story still fits" in text
    preview = text.split("(for writer:")[-1]
    assert "parts: memory, lore, passages; lore: The sea, Mara; 1 passages; guidance: note" in preview
    assert (
        "### Context:\nA grim tale, told by the lighthouse keeper.\n\nThe sea: Always cold here.\n\n"
        "* * *\n\nMara rowed out past the lighthouse.\n\n* * *\n\nBackground:\n\n"
        "Mara: She owes the harbour master a boat.\n"
        "\n### Guidance: Keep it tense.\n"
    ) in preview

    # The story outgrows the window: the oldest passages are summarised in the background.
    lines = [f"Passage {i}. " + "The keeper climbed the stairs and counted ships. " * 4 for i in range(12)]
    await console.run(_lines(*lines, "/continue"))
    await service.idle()
    out.seek(0)
    out.truncate()
    await console.run(
        _lines("/story show --summary", "/story context", "/story memory --clear", "/story memory")
    )
    text = out.getvalue()
    assert "(summary of the first" in text and SUMMARY in text
    assert "Earlier: " + SUMMARY in text and "parts: memory, summary, lore, passages" in text
    assert "(memory cleared)" in text and "(no memory" in text


def test_story_bot_console_with_memory_and_lore_through_stdin(ollama_server, tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "STORY_BOT_DB": str(tmp_path / "c.db"),
        "STORY_BOT_KEEP_ALIVE": "2h",
    }
    env.pop("STORY_BOT_CONFIG", None)
    session = (
        "/story memory Told in the first person.\n"
        "/lore add Mara | Mara | A smuggler.\n"
        "Mara knocked.\n"
        "/continue\n"
        "/story context\n"
    )
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
    assert ANSWER in run.stdout
    stable = "Told in the first person.\n\n* * *\n\nMara knocked."
    lore = "\n\n* * *\n\nBackground:\n\nMara: A smuggler."
    assert "### Context:\n" + stable + "\n\n" + ANSWER + lore in run.stdout  # the next prompt
    [generate] = ollama_server.calls("/api/generate")
    # the first prompt, sent raw in the model's chat format: memory and passage, then the lore
    assert (
        generate["raw"]
        and f"### Context:\n{stable}{lore}\n<|im_end|>\n<|im_start|>assistant\n" in (generate["prompt"])
    )
    assert generate["keep_alive"] == "2h"  # the setting reaches the server
