"""A stand-in Discord for end-to-end tests: REST and gateway on loopback sockets, for the real discord.py.

discord.py builds every REST URL (interaction callbacks and webhooks included) from `discord.http.Route.BASE`,
and a plain `Client` opens its first gateway connection at `DiscordWebSocket.DEFAULT_GATEWAY` (only
`AutoShardedClient` asks `GET /gateway/bot`; both are served). Entering the fake patches those two class
attributes and restores them on exit, so only one fake may be active at a time.

What a test gets:
- a small world: one guild with #general and #stories, roles @everyone and Moderator (Manage Messages), users
  alice (writer) and mod (Moderator), and the bot's own user; `add_user`, `add_channel`, `add_guild` for more;
- injection: `send_slash_command("story new", {"title": "x"})` (an attachment option takes an `Upload`),
  `press_button(message_id, custom_id)`,
  `choose(message_id, custom_id, values)`, `post_message(channel, content)`; each returns a handle; the
  event goes to the newest live connection on the guild's shard (identify's `shard`, as Discord routes);
- records: every REST call (`calls`), messages with every revision and timestamp (`messages_in`, `edits_of`),
  interaction callbacks (`callbacks`), command syncs (`syncs`, `commands`), and protocol `violations`;
- Discord's limits: 2000-char content, 4096-char embed descriptions, custom_id <= 100, 5 rows of 5 components,
  empty messages, acknowledgement within 3 s and only once, followups only after the acknowledgement; injected
  429s (`rate_limit`: the next N matching requests, with `retry_after`, the `X-RateLimit-*` headers and the
  `global` flag as Discord sends them; a global one also refuses the bot's other requests, interactions
  and webhooks excepted, until it is over) and an optional edit-rate check (`edit_rate="record"` or
  `"enforce"`);
- message flags as Discord keeps them: an edit changes only SUPPRESS_EMBEDS; links in a message without
  it unfurl (`Message.unfurled`).

    async with FakeDiscord() as fake:
        async with fake.running(MyBot()):
            run = await fake.send_slash_command("story new", {"title": "Rain"})
            await run.response()                                  # first successful callback
            message = (await run.wait_messages(1))[0]
            assert fake.edits_of(message.id)[-1].content.endswith("rain.")

Where things are: `world` (guilds, channels, roles, users, uploads, Discord's limits and flags), `records`
(calls, messages, interactions, violations), `wire` (JSON answers, 429s, form errors, message and command
checks), and FakeDiscord (`fake`) built from one class per concern: `application` (bot user, commands),
`gateway` (websocket, connections), `users` (what users do), `interactions` (callbacks, followups,
webhooks), `channels` (messages, history, threads), `ratelimits` (injected 429s, edit-rate check).
"""

from .fake import FakeDiscord

__all__ = ["FakeDiscord"]
