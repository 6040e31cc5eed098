"""Writers shape the story on Discord end to end (the real discord.py client on the stand-in Discord and
Ollama): several members edit a model passage, flip between three takes and pick the second, erase the
last two passages and redo them, fork at passage 3 into a thread, list and reopen a story; after each
step the database, the channel's messages and the next prompt (`/story context`, and what the stand-in
Ollama receives) agree."""

from __future__ import annotations

import itertools

import pytest

from tests.fakes.discord.world import CREATE_PUBLIC_THREADS, SEND_MESSAGES_IN_THREADS

from .discord_world import continue_, db_rows, final, model_text, write

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_errors_logged")]


def takes_script(world) -> None:
    """Each request answers a new take: "Take 1 of the harbour.", "Take 2 …", ..."""
    n = itertools.count(1)
    world.ollama.script("writer", text=lambda body: model_text(f"Take {next(n)} of the harbour."))


async def said(fake, name: str, options: dict | None = None, user=None, channel=None) -> tuple[str, bool]:
    """A command answered in one message: (its text, whether only the actor sees it)."""
    run = await fake.send_slash_command(name, options or {}, user=user or fake.alice, channel=channel)
    ack = await run.response()
    if ack.type == 5:  # deferred: the answer is the first followup
        [message] = await run.wait_messages(1)
        return message.content, message.ephemeral
    return ack.data["content"], ack.ephemeral


async def prompt(fake, channel=None) -> str:
    """The next prompt exactly as `/story context` shows it."""
    text, private = await said(fake, "story context", channel=channel)
    assert private
    return text.split("```text\n", 1)[1].rsplit("\n```", 1)[0]


def gen_of(message) -> int:
    return int(message.custom_ids[0].split(":")[2])


def world_message(fake, gen: int) -> int:
    """The message whose buttons act on take `gen`."""
    return next(m.id for m in fake.messages.values() if f"story:regen:{gen}" in m.custom_ids)


async def until_shows(fake, message, text: str) -> None:
    await fake.wait_until(lambda: text in message.content, 10, f"the message to show {text!r}")


async def test_members_edit_flip_takes_erase_redo_fork_into_a_thread_list_and_reopen(world):
    fake, db = world.fake, world
    fake.allow_bot(CREATE_PUBLIC_THREADS | SEND_MESSAGES_IN_THREADS)
    bob = fake.add_user("bob")
    takes_script(world)
    async with fake.running(world.bot(commands_per_minute=120)):
        await write(fake, "The harbour slept under the fog.")
        p2 = final(await continue_(fake, user=bob))
        gen1 = gen_of(p2)

        # Alice may not edit the passage Bob asked for; Bob edits it in the form, prefilled.
        refused = await fake.press_button(p2, f"story:edit:{gen1}")
        ack = await refused.response()
        assert ack.ephemeral and "needs the Manage Messages permission" in ack.data["content"]
        late = await fake.press_button(p2, f"story:edit:{gen1}", user=fake.mod)  # the moderator looks too
        assert (await late.response()).type == 9
        opened = await fake.press_button(p2, f"story:edit:{gen1}", user=bob)
        form = await opened.response()
        assert form.type == 9 and "Take 1 of the harbour." in str(form.data)
        submit = await fake.submit_modal(opened, {"text": "Mara walked the harbour at dawn."})
        assert "bob edited passage 2" in (await submit.response()).data["content"].lower()
        await until_shows(fake, p2, "Mara walked the harbour at dawn.\n-# passage 2 · by the model, asked by")
        assert p2.content.endswith(" · edited") and p2.custom_ids[0] == f"story:rate:{gen1}:up"
        assert db_rows(db, "SELECT version, text FROM passage_versions ORDER BY version") == [
            (1, "Take 1 of the harbour."),
            (2, "Mara walked the harbour at dawn."),
        ]
        assert db_rows(db, "SELECT answer FROM generations") == [("Take 1 of the harbour.",)]
        assert "Mara walked the harbour at dawn." in await prompt(fake)
        # The moderator's form was opened on the revision before Bob's edit: refused, nothing overwritten.
        stale = await fake.submit_modal(late, {"text": "The moderator's late thought."})
        ack = await stale.response()
        assert ack.ephemeral and "changed while you were editing it" in ack.data["content"]

        # Three takes of passage 4 (Alice asks, the moderator and Alice regenerate), then back to the second.
        await write(fake, "The bell rang twice.")
        first = final(await continue_(fake))
        takes = [gen_of(first)]
        regen = await fake.press_button(first, f"story:regen:{takes[0]}", user=fake.mod)
        await fake.wait_until(lambda: any(m.components for m in regen.messages), 10)
        second = final(regen)
        takes.append(gen_of(second))
        regen = await fake.press_button(second, f"story:regen:{takes[1]}")
        await fake.wait_until(lambda: any(m.components for m in regen.messages), 10)
        live = final(regen)
        takes.append(gen_of(live))
        assert "Take 4 of the harbour." in live.content and "take 3/3" in live.content
        await until_shows(fake, second, "replaced by a regeneration")
        assert first.components == [] and second.components == []
        for target, way, user in (
            (takes[1], "prev", bob),
            (takes[0], "prev", fake.mod),
            (takes[1], "next", bob),
        ):
            press = await fake.press_button(live, f"story:take:{target}:{way}", user=user)
            assert (await press.response()).type == 6
            await fake.wait_until(lambda t=target: gen_of(live) == t, 10, "the take shown")
        await until_shows(fake, live, "Take 3 of the harbour.\n-# passage 4 · by the model, asked by")
        assert "take 2/3" in live.content
        assert [c for c in live.custom_ids if c.startswith("story:take:")] == [
            f"story:take:{takes[0]}:prev",
            f"story:take:{takes[2]}:next",
        ]
        assert db_rows(db, "SELECT generation_id, chosen_by FROM take_choices ORDER BY id") == [
            (takes[1], str(bob.id)),
            (takes[0], str(fake.mod.id)),
            (takes[1], str(bob.id)),
        ]
        shown = await prompt(fake)
        assert "Take 3 of the harbour." in shown and "Take 4" not in shown and "Take 2" not in shown

        # Erase the last two passages, then redo them.
        text, private = await said(fake, "story erase", {"from": 3})
        assert not private and "erased passages 3–4 (2)" in text
        assert "The bell rang twice." not in await prompt(fake)
        assert db_rows(db, "SELECT count(*) FROM passages WHERE erasure_id IS NOT NULL") == [(2,)]
        text, _ = await said(fake, "story redo", user=bob)
        assert "bob brought back passages 3–4" in text.lower()
        shown = await prompt(fake)
        assert "The bell rang twice." in shown and "Take 3 of the harbour." in shown
        assert db_rows(db, "SELECT redone_by FROM erasures") == [(str(bob.id),)]

        # Fork at passage 3 into a thread: the original is untouched.
        text, _ = await said(fake, "story fork", {"from": 3, "title": "The other shore"})
        [thread] = fake.threads_of(fake.general)
        assert f"into <#{thread.id}>" in text and "This story is unchanged." in text
        [opening] = fake.messages_in(thread)
        assert "passages 1–3" in opening.content and "The bell rang twice." in opening.content
        forked = await prompt(fake, channel=thread)
        assert "Mara walked the harbour at dawn." in forked and "The bell rang twice." in forked
        assert "Take 3 of the harbour." not in forked
        assert "Take 3 of the harbour." in await prompt(fake)  # the original still ends with take 2
        [(original, _), (fork, home)] = db_rows(db, "SELECT id, home_id FROM stories ORDER BY id")
        assert home == str(fake.general.id)
        assert db_rows(db, "SELECT forked_from, forked_at, channel_id FROM stories WHERE id = ?", fork) == [
            (original, 3, str(thread.id))
        ]
        origins = db_rows(db, "SELECT origin_id FROM passages WHERE story_id = ? ORDER BY position", fork)
        query = "SELECT id FROM passages WHERE story_id = ? AND position <= 3 ORDER BY position"
        originals = db_rows(db, query, original)
        assert origins == originals

        # A new story in the thread archives the fork there; the list shows all three; reopen the fork.
        text, _ = await said(fake, "story new", {"title": "Third"}, channel=thread)
        assert "New story: **Third**" in text
        listing, private = await said(fake, "story list")
        assert private and f"**{fork}** · The other shore · 3 passages" in listing
        assert f"<#{thread.id}> · archived · fork of {original}" in listing
        assert f"**{original}** · Untitled · 4 passages" in listing and "Third · 0 passages" in listing
        text, private = await said(fake, "story open", {"id": fork}, user=bob)
        assert not private and f"reopened story {fork}, **The other shore** (3 passages)" in text
        assert "The bell rang twice." in await prompt(fake, channel=thread)
        assert db_rows(db, "SELECT id FROM stories WHERE archived_at IS NULL ORDER BY id") == [
            (original,),
            (fork,),
        ]

        # The next passage is asked with the story as the channel shows it.
        await continue_(fake)
        sent = world.ollama.rendered[-1]
        assert "Mara walked the harbour at dawn." in sent and "Take 3 of the harbour." in sent
        assert "Take 1 of" not in sent and "Take 4 of" not in sent


async def test_a_restarted_bot_shows_the_chosen_take_and_its_buttons_still_step(world):
    """The take chosen is the store's: a new process renders it, and ◀ ▶ keep working on old messages."""
    fake = world.fake
    takes_script(world)
    async with fake.running(world.bot()):
        await write(fake, "The harbour slept.")
        first = gen_of(final(await continue_(fake)))
        regen = await fake.press_button(fake.message(world_message(fake, first)), f"story:regen:{first}")
        await fake.wait_until(lambda: any(m.components for m in regen.messages), 10)
        live = final(regen)
    async with fake.running(world.bot()):
        press = await fake.press_button(live, f"story:take:{first}:prev", user=fake.mod)
        assert (await press.response()).type == 6
        await until_shows(fake, live, "Take 1 of the harbour.\n-# passage 2")
        assert "take 1/2" in live.content
        assert db_rows(world, "SELECT generation_id FROM passages WHERE position = 2") == [(first,)]


async def test_without_thread_permissions_a_fork_is_kept_in_the_list_and_said_plainly(world):
    fake = world.fake
    async with fake.running(world.bot()):
        await write(fake, "One.")
        await write(fake, "Two.")
        text, _ = await said(fake, "story fork", {"from": 1})
        assert "may not open threads here" in text and "`/story open id:2`" in text
        assert fake.threads_of(fake.general) == []
        text, private = await said(fake, "story fork", {"from": 5})
        assert private and "there is no passage 5" in text
        long = "word " * 900  # 4,500 characters: more than a form's text input holds
        run = await write(fake, long)
        parts = await run.wait_messages(3)
        text, private = await said(fake, "story edit", {"position": 3})
        assert private and "more than a Discord form holds (4,000)" in text and "text:" in text
        text, private = await said(fake, "story edit", {"position": 3, "text": "Short now."})
        assert not private and "edited passage 3" in text
        assert len(parts) == 3
        await until_shows(fake, parts[0], "Short now.\n-# passage 3 by Alice · edited")
        await fake.wait_until(lambda: parts[1].deleted and parts[2].deleted)  # one message holds it now
        query = "SELECT message_ref FROM passages WHERE position = 3"
        await fake.wait_until(lambda: db_rows(world, query) == [(f"{fake.general.id}:{parts[0].id}",)])
        text, private = await said(fake, "story open", {"id": 2})
        assert not private and "reopened story 2" in text
        assert [p for (p,) in db_rows(world, "SELECT text FROM passages WHERE story_id = 2")] == ["One."]
