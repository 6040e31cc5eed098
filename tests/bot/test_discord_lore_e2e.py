"""Long stories on Discord end to end: /story memory|note|context, /story show summary, /lore, driven
through the real discord.py client (StoryBot) on the stand-in Discord, asserting what Discord receives and
what the stand-in Ollama is sent."""

from __future__ import annotations

import asyncio

import pytest

from bot.core.story import Channel, Member

from .discord_world import continue_, db_rows, final, write
from .test_long_story import SUMMARY, _answers

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("no_errors_logged")]


async def command(fake, name: str, options: dict | None = None, user=None):
    """Run a slash command; returns (its first accepted callback, the handle)."""
    run = await fake.send_slash_command(name, options or {}, user=user or fake.alice)
    return await run.response(), run


async def said(fake, name: str, options: dict | None = None, user=None) -> tuple[str, bool]:
    """A command answered in one message: (its text, whether only the actor sees it)."""
    ack, run = await command(fake, name, options, user)
    if ack.type == 5:  # deferred: the answer is the first followup
        [message] = await run.wait_messages(1)
        return message.content, message.ephemeral
    return ack.data["content"], ack.ephemeral


def prompt_sent(world) -> str:
    """The prompt the stand-in Ollama rendered for the newest generate request."""
    return world.ollama.rendered[-1]


def new_bot(world, **limits):
    """A bot process with these service limits; the per-member flood guard is not under test here."""
    return world.bot(commands_per_minute=120, limits=limits)


def here(fake) -> Channel:
    return Channel(str(fake.general.id), str(fake.guild.id))


async def test_memory_is_shown_set_refused_when_too_long_cleared_and_pinned_first_in_the_prompt(world):
    fake = world.fake
    async with fake.running(new_bot(world)):
        text, private = await said(fake, "story memory")
        assert private and "no memory" in text and "/story memory" in text
        text, private = await said(fake, "story memory", {"text": "A grim tale, told by @everyone."})
        assert not private and "Alice set the story's memory" in text and "@\u200beveryone" in text
        text, private = await said(fake, "story memory", {"text": "x" * 2500})
        assert private and "2,500 characters, over the limit of 2,000" in text and "/lore add" in text
        text, private = await said(fake, "story memory", {"text": "y", "clear": True})
        assert private and "not both" in text
        text, private = await said(fake, "story memory", user=fake.mod)
        assert private and text.endswith(
            "A grim tale, told by @\u200beveryone."
        )  # the refused one never landed

        await write(fake, "The lamp went out.")
        assert final(await continue_(fake)).content.startswith("She stepped out")
        assert "### Context:\nA grim tale, told by @everyone.\n\n* * *\n\nThe lamp went out." in prompt_sent(
            world
        )

        text, private = await said(fake, "story memory", {"clear": True}, user=fake.mod)
        assert not private and "cleared the story's memory" in text
        await continue_(fake)
        assert "A grim tale" not in prompt_sent(world)
        for message in fake.messages_in(fake.general):
            assert not message.pings


async def test_the_authors_note_guides_every_passage_and_a_direction_replaces_it_once(world):
    fake = world.fake
    async with fake.running(new_bot(world)):
        text, private = await said(fake, "story note", {"text": "Keep it tense."})
        assert not private and "set the story's author's note" in text and "Keep it tense." in text
        await write(fake, "The lamp went out.")
        await continue_(fake)
        assert "### Guidance: Keep it tense." in prompt_sent(world)
        await continue_(fake, direction="She drops the lamp.")
        assert "### Guidance: She drops the lamp." in prompt_sent(world)
        assert "Keep it tense" not in prompt_sent(world)
        await continue_(fake)  # the note stands again
        assert "### Guidance: Keep it tense." in prompt_sent(world)
        text, private = await said(fake, "story note", {"text": "z" * 1001})
        assert private and "over the limit of 1,000" in text
    rows = db_rows(
        world, "SELECT direction, json_extract(context, '$.guidance') FROM generations ORDER BY id"
    )
    assert rows == [(None, "note"), ("She drops the lamp.", "direction"), (None, "note")]


async def test_lore_add_list_edit_remove_with_clear_refusals_and_triggered_entries_in_the_prompt(world):
    fake = world.fake
    bob = fake.add_user("bob")  # no roles: no Manage Messages
    smuggler = {"name": "Mara", "keywords": "Mara, the smuggler", "text": "A smuggler who owes @here."}
    async with fake.running(new_bot(world)):
        text, private = await said(fake, "lore list")
        assert private and "lorebook is empty" in text
        for keywords, why in ((" , ,", "no keywords"), ("!!", "no letters or digits")):
            text, private = await said(fake, "lore add", {**smuggler, "keywords": keywords})
            assert private and why in text
        text, private = await said(fake, "lore add", smuggler)
        assert not private and "Alice added **Mara** to the lorebook (keywords: Mara, the smuggler)" in text
        text, private = await said(fake, "lore add", {**smuggler, "name": "mara"}, user=bob)
        assert private and "already has a lore entry named" in text
        text, private = await said(fake, "lore add", {**smuggler, "name": "Jon", "keywords": "Jon, MARA"})
        assert private and "'MARA' already brings in the entry 'Mara'" in text
        text, private = await said(
            fake, "lore add", {"name": "The sea", "keywords": "sea", "text": "Cold.", "always": True}
        )
        assert "always on; also sea" in text

        await write(fake, "Nobody came to the harbour.")
        await continue_(fake)
        assert "The sea: Cold." in prompt_sent(world) and "smuggler" not in prompt_sent(world)
        await write(fake, "Then the smuggler rowed in.")  # a keyword, in any case: Mara comes in
        await continue_(fake)
        assert "Mara: A smuggler who owes @here." in prompt_sent(world)

        text, private = await said(
            fake, "lore edit", {"name": "Mara", "text": "She owes two boats."}, user=bob
        )
        assert not private and "Bob edited **Mara**" in text and "version 2" in text
        text, private = await said(fake, "lore edit", {"name": "Nobody", "always": True})
        assert private and "no lore entry named 'Nobody'" in text
        text, private = await said(fake, "lore list", user=bob)
        assert private and "**Mara** · keywords: Mara, the smuggler · v2\nShe owes two boats." in text
        assert "**The sea** · always on; also sea · v1" in text

        text, private = await said(fake, "lore remove", {"name": "Mara"}, user=bob)
        assert private and "added by another member" in text and "Manage Messages" in text
        text, private = await said(fake, "lore remove", {"name": "mara"}, user=fake.mod)
        assert not private and "took **Mara** out of the lorebook" in text
        text, _ = await said(fake, "lore list")
        assert "Mara" not in text and "1 lore entries" in text
        for message in fake.messages_in(fake.general):
            assert not message.pings
    assert db_rows(world, "SELECT name, version FROM lore_entries ORDER BY id")[:1] == [
        ("Mara", 2)
    ]  # kept, removed


async def test_the_lore_edit_form_keeps_the_version_so_an_edit_made_meanwhile_is_not_overwritten(world):
    fake = world.fake
    async with fake.running(new_bot(world)):
        await said(fake, "lore add", {"name": "Mara", "keywords": "Mara", "text": "A smuggler."})
        form, opened = await command(fake, "lore edit", {"name": "Mara"})  # no changes given: the form
        assert form.type == 9 and form.data["custom_id"].startswith("story:lore:")
        fields = {c["custom_id"]: c for row in form.data["components"] for c in row["components"]}
        assert fields["text"]["value"] == "A smuggler." and fields["keywords"]["value"] == "Mara"

        await said(fake, "lore edit", {"name": "Mara", "text": "The mod's text."}, user=fake.mod)
        stale = await fake.submit_modal(opened, {"text": "Alice's text."})
        ack = await stale.response()
        assert ack.ephemeral and "changed meanwhile" in ack.data["content"]
        assert "nothing was overwritten" in ack.data["content"]
        listed, _ = await said(fake, "lore list")
        assert "The mod's text." in listed and "v2" in listed

        form, opened = await command(fake, "lore edit", {"name": "Mara"})  # a fresh look, then it lands
        submit = await fake.submit_modal(opened, {"text": "Alice's text.", "keywords": "Mara, the smuggler"})
        ack = await submit.response()
        edited = "Alice edited **Mara** (keywords: Mara, the smuggler; version 3)"
        assert not ack.ephemeral and edited in ack.data["content"]
        # A lorebook past one message comes as a Markdown file.
        for name in ("Jon", "Ada"):
            await said(fake, "lore add", {"name": name, "keywords": name, "text": f"{name} waits. " * 90})
        ack, run = await command(fake, "lore list")
        [listing] = run.messages
        assert ack.ephemeral and listing.attachments == ["lorebook.md"]
        assert "3 lore entries" in listing.content
        upload = fake.calls_to("POST /interactions/*")[-1].uploads["lorebook.md"].decode()
        assert "**Ada** · keywords: Ada · v1\nAda waits." in upload and "Alice's text." in upload
    assert db_rows(world, "SELECT text FROM lore_entries WHERE name = 'Mara'") == [("Alice's text.",)]


async def test_story_context_is_only_to_the_asker_and_is_exactly_the_next_prompt(world):
    fake = world.fake
    bob = fake.add_user("bob")
    async with fake.running(new_bot(world)):
        await write(fake, "The lamp went out.")  # Alice starts the story
        await said(fake, "story memory", {"text": "A grim tale."}, user=bob)
        ack, run = await command(fake, "story context", {"length": "short"})
        [preview] = await run.wait_messages(1)
        assert ack.type == 5 and ack.ephemeral and preview.ephemeral
        assert "parts: memory, passages" in preview.content
        shown = preview.content.split("```text\n", 1)[1].rsplit("\n```", 1)[0]
        for other in (bob, fake.mod):  # a plain member and a moderator see the same
            text, private = await said(fake, "story context", {"length": "short"}, user=other)
            assert private and text == preview.content
        await continue_(fake, length="short")
        [(user_text,)] = db_rows(world, "SELECT user_text FROM generations")
        assert shown == user_text

        # A prompt past one message comes as a file, byte for byte.
        await said(fake, "story memory", {"text": "The rules of this world are many. " * 50}, user=bob)
        ack, run = await command(fake, "story context")
        [preview] = await run.wait_messages(1)
        assert preview.attachments == ["context.txt"] and "in the file" in preview.content
        [upload] = [c for c in fake.calls_to("POST /webhooks/*") if c.files][-1:]
        await continue_(fake)
        [(user_text,)] = db_rows(world, "SELECT user_text FROM generations ORDER BY id DESC LIMIT 1")
        assert upload.uploads["context.txt"].decode() == user_text and len(user_text) > 2000


async def test_story_show_summary_before_and_after_the_story_outgrows_the_window(world):
    fake = world.fake
    _answers(world.ollama)  # the stand-in writer answers summary requests with SUMMARY
    bot = new_bot(world, num_ctx=1400)
    async with fake.running(bot):
        text, private = await said(fake, "story show", {"summary": True})
        assert private and "No summary: the whole story still fits" in text
        alice = Member(str(fake.alice.id), "Alice")
        for i in range(12):  # quicker than twelve /write commands
            bot.story.service.write(here(fake), alice, f"Passage {i}. " + "The keeper counted ships. " * 8)
        await continue_(fake)
        await bot.story.service.idle()
        text, private = await said(fake, "story show", {"summary": True})
        assert private and text.startswith("📜 **Summary of the first") and SUMMARY in text
        covers = int(text.split("first ")[1].split()[0])
        assert 0 < covers < 13 and "failed" not in text


async def test_a_failed_summary_is_shown_and_a_shutdown_stops_the_one_being_written(world):
    fake = world.fake
    world.ollama.add_model("sum", template="{{ .Prompt }}")
    world.ollama.script("sum", http_status=500, error_message="boom", http_status_times=1)
    bot = new_bot(world, num_ctx=1400, summary_model="sum", summary_retry_s=0)
    async with fake.running(bot):
        alice = Member(str(fake.alice.id), "Alice")
        for i in range(12):
            bot.story.service.write(here(fake), alice, f"Passage {i}. " + "The keeper counted ships. " * 8)
        await continue_(fake)
        await bot.story.service.idle()
        text, private = await said(fake, "story show", {"summary": True})
        assert (
            private and "No summary yet." in text and "the last attempt failed: Ollama answered 500" in text
        )
        world.ollama.script("sum", text=SUMMARY, first_token_delay=10)  # the next one takes its time
        await continue_(fake)
        await fake.wait_until(lambda: bot.story.service.summary_state(here(fake)).writing)
        text, _ = await said(fake, "story show", {"summary": True})
        assert "a new summary is being written" in text
    await asyncio.wait_for(bot.story.service.idle(), 1)  # closing the bot stopped it
    statuses = db_rows(world, "SELECT status FROM summaries ORDER BY id")
    assert statuses[0] == ("failed",) and statuses[-1] == ("failed",)


async def test_one_rule_for_seeing_a_storys_inputs_any_member_privately(world):
    """Memory, lore list, summary and context: a member who neither started the story nor moderates sees
    each of them, and only they do (ephemeral); links in them do not unfurl."""
    fake = world.fake
    bob = fake.add_user("bob")
    async with fake.running(new_bot(world)):
        await write(fake, "The lamp went out.")  # Alice starts the story
        await said(fake, "story memory", {"text": "A grim tale; see https://example.com/map."})
        await said(fake, "lore add", {"name": "Mara", "keywords": "Mara", "text": "A smuggler."})
        seen = {}
        for name, options in (
            ("story memory", {}),
            ("lore list", {}),
            ("story show", {"summary": True}),
            ("story context", {}),
        ):
            seen[name] = await said(fake, name, options, user=bob)
        assert all(private for _, private in seen.values())
        assert "A grim tale" in seen["story memory"][0] and "A smuggler." in seen["lore list"][0]
        assert "No summary" in seen["story show"][0] and "parts: memory" in seen["story context"][0]
        bot_messages = [m for m in fake.messages_in(fake.general) if m.author.id == fake.bot_user.id]
        assert bot_messages and all(m.unfurled == [] for m in bot_messages)
