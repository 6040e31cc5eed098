"""The slash commands: /continue, /write, /story new|show|undo|reset|export, /privacy.

Each one: the member's flood guard, one call to the story service, one answer. A refusal (StoryError)
is told only to the member who asked; what changes the story is said in the channel.
"""

from __future__ import annotations

import functools
import io
import re
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands

from ..core.service import StoryError
from .client import answer, channel, member
from .stream import Poster, send_text, shown

if TYPE_CHECKING:
    from .client import StoryBot

Interaction = discord.Interaction
Length = Literal["short", "medium", "long"]


def guarded(func):
    """Flood guard first; a StoryError becomes a private answer naming the problem."""

    @functools.wraps(func)
    async def run(interaction: Interaction, *args, **kwargs) -> None:
        if not await interaction.client.admit(interaction):
            return
        try:
            await func(interaction, *args, **kwargs)
        except StoryError as exc:
            await answer(interaction, str(exc))

    return run


def _bot(interaction: Interaction) -> StoryBot:
    return interaction.client  # type: ignore[return-value]


@app_commands.command(name="continue", description="The model writes the next passage of the story")
@app_commands.describe(
    direction="What should happen next, in a sentence (optional)",
    length="How long a passage (default: the model's usual)",
)
@guarded
async def continue_(
    interaction: Interaction,
    direction: app_commands.Range[str, 1, 300] | None = None,
    length: Length | None = None,
) -> None:
    bot = _bot(interaction)
    deferred = await interaction.response.defer(thinking=True)  # first, well within Discord's 3 s
    events = bot.service.continue_story(channel(interaction), member(interaction), direction, length)
    await bot.stream(interaction, events, deferred.message_id if deferred else None)


@app_commands.command(name="write", description="Add your own passage to the story")
@app_commands.describe(text="The passage (up to 6000 characters)")
@guarded
async def write(interaction: Interaction, text: app_commands.Range[str, 1, 6000]) -> None:
    bot = _bot(interaction)
    passage = bot.service.write(channel(interaction), member(interaction), text)
    footer = f"\n-# passage {passage.position} by {shown(passage.author_name)}"
    await send_text(Poster(bot, interaction, None), shown(passage.text), footer)


story = app_commands.Group(name="story", description="The channel's story", guild_only=True)


@story.command(name="new", description="Start a new story in this channel (the old one is archived)")
@app_commands.describe(title="A title (optional)")
@guarded
async def new(interaction: Interaction, title: app_commands.Range[str, 1, 100] | None = None) -> None:
    started = _bot(interaction).service.start(channel(interaction), member(interaction), title)
    await answer(
        interaction,
        f"📖 New story: **{discord.utils.escape_markdown(started.title or 'Untitled')}**. "
        "Write its opening with `/write`, then ask the model to `/continue`.",
        ephemeral=False,
    )


@story.command(name="show", description="Show the story so far (only to you)")
@guarded
async def show(interaction: Interaction) -> None:
    current = _bot(interaction).service.show(channel(interaction))
    title = f"📖 **{discord.utils.escape_markdown(current.title or 'Untitled')}**"
    if not current.passages:
        await answer(interaction, f"{title}: no passages yet. Write the opening with `/write`.")
        return
    lines: list[str] = []
    budget = 2000 - len(title) - 80
    for p in reversed(current.passages):  # the newest passages that fit
        line = f"**{p.position}** · {'model' if p.by_model else p.author_name}: {p.text}"
        if len(line) > budget:
            if not lines:
                lines.append(line[: budget - 1] + "…")
            break
        lines.append(line)
        budget -= len(line) + 2
    earlier = len(current.passages) - len(lines)
    note = f"\n-# {earlier} earlier passages: `/story export` for the whole story" if earlier else ""
    await answer(interaction, title + "\n\n" + "\n\n".join(reversed(lines)) + note)


@story.command(
    name="undo", description="Take the newest passage out (another member's needs Manage Messages)"
)
@guarded
async def undo(interaction: Interaction) -> None:
    may_manage = interaction.permissions.manage_messages
    passage = _bot(interaction).service.undo(channel(interaction), member(interaction), may_manage)
    preview = passage.text if len(passage.text) <= 80 else passage.text[:79] + "…"
    await answer(
        interaction,
        f"↩️ {interaction.user.display_name} took out passage {passage.position}: “{preview}”",
        ephemeral=False,
    )


@story.command(name="reset", description="Empty the story (other members' passages need Manage Messages)")
@guarded
async def reset(interaction: Interaction) -> None:
    may_manage = interaction.permissions.manage_messages
    n = _bot(interaction).service.reset(channel(interaction), member(interaction), may_manage)
    await answer(interaction, f"🧹 {interaction.user.display_name} reset the story: {n} passages taken out.",
                 ephemeral=False)  # fmt: skip


@story.command(name="export", description="The story as a Markdown file (only to you)")
@guarded
async def export(interaction: Interaction) -> None:
    service = _bot(interaction).service
    current = service.show(channel(interaction))
    markdown = service.export(channel(interaction))
    name = re.sub(r"[^\w-]+", "-", (current.title or "story").lower()).strip("-")[:60] or "story"
    await interaction.response.send_message(
        f"📄 {len(current.passages)} passages", ephemeral=True,
        file=discord.File(io.BytesIO(markdown.encode()), filename=f"{name}.md"),
    )  # fmt: skip


@app_commands.command(name="privacy", description="Keep your passages and ratings out of training data")
@app_commands.describe(
    feedback="exclude: keep your passages and ratings out of training data; include: allow"
)
@guarded
async def privacy(interaction: Interaction, feedback: Literal["exclude", "include"] | None = None) -> None:
    service, who = _bot(interaction).service, member(interaction)
    if feedback is not None:
        service.set_opt_out(who, feedback == "exclude")
    if service.opted_out(who):
        state = "excluded: nothing you write or rate goes into training data (`/privacy include` to allow)"
    else:
        state = "included: your passages and ratings may help train the model (`/privacy exclude` to opt out)"
    await answer(interaction, f"🔒 Your feedback is {state}.")


def add_commands(tree: app_commands.CommandTree) -> None:
    for command in (continue_, write, privacy):
        command.guild_only = True  # stories live in server channels
    for command in (continue_, write, story, privacy):
        tree.add_command(command)
