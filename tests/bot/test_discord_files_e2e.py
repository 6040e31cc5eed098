"""Stories and lorebooks in and out as files on Discord end to end (the real discord.py client on the
stand-in Discord, attachments read from its CDN): a story exported as JSON in #general imports into
#stories and exports again byte for byte; a SillyTavern World Info file and a NovelAI lorebook import
with a report per entry; a file too large is refused before it is downloaded, and a bad one refused with
nothing written."""

from __future__ import annotations

import json

import pytest

from bot.core.files import MAX_FILE_BYTES
from tests.fakes.discord.world import Upload

from .discord_world import continue_, db_rows, write
from .test_console_files import novelai_file, tavern_file
from .test_discord_history_e2e import said

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_errors_logged")]


def upload_of(fake, name: str) -> bytes:
    """The newest file the bot sent by that name (an interaction's answer or a followup)."""
    calls = [c for c in fake.calls if name in c.uploads]
    return calls[-1].uploads[name]


async def imported(fake, name: str, upload: Upload, channel=None, user=None) -> tuple[str, str | None]:
    """A command given a file: (the report only the member sees, what the channel was told or None)."""
    run = await fake.send_slash_command(name, {"file": upload}, user=user or fake.alice, channel=channel)
    ack = await run.response()
    if ack.type != 5:  # refused before it was acknowledged
        assert ack.ephemeral
        return ack.data["content"], None
    await fake.wait_until(lambda: run.messages and not run.messages[0].loading, 10, "the report")
    if _is_report(run.messages[0].content):  # done: the channel is told too
        await fake.wait_until(lambda: len(run.messages) > 1, 10, "the channel's message")
    report = run.messages[0]
    assert report.ephemeral
    public = run.messages[1] if len(run.messages) > 1 else None
    assert public is None or not public.ephemeral
    return report.content, public.content if public else None


def _is_report(text: str) -> bool:
    return text.startswith(("📥 Imported", "📚 "))


async def test_a_story_and_lorebooks_through_discord_files(world):
    fake = world.fake
    bob = fake.add_user("bob")
    world.script("<reasoning>r</reasoning><answer>Mara rowed out into the fog.</answer>")
    async with fake.running(world.bot(commands_per_minute=200)):
        await write(fake, "The harbour slept under the fog.")
        await continue_(fake, user=bob)
        await said(fake, "story edit", {"position": 2, "text": "Mara rowed out, the lamp dark."}, user=bob)
        await said(fake, "story memory", {"text": "A quiet harbour town; past tense."})
        await said(
            fake, "lore add", {"name": "Mara", "keywords": "Mara, smuggler", "text": "Mara owes a boat."}
        )
        await said(fake, "persona set", {"name": "Mara", "description": "A smuggler in debt."})
        await said(fake, "story settings", {"temperature": 0.6}, user=fake.mod)
        text, private = await said(fake, "story export", {"format": "json"})
        assert private and text == "📄 2 passages"
        exported = upload_of(fake, "story.json")
        doc = json.loads(exported)
        assert doc["passages"][1]["versions"][-1]["text"] == "Mara rowed out, the lamp dark."
        await said(fake, "story export")
        assert b"<!-- passage 1 by Alice -->" in upload_of(fake, "story.md")  # Markdown stays

        # Into #stories, by Bob: the same story, and the same bytes out again.
        report, public = await imported(
            fake, "story import", Upload("story.json", exported), fake.stories, bob
        )
        assert report.startswith("📥 Imported: 2 passages · its lorebook: 1 kept, 0 merged, 0 skipped")
        assert "1. Mara: kept, added" in report
        assert public is not None and "Bob imported **Untitled** (2 passages)" in public
        await said(fake, "story export", {"format": "json"}, user=bob, channel=fake.stories)
        assert upload_of(fake, "story.json") == exported
        assert db_rows(world, "SELECT count(*) FROM stories WHERE imported_at IS NOT NULL") == [(1,)]

        # Lorebooks from SillyTavern and NovelAI, into the imported story; a report per entry.
        tavern = Upload("world.json", json.dumps(tavern_file()).encode())
        report, public = await imported(fake, "lore import", tavern, fake.stories)
        assert report.startswith("📚 SillyTavern World Info: 3 kept, 1 merged, 4 skipped")
        assert "1. Mara: merged, the story had an entry of this name: keywords united" in report
        assert "4. Old rumour: skipped, it is disabled in the file" in report
        assert "6. Huge: skipped, the entry's text has 1,500 characters" in report
        assert (
            public is not None
            and "alice imported a lorebook (sillytavern world info: 3 kept" in public.lower()
        )
        novel = Upload("harbour.lorebook", json.dumps(novelai_file()).encode(), "application/octet-stream")
        report, _ = await imported(fake, "lore import", novel, fake.stories)
        assert report.startswith("📚 NovelAI lorebook: 2 kept, 1 merged, 1 skipped")
        assert "3. Unused: skipped, it is disabled in the file" in report
        text, private = await said(fake, "lore export", {"format": "sillytavern"}, channel=fake.stories)
        assert private and "lore entries" in text
        st = json.loads(upload_of(fake, "lorebook-sillytavern.json"))
        assert sorted(e["comment"] for e in st["entries"].values()) == sorted(
            e.name for e in world_lore(world, fake.stories.id)
        )

        # Bad files: refused, only to the member, nothing written.
        before = db_rows(world, "SELECT (SELECT count(*) FROM stories), (SELECT count(*) FROM lore_entries)")
        huge = Upload("huge.json", b"{}", size=MAX_FILE_BYTES + 1)  # Discord says how big: not downloaded
        text, public = await imported(fake, "story import", huge)
        assert public is None and f"over the limit of {MAX_FILE_BYTES:,}" in text
        assert huge.id not in fake.downloads
        liar = Upload("liar.json", b" " * (MAX_FILE_BYTES + 1), size=10)  # larger than it said
        text, public = await imported(fake, "lore import", liar)
        assert public is None and "over the limit" in text and liar.id in fake.downloads
        for upload, message in (
            (Upload("notes.txt", b"The harbour slept.", "text/plain"), "the file is not JSON"),
            (Upload("newer.json", json.dumps({**doc, "version": 2}).encode()), "newer than this bot reads"),
            (Upload("lore.json", json.dumps(tavern_file()).encode()), "is a lorebook file of ours"),
        ):
            text, public = await imported(fake, "story import", upload)
            assert public is None and message in text, text
        text, public = await imported(fake, "lore import", Upload("x.json", b'{"characters": []}'))
        assert public is None and "not a lorebook we read" in text
        after = db_rows(world, "SELECT (SELECT count(*) FROM stories), (SELECT count(*) FROM lore_entries)")
        assert after == before


def world_lore(world, channel_id: int):
    from bot.core.lore import LoreEntry

    rows = db_rows(
        world,
        "SELECT l.name FROM lore_entries l JOIN stories s ON s.id = l.story_id WHERE s.channel_id = ? "
        "AND s.archived_at IS NULL AND l.removed_at IS NULL",
        str(channel_id),
    )
    return [LoreEntry(0, r[0], (), "") for r in rows]
