"""The stand-in Discord driven by the real discord.py client (a minimal bot defined here, not the bot's)."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import aiohttp
import discord
import pytest
from discord import app_commands

from tests.fakes.discord import FakeDiscord
from tests.fakes.discord.world import EPHEMERAL, Upload

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def no_discord_errors(caplog):
    """discord.py logs (not raises) exceptions in handlers and gateway parsing: any of them fails the test."""
    yield
    errors = [r for r in caplog.records if r.name.startswith("discord") and r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


class Vote(discord.ui.DynamicItem[discord.ui.Button], template=r"vote:(?P<passage>\d+):(?P<score>\d)"):
    """A persistent button whose state lives in its custom_id."""

    def __init__(self, passage: int, score: int):
        super().__init__(discord.ui.Button(label=str(score), custom_id=f"vote:{passage}:{score}"))
        self.passage, self.score = passage, score

    @classmethod
    async def from_custom_id(cls, interaction, item, match: re.Match[str]):
        return cls(int(match["passage"]), int(match["score"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"rated {self.passage}: {self.score}", ephemeral=True)


class Close(discord.ui.DynamicItem[discord.ui.Button], template=r"close:(?P<passage>\d+)"):
    """Edits the message it sits on (callback type 7) and removes the buttons."""

    def __init__(self, passage: int):
        super().__init__(discord.ui.Button(label="Close", custom_id=f"close:{passage}"))
        self.passage = passage

    @classmethod
    async def from_custom_id(cls, interaction, item, match: re.Match[str]):
        return cls(int(match["passage"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.edit_message(content=f"Passage {self.passage} (closed)", view=None)


class MiniBot(discord.Client):
    """Just enough bot: /story new (defer, followup, two edits), /rate (buttons), /long, /slow, /ping."""

    def __init__(self, guild_id: int, *, sync: bool = True, edit_gap: float = 0.0):
        super().__init__(
            intents=discord.Intents.default(),
            allowed_mentions=discord.AllowedMentions.none(),
            guild_ready_timeout=0.05,
        )
        self.guild_id, self.do_sync, self.edit_gap = guild_id, sync, edit_gap
        self.tree = app_commands.CommandTree(self)
        self.errors: list[discord.HTTPException] = []
        self._commands()

    async def setup_hook(self) -> None:
        self.add_dynamic_items(Vote, Close)
        if self.do_sync:
            guild = discord.Object(self.guild_id)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)

    def _commands(self) -> None:
        story = app_commands.Group(name="story", description="Stories")
        bot = self

        @story.command(name="new", description="Start a story")
        async def new(interaction: discord.Interaction, title: str, words: int = 50) -> None:
            await interaction.response.defer(thinking=True)
            message = await interaction.followup.send(f"# {title}\nOnce", wait=True)
            for text in (f"# {title}\nOnce upon", f"# {title}\nOnce upon a time ({words} words)."):
                await asyncio.sleep(bot.edit_gap)
                await message.edit(content=text)

        @app_commands.command(name="rate", description="Rate a passage")
        async def rate(interaction: discord.Interaction, passage: int) -> None:
            view = discord.ui.View(timeout=None)
            for score in (1, 5):
                view.add_item(Vote(passage, score))
            view.add_item(Close(passage))
            await interaction.response.send_message(f"Passage {passage}", view=view)

        @app_commands.command(name="long", description="Too long for Discord")
        async def long(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            for send in (interaction.followup.send, interaction.channel.send):
                try:
                    await send("x" * 2001)
                except discord.HTTPException as exc:
                    bot.errors.append(exc)
            await interaction.followup.send("x" * 2000)

        @app_commands.command(name="slow", description="Acknowledges too late")
        async def slow(interaction: discord.Interaction) -> None:
            await asyncio.sleep(0.4)
            try:
                await interaction.response.defer()
            except discord.HTTPException as exc:
                bot.errors.append(exc)

        @app_commands.command(name="ping", description="Pings everyone (but may not)")
        async def ping(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("@everyone look", ephemeral=True)
            await interaction.channel.send("@everyone <@1> hello")

        for command in (story, rate, long, slow, ping):
            self.tree.add_command(command)


async def test_slash_command_defers_then_streams_a_followup_with_edits():
    async with FakeDiscord() as fake, fake.running(MiniBot(fake.guild.id)) as bot:
        assert fake.connection.identify["token"] == fake.token
        assert bot.get_guild(fake.guild.id).get_channel(fake.general.id).name == "general"
        run = await fake.send_slash_command("story new", {"title": "Rain", "words": 80})
        ack = await run.response()
        assert ack.type == 5 and ack.delay < 3 and not ack.ephemeral
        [message] = await run.wait_messages(1)
        await fake.wait_until(lambda: len(fake.edits_of(message)) == 3)
        # the first followup replaced the "thinking" message; then two PATCHes
        assert message.id == run.original_id and not message.loading
        assert [e.content for e in fake.edits_of(message)] == [
            "# Rain\nOnce",
            "# Rain\nOnce upon",
            "# Rain\nOnce upon a time (80 words).",
        ]
        times = [e.t for e in fake.edits_of(message)]
        assert times == sorted(times) and times[0] >= run.sent_at
        assert message.allowed_mentions == {"parse": []} and not message.pings
        assert fake.messages_in(fake.general) == [message]
        assert len(fake.calls_to("PATCH /webhooks/*/messages/*")) == 2
        assert fake.violations == []


async def test_button_press_after_a_restart_reaches_the_new_client():
    async with FakeDiscord() as fake:
        async with fake.running(MiniBot(fake.guild.id)):
            run = await fake.send_slash_command("rate", {"passage": 7})
            [message] = await run.wait_messages(1)
            assert message.custom_ids == ["vote:7:1", "vote:7:5", "close:7"]
        # a new process: the same application, the same guild, the same stored message
        async with fake.running(MiniBot(fake.guild.id, sync=False)):
            press = await fake.press_button(message.id, "vote:7:5", user=fake.mod)
            ack = await press.response()
            assert ack.type == 4 and ack.ephemeral and ack.data["content"] == "rated 7: 5"
            assert press.messages[0].flags & EPHEMERAL
            assert press.payload["message"]["id"] == str(message.id)
        assert len(fake.connections) == 2 and all(c.ws.closed for c in fake.connections)
        with pytest.raises(LookupError, match="no component"):
            await fake.press_button(message.id, "vote:7:3")


async def test_a_429_is_waited_out_and_retried():
    async with FakeDiscord() as fake, fake.running(MiniBot(fake.guild.id)):
        rule = fake.rate_limit("PATCH /webhooks/*/messages/*", times=1, retry_after=0.3)
        run = await fake.send_slash_command("story new", {"title": "Storm"})
        [message] = await run.wait_messages(1)
        await fake.wait_until(lambda: len(fake.edits_of(message)) == 3)
        patches = fake.calls_to("PATCH /webhooks/*/messages/*")
        assert [c.status for c in patches] == [429, 200, 200]
        assert patches[1].t - patches[0].t >= 0.3 and patches[0].body == patches[1].body
        assert patches[0].response["retry_after"] == 0.3 and rule.times == 0 and len(rule.hits) == 1


async def test_content_over_2000_characters_is_rejected_like_discord():
    async with FakeDiscord() as fake, fake.running(MiniBot(fake.guild.id)) as bot:
        run = await fake.send_slash_command("long")
        [message] = await run.wait_messages(1)
        assert len(message.content) == 2000
        assert [(e.status, e.code) for e in bot.errors] == [(400, 50035), (400, 50035)]
        assert "Must be 2000 or fewer in length" in str(bot.errors[0])
        assert fake.messages_in(fake.general) == [message]


async def test_late_and_double_acknowledgements_are_violations():
    async with FakeDiscord(ack_deadline=0.3) as fake, fake.running(MiniBot(fake.guild.id)) as bot:
        run = await fake.send_slash_command("slow")
        await fake.wait_until(lambda: bot.errors)
        assert isinstance(bot.errors[0], discord.NotFound) and bot.errors[0].code == 10062
        assert [v.kind for v in fake.violations] == ["late_ack"] and run.acked is None
        assert fake.callbacks(run)[0].delay >= 0.4
        # a second callback on an acknowledged interaction, straight over HTTP
        rate = await fake.send_slash_command("rate", {"passage": 1})
        await rate.response()
        url = f"{fake.api_base}/interactions/{rate.id}/{rate.token}/callback"
        async with aiohttp.ClientSession() as http, http.post(url, json={"type": 5}) as resp:
            assert resp.status == 400 and (await resp.json())["code"] == 40060
        assert [v.kind for v in fake.violations] == ["late_ack", "double_ack"]


async def test_command_sync_is_recorded_and_unsynced_commands_cannot_run():
    async with FakeDiscord() as fake:
        with pytest.raises(LookupError, match="not registered"):
            async with fake.running(MiniBot(fake.guild.id, sync=False)):
                await fake.send_slash_command("rate", {"passage": 1})
        async with fake.running(MiniBot(fake.guild.id)):
            [sync] = fake.syncs
            assert sync.guild_id == fake.guild.id and sorted(sync.names) == [
                "long",
                "ping",
                "rate",
                "slow",
                "story",
            ]
            story = fake.commands(fake.guild)["story"]
            assert [o["name"] for o in story["options"]] == ["new"]
            with pytest.raises(LookupError, match="unknown option"):
                await fake.send_slash_command("story new", {"title": "x", "colour": "red"})
            with pytest.raises(ValueError, match="required"):
                await fake.send_slash_command("story new", {})
        assert fake.commands() == {}  # nothing global


async def test_allowed_mentions_and_pings_are_recorded(fake_discord):
    fake = fake_discord
    assert fake.api_base == discord.http.Route.BASE
    async with fake.running(MiniBot(fake.guild.id)):
        run = await fake.send_slash_command("ping", user=fake.alice)
        await fake.wait_until(lambda: len(fake.messages_in(fake.general)) == 2)
        reply, sent = fake.messages_in(fake.general)
        assert reply.ephemeral and sent.via == "channel" and sent.content == "@everyone <@1> hello"
        assert sent.allowed_mentions == {"parse": []} and not sent.pings
        assert fake.messages_in(fake.general, ephemeral=False) == [sent]
        assert run.payload["member"]["permissions"] == str(fake.guild.permissions(fake.alice))
        assert not fake.guild.permissions(fake.alice) & (1 << 13)
        assert fake.guild.permissions(fake.mod) & (1 << 13)


async def test_edit_rate_check_flags_fast_edits():
    async with FakeDiscord(edit_rate="record") as fake, fake.running(MiniBot(fake.guild.id)):
        run = await fake.send_slash_command("story new", {"title": "Fast"})
        [message] = await run.wait_messages(1)
        await fake.wait_until(lambda: len(fake.edits_of(message)) == 3)
        kinds = [v.kind for v in fake.violations]
        assert kinds == ["message_edit_rate", "message_edit_rate"]
        assert fake.violations[0].message_id == message.id


async def test_enforced_edit_rate_makes_discord_py_wait():
    async with FakeDiscord(edit_rate="enforce") as fake, fake.running(MiniBot(fake.guild.id)):
        started = time.monotonic()
        run = await fake.send_slash_command("story new", {"title": "Slow"})
        [message] = await run.wait_messages(1)
        await fake.wait_until(lambda: len(fake.edits_of(message)) == 3, timeout=10)
        edits = fake.edits_of(message)
        assert all(b.t - a.t >= 0.99 for a, b in zip(edits[1:], edits[2:], strict=False))
        assert time.monotonic() - started >= 1.0
        assert 429 in [c.status for c in fake.calls_to("PATCH /webhooks/*")]


async def test_gateway_speaks_plain_json_heartbeats_and_rejects_a_bad_token():
    async with FakeDiscord() as fake, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{fake.gateway_url}?v=10&encoding=json") as ws:
            hello = await ws.receive_json(timeout=2)
            assert hello["op"] == 10 and hello["d"]["heartbeat_interval"] == 41_250
            await ws.send_json({"op": 1, "d": None})
            assert (await ws.receive_json(timeout=2))["op"] == 11
            await ws.send_json({"op": 2, "d": {"token": fake.token, "intents": 1, "properties": {}}})
            ready, guild = await ws.receive_json(timeout=2), await ws.receive_json(timeout=2)
            assert (ready["t"], ready["s"], guild["t"], guild["s"]) == ("READY", 1, "GUILD_CREATE", 2)
            assert ready["d"]["application"]["id"] == str(fake.app_id)
            assert ready["d"]["guilds"] == [{"id": str(fake.guild.id), "unavailable": True}]
            roles = {r["name"]: int(r["permissions"]) for r in guild["d"]["roles"]}
            assert roles["Moderator"] & (1 << 13) and not roles["@everyone"] & (1 << 13)
            assert {m["user"]["username"] for m in guild["d"]["members"]} == {"StoryBot", "alice", "mod"}
        async with http.ws_connect(fake.gateway_url) as ws:
            await ws.receive_json(timeout=2)
            await ws.send_json({"op": 2, "d": {"token": "wrong"}})
            closing = await ws.receive(timeout=2)
            assert closing.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 4004


async def test_a_dropped_connection_is_resumed_and_interactions_still_arrive():
    async with FakeDiscord() as fake, fake.running(MiniBot(fake.guild.id)):
        first = fake.connection
        await fake.drop_connection()
        await fake.wait_until(lambda: fake.connections[-1] is not first and fake.connections[-1].ready)
        resumed = fake.connections[-1]
        assert [m["op"] for m in resumed.received if m["op"] != 1] == [6]  # RESUME, no new IDENTIFY
        assert resumed.session_id == first.session_id
        run = await fake.send_slash_command("rate", {"passage": 2})
        assert (await run.response()).type == 4


async def test_a_button_can_update_the_message_it_sits_on():
    async with FakeDiscord() as fake, fake.running(MiniBot(fake.guild.id)):
        run = await fake.send_slash_command("rate", {"passage": 3})
        [message] = await run.wait_messages(1)
        press = await fake.press_button(message, "close:3")
        assert (await press.response()).type == 7
        assert (
            message.content == "Passage 3 (closed)" and message.components == [] and len(message.edits) == 1
        )
        assert press.messages == [] and press.original is message
        with pytest.raises(LookupError, match="no component"):
            await fake.press_button(message, "close:3")


async def test_five_429s_make_discord_py_give_up_and_four_do_not():
    """discord.py tries a request five times, waiting each 429's retry_after, then raises."""
    async with FakeDiscord() as fake, fake.running(MiniBot(fake.guild.id)) as bot:
        channel = bot.get_partial_messageable(fake.general.id)
        fake.rate_limit("POST /channels/*/messages", times=4, retry_after=0.02)
        sent = await channel.send("made it")
        assert fake.message(sent.id).content == "made it"
        fake.rate_limit("POST /channels/*/messages", times=5, retry_after=0.02)
        with pytest.raises(discord.HTTPException) as refused:
            await channel.send("lost")
        assert refused.value.status == 429
        posts = fake.calls_to("POST /channels/*/messages")
        assert [c.status for c in posts] == [429] * 4 + [200] + [429] * 5
        assert not any(m.content == "lost" for m in fake.messages_in(fake.general))


async def test_a_global_429_holds_back_the_bots_other_requests_but_not_webhooks():
    async with FakeDiscord() as fake, aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bot {fake.token}"}
        channel = f"{fake.api_base}/channels/{fake.general.id}"
        fake.rate_limit("POST /channels/*/messages", retry_after=0.3, is_global=True)
        async with http.post(f"{channel}/messages", json={"content": "hi"}, headers=auth) as r:
            body = await r.json()
            assert r.status == 429 and body["global"] is True and body["retry_after"] == 0.3
            assert r.headers["X-RateLimit-Global"] == "true" and r.headers["X-RateLimit-Scope"] == "global"
            assert float(r.headers["X-RateLimit-Reset-After"]) == 0.3 and r.headers["Via"]
        async with http.get(channel, headers=auth) as r:  # another route, no rule of its own
            assert r.status == 429 and (await r.json())["global"] is True
        async with http.post(f"{fake.api_base}/webhooks/{fake.app_id}/nope", json={"content": "x"}) as r:
            assert r.status == 404  # webhooks are not under the global limit: answered as usual
        await asyncio.sleep(0.3)
        async with http.get(channel, headers=auth) as r:
            assert r.status == 200


async def test_links_unfurl_unless_embeds_are_suppressed_and_an_edit_changes_only_that_flag():
    async with FakeDiscord() as fake, fake.running(MiniBot(fake.guild.id)) as bot:
        channel = bot.get_partial_messageable(fake.general.id)
        plain = fake.message((await channel.send("see https://example.com/a")).id)
        quiet = await channel.send("see https://example.com/b", suppress_embeds=True)
        assert plain.unfurled == ["https://example.com/a"] and fake.message(quiet.id).unfurled == []
        await channel.get_partial_message(quiet.id).edit(content="now https://example.com/c")
        assert fake.message(quiet.id).unfurled == []  # an edit without flags keeps them
        full = await channel.fetch_message(quiet.id)
        await full.edit(content="again https://example.com/d")  # Message.edit sends suppress=False
        assert fake.message(quiet.id).unfurled == ["https://example.com/d"]
        await full.edit(suppress=True)
        assert fake.message(quiet.id).unfurled == [] and not fake.message(quiet.id).ephemeral


async def test_an_attachment_option_carries_its_size_and_its_bytes_come_from_the_cdn():
    """Discord resolves an attachment option to an attachment object (id, filename, size, url) and serves
    the bytes from its CDN without the bot's token: discord.py's Attachment reads them there."""
    got: list[tuple[int, bytes]] = []

    class Bot(discord.Client):
        def __init__(self):
            super().__init__(intents=discord.Intents.none())
            self.tree = app_commands.CommandTree(self)

            @app_commands.command(name="take", description="Takes a file")
            async def take(interaction: discord.Interaction, file: discord.Attachment) -> None:
                got.append((file.size, await file.read()))
                await interaction.response.send_message(file.filename, ephemeral=True)

            self.tree.add_command(take)

    async with FakeDiscord(strict_commands=False) as fake, fake.running(Bot()):
        upload = Upload("notes.json", b'{"a": 1}', size=99)
        run = await fake.send_slash_command("take", {"file": upload})
        assert (await run.response()).data["content"] == "notes.json"
        assert got == [(99, b'{"a": 1}')] and fake.downloads == [upload.id]
        url = f"{fake.url}/attachments/{upload.id}/other.json"
        async with aiohttp.ClientSession() as session, session.get(url) as missing:
            assert missing.status == 404
