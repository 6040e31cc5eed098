"""The story's world on Discord end to end (the real discord.py client on the stand-in Discord and
Ollama): the settings (only the role the operator named may change them), the cast and the rolling
summary rewritten in a form, restored and paused change what the next prompt holds exactly as
`/story context` shows it, and what the stand-in Ollama receives."""

from __future__ import annotations

import json

import pytest

from contract import serving

from .conftest import WRITER
from .discord_world import continue_, db_rows, write
from .test_discord_history_e2e import said
from .test_long_story import MARKER, SUMMARY

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_errors_logged")]
LONG = "The keeper climbed the stairs and counted ships. " * 4
ANSWER = "The lamp swung in the wind."


def answers(world) -> None:
    """A summary request gets SUMMARY, a passage request a tagged answer; for both writer models."""

    def reply(body: dict) -> str:
        return (
            SUMMARY
            if MARKER in body.get("prompt", "")
            else f"<reasoning>r</reasoning><answer>{ANSWER}</answer>"
        )

    world.ollama.add_model("writer-b", template=WRITER)
    for model in ("writer", "writer-b"):
        world.ollama.script(model, text=reply)


async def prompt(fake) -> str:
    """The next prompt exactly as `/story context` shows it: inline, or in its file when it is long."""
    text, private = await said(fake, "story context")
    assert private
    if "```text\n" in text:
        return text.split("```text\n", 1)[1].rsplit("\n```", 1)[0]
    [upload] = [c for c in fake.calls_to("POST /webhooks/*") if c.files][-1:]
    return upload.uploads["context.txt"].decode()


async def context_header(fake) -> str:
    text, private = await said(fake, "story context")
    assert private
    return text.split("```text\n", 1)[0]


async def test_settings_cast_and_summary_from_discord_shape_the_next_prompt(world):
    fake = world.fake
    fake.add_role("Story keeper")
    keeper, bob = fake.add_user("keeper", roles=("Story keeper",)), fake.add_user("bob")
    answers(world)
    bot = world.bot(
        commands_per_minute=200,
        settings_role="Story keeper",
        models_allowed=lambda c: ["writer-b"],
        limits={"num_ctx": 1400},
    )
    async with fake.running(bot):
        await write(fake, "Mara rowed out past the lighthouse.")
        shown, private = await said(fake, "story settings")
        assert private and "model writer (the channel's)" in shown
        assert "models allowed here: writer, writer-b; changing them needs the Story keeper role" in shown
        for who in (fake.alice, fake.mod):  # Manage Messages is not the role the operator named
            text, private = await said(fake, "story settings", {"temperature": 0.3}, user=who)
            assert private and "needs the role the operator named" in text
        text, private = await said(fake, "story settings", {"model": "writer-c"}, user=keeper)
        assert private and "'writer-c' is not one this channel may use" in text
        assert db_rows(world, "SELECT count(*) FROM story_settings") == [(0,)]
        options = {
            "model": "writer-b",
            "temperature": 0.3,
            "top_p": 0.9,
            "repeat_penalty": 1.2,
            "length": "short",
        }
        text, private = await said(fake, "story settings", options, user=keeper)
        line = "model writer-b · temperature 0.3 · top_p 0.9 · repeat_penalty 1.2 · length short"
        assert not private and f"keeper changed the story's settings: {line}" in text.lower()

        text, private = await said(
            fake, "persona set", {"name": "Mara", "description": "A smuggler in debt."}
        )
        assert not private and "plays **Mara**: A smuggler in debt." in text
        await said(fake, "persona set", {"name": "Jon", "description": "A fisherman."}, user=bob)
        text, _ = await said(fake, "persona set", {"name": "JON", "description": "Another."})
        assert "Bob plays Jon already" in text
        cast, private = await said(fake, "persona list")
        assert private and "**Mara** (Alice): A smuggler in debt.\n**Jon** (Bob): A fisherman." in cast

        header = await context_header(fake)
        assert "Next for **writer-b**" in header and "cast: Mara, Jon" in header and f"⚙️ {line}" in header
        text = await prompt(fake)
        assert (
            "### Context:\nCast:\nMara: A smuggler in debt.\nJon: A fisherman.\n\n* * *\n\nMara rowed out"
            in text
        )
        run = await continue_(fake, user=bob)
        assert any(ANSWER in m.content for m in run.messages)
        [body] = [b for b in world.ollama.calls("/api/generate") if b["model"] == "writer-b"]
        sent = body["options"]
        assert (sent["temperature"], sent["top_p"], sent["repeat_penalty"]) == (0.3, 0.9, 1.2)
        assert sent["num_predict"] == serving.num_predict("short") and text in body["prompt"]
        [(context,)] = db_rows(world, "SELECT context FROM generations")
        assert json.loads(context)["settings"]["temperature"] == 0.3

        # The story outgrows the window: the model summarises; a member rewrites it in a form.
        for i in range(12):
            await write(fake, f"Passage {i}. {LONG}")
        await continue_(fake)
        await fake.wait_until(lambda: db_rows(world, "SELECT 1 FROM summaries WHERE status = 'done'"), 10)
        assert "Earlier: " + SUMMARY in await prompt(fake)
        opened = await fake.send_slash_command("story summary edit")
        form = await opened.response()
        assert form.type == 9 and SUMMARY in str(form.data)
        rewritten = "Mara and the keeper quarrelled over the lamp."
        submit = await fake.submit_modal(opened, {"text": rewritten})
        ack = await submit.response()
        assert not ack.ephemeral and "alice rewrote the story's summary" in ack.data["content"].lower()
        now = await prompt(fake)
        assert "Earlier: " + rewritten in now and SUMMARY not in now
        shown, _ = await said(fake, "story show", {"summary": True})
        assert rewritten in shown

        late = await fake.send_slash_command("story summary edit", user=bob)  # opened on the rewrite
        assert rewritten in str((await late.response()).data)
        text, private = await said(fake, "story summary restore", user=bob)
        assert not private and f"restored the previous summary: “{SUMMARY}”" in text
        assert "Earlier: " + SUMMARY in await prompt(fake)
        text, private = await said(fake, "story summary restore")
        assert private and "there is no earlier version of the summary to restore" in text
        # A form opened on a summary that was since replaced is refused, not applied unseen.
        stale = await fake.submit_modal(late, {"text": "An old thought."})
        ack = await stale.response()
        assert ack.ephemeral and "the summary changed while you were editing it" in ack.data["content"]

        text, _ = await said(fake, "story summary pause")
        assert "paused the summaries" in text
        assert db_rows(world, "SELECT summary_paused FROM stories") == [(1,)]
        shown, _ = await said(fake, "story show", {"summary": True})
        assert "new summaries are paused" in shown
        await said(fake, "story summary resume")
        assert db_rows(world, "SELECT summary_paused FROM stories") == [(0,)]
