"""The story cog: the slash commands /continue, /write, /story new|show|undo|reset|export|memory|note|
context|edit|takes|take|erase|redo|fork|list|open, /lore add|edit|remove|list, /privacy, and what the
passage buttons and the forms (a passage, a lore entry) do.

Each one: the member's flood guard, one call to the story service, one answer. The guard is one pair
for all of them: `interaction_check` (the flood guard, which discord.py runs before every command) and
`failed` (the reply to what did not go through: the tree's on_error hands every command's failure to
it); the buttons and the lore form go through both by `guarded`. A refusal (StoryError, or the flood
guard) is told only to the member who asked; what changes the story is said in the channel.

Who sees a story's inputs (its memory, author's note, lorebook, rolling summary and the context preview
built from them): one rule, in :meth:`StoryCog.show_inputs`, for every command that shows them. Any member
who can use the story's commands in the channel may see them, since any such member may change them and
the changes are said in the channel; each is shown only to the member who asked (ephemeral), never posted.
"""

from __future__ import annotations

import io
import logging
import math
import re
from collections.abc import Awaitable, Callable
from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands

from ..core import history
from ..core import lore as lorebook
from ..core.files import check_size
from ..core.lore import LoreEntry
from ..core.ratelimit import MemberRateLimit, Pace
from ..core.service import MAX_NOTE_CHARS, MAX_SUMMARY_CHARS, MAX_TITLE_CHARS, StoryError, StoryService
from ..core.settings import RANGES
from ..core.settings import describe as describe_settings
from ..core.story import MAX_PERSONA_CHARS, MAX_PERSONA_NAME, Channel, Member, Passage, Summary
from ..core.text import MESSAGE_LIMIT, OPTION_LIMIT
from .delivery import Deliveries
from .stream import Poster, member_text, message_ref, parse_ref, render, send_text, shown, split
from .views import STORY_COG, passage_view

_log = logging.getLogger(__name__)

Interaction = discord.Interaction
Length = Literal["short", "medium", "long"]
KEYWORDS_CHARS = lorebook.MAX_KEYWORDS * (lorebook.MAX_KEYWORD_CHARS + 2)
Name = app_commands.Range[str, 1, lorebook.MAX_NAME_CHARS]
Keywords = app_commands.Range[str, 1, KEYWORDS_CHARS]
LoreText = app_commands.Range[str, 1, lorebook.MAX_TEXT_CHARS]
# Each option's bounds are the core's (Discord checks them before the command runs; the core checks them
# again for every other way in). discord.py reads them when the class is made, before any settings load,
# so a bound that is a setting (`max_passage_chars`, `max_memory_chars`) is not one: the option takes
# Discord's longest (OPTION_LIMIT) and the service refuses past the setting, saying so.
Title = app_commands.Range[str, 1, MAX_TITLE_CHARS]
PersonaName = app_commands.Range[str, 1, MAX_PERSONA_NAME]
PersonaText = app_commands.Range[str, 1, MAX_PERSONA_CHARS]
Temperature = app_commands.Range[float, RANGES["temperature"][0], RANGES["temperature"][1]]
TopP = app_commands.Range[float, RANGES["top_p"][0], RANGES["top_p"][1]]
RepeatPenalty = app_commands.Range[float, RANGES["repeat_penalty"][0], RANGES["repeat_penalty"][1]]
# Discord's own choices, shorter than the core takes: a direction is a sentence (the prompt takes up to
# MAX_GUIDANCE_CHARS), a model a name.
Direction = app_commands.Range[str, 1, 300]
ModelName = app_commands.Range[str, 1, 100]


def _span(name: str) -> str:
    """A sampling setting's range, as its option's help says it: "0 to 2"."""
    low, high = RANGES[name]
    return f"{low:g} to {high:g}"


NO_THREADS = (
    "The bot may not open threads here (it needs Create Public Threads and Send Messages in Threads)."
)


class SlowDown(app_commands.CheckFailure):
    """The member's flood guard: they must wait (the message says how long)."""


class StoryCog(commands.Cog, name=STORY_COG):
    """The story service, driven from Discord. `StoryCog(None)` only lends its commands' shapes (for
    `story-bot sync`)."""

    def __init__(
        self,
        deliveries: Deliveries | None,
        commands_per_minute: int = Pace.commands_per_minute,
        settings_role: str | None = None,
    ):
        self._deliveries = deliveries
        self.limiter = MemberRateLimit(commands_per_minute)
        self.settings_role = settings_role  # who may change a story's settings (None: Manage Messages)
        for command in (self.continue_, self.write, self.privacy):
            command.guild_only = True  # stories live in server channels (the groups say so themselves)

    @property
    def deliveries(self) -> Deliveries:
        if self._deliveries is None:
            raise RuntimeError("this bot was made to sync commands only")
        return self._deliveries

    @property
    def service(self) -> StoryService:
        return self.deliveries.service

    async def cog_unload(self) -> None:
        """The bot is closing: passages being written are stopped (their messages say so), deliveries
        left to the next start, and the summaries being written stopped (retried when the story next
        overflows)."""
        if self._deliveries is not None:
            await self._deliveries.close()
            await self._deliveries.service.aclose()

    # --- the guard: every command, button and form ---------------------------------------------------
    async def interaction_check(self, interaction: Interaction) -> bool:
        """The per-member flood guard; refuses with SlowDown (told by `failed`) when they must wait."""
        wait = self.limiter.take(str(interaction.user.id))
        if wait > 0:
            raise SlowDown(f"slow down: try again in {math.ceil(wait)} s")
        return True

    async def failed(self, interaction: Interaction, error: Exception) -> None:
        """The one reply to a command, button or form that did not go through: a refusal told only to
        the member who acted; anything else logged, and the member told it was the bot."""
        error = getattr(error, "original", error)  # what a command raised, wrapped by discord.py
        if isinstance(error, StoryError | SlowDown):
            await answer(interaction, str(error))
            return
        _log.error("%s failed", _what(interaction), exc_info=error)
        await answer(interaction, "something went wrong on the bot's side; the story is unchanged: try again")

    async def guarded(self, interaction: Interaction, action: Callable[[], Awaitable[None]]) -> None:
        """A button's or the lore form's action, through the commands' own check and reply."""
        try:
            await self.interaction_check(interaction)
            await action()
        except Exception as exc:
            await self.failed(interaction, exc)

    # --- writing ---------------------------------------------------------------------------------------
    @app_commands.command(name="continue", description="The model writes the next passage of the story")
    @app_commands.describe(
        direction="What should happen next, in a sentence (optional)",
        length="How long a passage (default: the model's usual)",
    )
    async def continue_(
        self,
        interaction: Interaction,
        direction: Direction | None = None,
        length: Length | None = None,
    ) -> None:
        deferred = await interaction.response.defer(thinking=True)  # first, well within Discord's 3 s
        events = self.service.continue_story(channel(interaction), member(interaction), direction, length)
        await self.deliveries.show(interaction, events, deferred.message_id if deferred else None)

    @app_commands.command(name="write", description="Add your own passage to the story")
    @app_commands.describe(text=f"The passage (up to {OPTION_LIMIT} characters)")
    async def write(self, interaction: Interaction, text: app_commands.Range[str, 1, OPTION_LIMIT]) -> None:
        passage = self.service.write(channel(interaction), member(interaction), text)
        shown_as = member_text(passage.text, passage.position, passage.author_name)
        ids = await send_text(self.deliveries.poster(interaction), *shown_as)
        self.service.passage_message(passage, message_ref(interaction.channel_id or 0, ids))  # for edits

    # --- the passage buttons (views.py) --------------------------------------------------------------
    async def rate(self, interaction: Interaction, generation_id: int, value: int) -> None:
        tally = self.service.rate(generation_id, member(interaction), value, str(interaction.channel_id))
        # Update the counts on the message itself: the rater sees them change, so no extra message.
        self.deliveries.pacing.window(interaction.channel_id or 0).note()
        await interaction.response.edit_message(view=passage_view(generation_id, tally.up, tally.down))

    async def regenerate(self, interaction: Interaction, generation_id: int) -> None:
        await interaction.response.defer()  # no "thinking" message: the new take is a new message
        events = self.service.regenerate(channel(interaction), member(interaction), generation_id)
        await self.deliveries.show(interaction, events, None)
        # The old take stays in the database as a take; the store now owes the message that showed the
        # passage the "replaced" state (no buttons), delivered like any other.
        self.deliveries.deliver_owed()

    async def edit_form(self, interaction: Interaction, generation_id: int) -> None:
        """The ✏️ button: the form to edit the passage, prefilled."""
        passage = self.service.passage_of(generation_id, channel(interaction))
        await self._open_form(interaction, passage)

    async def choose_take(self, interaction: Interaction, generation_id: int) -> None:
        """◀ ▶: show that take for everyone; the passage's messages follow."""
        await interaction.response.defer()  # the message is edited by the delivery below
        self.service.choose_generation(channel(interaction), member(interaction), generation_id)
        self.deliveries.deliver_owed()

    async def show_reasoning(self, interaction: Interaction, generation_id: int) -> None:
        reasoning = self.service.reasoning(generation_id, str(interaction.channel_id))
        await send_text(self._private(interaction), f"💭 {shown(reasoning)}")

    # --- /story ------------------------------------------------------------------------------------------
    story = app_commands.Group(name="story", description="The channel's story", guild_only=True)

    @story.command(name="new", description="Start a new story in this channel (the old one is archived)")
    @app_commands.describe(title="A title (optional)")
    async def new(self, interaction: Interaction, title: Title | None = None) -> None:
        """In a text channel, the new story gets a thread of its own (the channel's story stays); in a
        thread, or where the bot may not open threads, it replaces the story here (kept: `/story list`)."""
        where, who = channel(interaction), member(interaction)
        opening = "Write its opening with `/write`, then ask the model to `/continue`."
        thread = None
        if isinstance(interaction.channel, discord.TextChannel) and _may_open_threads(interaction):
            await interaction.response.defer(thinking=True)  # making a thread is a request to Discord
            thread = await self._thread(interaction, title or "New story")
        if thread is not None:
            started = self.service.start(Channel(str(thread.id), where.guild_id, where.id), who, title)
            name = _title(started.title)
            await thread.send(f"📖 {name}. {opening}")
            said = f"📖 New story {name} in {thread.mention}. This channel's story stays as it was."
        else:
            started = self.service.start(where, who, title)
            name = _title(started.title)
            said = f"📖 New story: {name}. {opening}"
            if isinstance(interaction.channel, discord.TextChannel):  # threads could not be made
                said += f"\n-# {NO_THREADS} The story it replaced is kept: `/story list`."
        await answer(interaction, said, ephemeral=False, links=True)

    # --- shaping the story: edit, takes, erase and redo, fork, the library -----------------------------
    @story.command(
        name="edit",
        description="Edit a passage (yours, one you asked the model for, or any with Manage Messages)",
    )
    @app_commands.describe(
        position="The passage's number (`/story show`)", text="Its new text (none: a form)"
    )
    async def edit(
        self,
        interaction: Interaction,
        position: app_commands.Range[int, 1],
        text: app_commands.Range[str, 1, OPTION_LIMIT] | None = None,
    ) -> None:
        where = channel(interaction)
        if text is None:
            await self._open_form(interaction, self.service.passage(where, position))
            return
        may_manage = interaction.permissions.manage_messages
        passage = self.service.edit(where, member(interaction), position, text, may_manage)
        await self.edited(interaction, passage)

    async def _open_form(self, interaction: Interaction, passage: Passage) -> None:
        history.check_editable(passage, str(interaction.user.id), interaction.permissions.manage_messages)
        if len(passage.text) > history.MODAL_TEXT_LIMIT:
            raise StoryError(
                f"passage {passage.position} has {len(passage.text):,} characters, more than a Discord form "
                f"holds ({history.MODAL_TEXT_LIMIT:,}): give its new text with `/story edit "
                f"position:{passage.position} text:…`"
            )
        await interaction.response.send_modal(PassageEditForm(self, passage, interaction.user.id))

    async def edited(self, interaction: Interaction, passage: Passage) -> None:
        """Say the edit in the channel, then bring the passage's messages up to date."""
        who = interaction.user.display_name
        said = f"✏️ {who} edited passage {passage.position}: “{_preview(passage.text, 200)}”"
        await answer(interaction, said, ephemeral=False)
        if passage.by_model:
            self.deliveries.deliver_owed()
            return
        ref = self.service.passage_message(passage)
        if ref:
            where, ids = parse_ref(ref)
            text, footer = member_text(passage.text, passage.position, passage.author_name, passage.edited)
            pieces = split(text)
            pieces[-1] += footer
            poster = self.deliveries.poster(None, channel_id=where)
            await render(
                poster, ids, pieces, None, {}, lambda ids: self._keep_ref(passage, message_ref(where, ids))
            )

    def _keep_ref(self, passage: Passage, ref: str) -> None:
        self.service.passage_message(passage, ref)

    @story.command(name="takes", description="The takes of the model's newest passage (only to you)")
    async def takes(self, interaction: Interaction) -> None:
        passage, texts = self.service.takes(channel(interaction))
        lines = [
            f"{'▶' if k == passage.take else '·'} **take {k}/{len(texts)}**: {_preview(t, 300)}"
            for k, t in enumerate(texts, 1)
        ]
        await answer(interaction, f"🎞️ Passage {passage.position}\n" + "\n".join(lines))

    @story.command(name="take", description="Show take K of the model's newest passage, for everyone")
    @app_commands.describe(k="The take's number (`/story takes`)")
    async def take(self, interaction: Interaction, k: app_commands.Range[int, 1]) -> None:
        passage = self.service.choose_take(channel(interaction), member(interaction), k)
        who, n = interaction.user.display_name, passage.alternatives
        said = f"🎞️ {who} chose take {passage.take}/{n} of passage {passage.position}."
        await answer(interaction, said, ephemeral=False)
        self.deliveries.deliver_owed()

    @story.command(
        name="erase", description="Take a passage and everything after it out (redo brings them back)"
    )
    @app_commands.rename(from_="from")
    @app_commands.describe(from_="The first passage to take out (`/story show` numbers them)")
    async def erase(self, interaction: Interaction, from_: app_commands.Range[int, 1]) -> None:
        may_manage = interaction.permissions.manage_messages
        gone = self.service.erase(channel(interaction), member(interaction), from_, may_manage)
        said = (
            f"⏪ {interaction.user.display_name} erased passages {gone[0].position}–{gone[-1].position} "
            f"({len(gone)}): `/story redo` brings them back while nothing new is added."
        )
        await answer(interaction, said, ephemeral=False)

    @story.command(
        name="redo", description="Bring back the passages erased last, while nothing was added since"
    )
    async def redo(self, interaction: Interaction) -> None:
        back = self.service.redo(channel(interaction), member(interaction))
        who = interaction.user.display_name
        said = f"⏩ {who} brought back passages {back[0].position}–{back[-1].position}."
        await answer(interaction, said, ephemeral=False)

    @story.command(name="fork", description="A new story from passages 1..N, in a thread (this one stays)")
    @app_commands.rename(from_="from")
    @app_commands.describe(from_="The last passage the new story keeps", title="Its title (optional)")
    async def fork(
        self,
        interaction: Interaction,
        from_: app_commands.Range[int, 1],
        title: Title | None = None,
    ) -> None:
        where, who = channel(interaction), member(interaction)
        self.service.passage(where, from_)  # refused before a thread is made for nothing
        thread = None
        if _may_open_threads(interaction):
            await interaction.response.defer(thinking=True)  # making a thread is a request to Discord
            thread = await self._thread(interaction, title or f"Fork at passage {from_}")
        into = None if thread is None else Channel(str(thread.id), where.guild_id, str(thread.parent_id))
        fork = self.service.fork(where, who, from_, title, into)
        name, by = _title(fork.title), shown(who.name)
        if thread is None:
            said = (
                f"🍴 {by} forked the story at passage {from_} as story {fork.id}, {name} (kept in "
                f"this channel's list). {NO_THREADS} `/story open id:{fork.id}` makes it this channel's "
                "story."
            )
        else:
            last = fork.passages[-1]
            opening = (
                f"🍴 {name}: passages 1–{last.position} of <#{where.id}>, with its memory, note, "
                f"lore and summary. It ends: “{shown(_preview(last.text, 300))}”\n"
                "Carry on with `/write` or `/continue`."
            )
            await thread.send(opening)
            said = (
                f"🍴 {by} forked the story at passage {from_} into {thread.mention}: {name}. "
                "This story is unchanged."
            )
        await answer(interaction, said, ephemeral=False, links=True)

    @story.command(name="list", description="This channel's stories, and its threads' (only to you)")
    async def list_(self, interaction: Interaction) -> None:
        lines = []
        for s in reversed(self.service.library(channel(interaction))):  # the newest first
            state = "open" if s.active else "archived"
            fork = f" · fork of {s.forked_from}" if s.forked_from else ""
            lines.append(
                f"**{s.id}** · {_title(s.title)[2:-2]} · "
                f"{s.passages} passages · <t:{int(s.last_activity)}:R> · <#{s.channel_id}> · "
                f"{state}{fork}"
            )
        text = "📚 Stories here (`/story open id:…` reopens one)\n" + "\n".join(lines or ["(none yet)"])
        if len(text) > MESSAGE_LIMIT:
            text = text[: MESSAGE_LIMIT - 40].rsplit("\n", 1)[0] + "\n-# older stories left out"
        await answer(interaction, text, links=True)

    @story.command(name="open", description="Make an archived story of this channel its story again")
    @app_commands.describe(id="The story's number (`/story list`)")
    async def open(self, interaction: Interaction, id: app_commands.Range[int, 1]) -> None:
        story = self.service.open(channel(interaction), id)
        who = shown(interaction.user.display_name)
        said = (
            f"📖 {who} reopened story {story.id}, {_title(story.title)} "
            f"({len(story.passages)} passages), in <#{story.channel_id}>; the story there before is "
            "kept (`/story list`)."
        )
        await answer(interaction, said, ephemeral=False, links=True)

    async def _thread(self, interaction: Interaction, name: str) -> discord.Thread | None:
        """A new public thread of the interaction's text channel (a thread's own channel), or None where
        the bot may not open one."""
        where = interaction.channel
        if isinstance(where, discord.Thread):
            where = where.parent
        if not isinstance(where, discord.TextChannel):
            return None
        try:
            return await where.create_thread(
                name=name[:100], type=discord.ChannelType.public_thread, auto_archive_duration=10080
            )
        except discord.Forbidden:
            return None

    @story.command(name="show", description="Show the story so far, or its rolling summary (only to you)")
    @app_commands.describe(summary="Show the rolling summary standing in for the oldest passages instead")
    async def show(self, interaction: Interaction, summary: bool = False) -> None:
        if summary:
            await self._show_summary(interaction)
            return
        current = self.service.show(channel(interaction))
        title = f"📖 **{discord.utils.escape_markdown(current.title or 'Untitled')}**"
        if not current.passages:
            await answer(interaction, f"{title}: no passages yet. Write the opening with `/write`.")
            return
        lines: list[str] = []
        budget = MESSAGE_LIMIT - len(title) - 80
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
    async def undo(self, interaction: Interaction) -> None:
        may_manage = interaction.permissions.manage_messages
        passage = self.service.undo(channel(interaction), member(interaction), may_manage)
        preview = passage.text if len(passage.text) <= 80 else passage.text[:79] + "…"
        await answer(
            interaction,
            f"↩️ {interaction.user.display_name} took out passage {passage.position}: “{preview}”",
            ephemeral=False,
        )

    @story.command(name="reset", description="Empty the story (other members' passages need Manage Messages)")
    async def reset(self, interaction: Interaction) -> None:
        may_manage = interaction.permissions.manage_messages
        n = self.service.reset(channel(interaction), member(interaction), may_manage)
        said = f"🧹 {interaction.user.display_name} reset the story: {n} passages taken out."
        await answer(interaction, said, ephemeral=False)

    @story.command(
        name="export", description="The story as a file: Markdown, or JSON to import (only to you)"
    )
    @app_commands.describe(format="markdown (to read) or json (everything, for /story import)")
    async def export(
        self, interaction: Interaction, format: Literal["markdown", "json"] = "markdown"
    ) -> None:
        current = self.service.show(channel(interaction))
        if format == "json":
            text, suffix = self.service.export_json(channel(interaction)), "json"
        else:
            text, suffix = self.service.export(channel(interaction)), "md"
        name = re.sub(r"[^\w-]+", "-", (current.title or "story").lower()).strip("-")[:60] or "story"
        await interaction.response.send_message(
            f"📄 {len(current.passages)} passages",
            ephemeral=True,
            file=discord.File(io.BytesIO(text.encode()), filename=f"{name}.{suffix}"),
        )

    @story.command(
        name="import", description="A story file (/story export format:json) as this channel's story"
    )
    @app_commands.describe(file="The .json file `/story export format:json` wrote")
    async def import_(self, interaction: Interaction, file: discord.Attachment) -> None:
        """The story there now is archived (kept: `/story list`); the import is the channel's story."""
        data = await read_attachment(interaction, file)
        story, report, notes = self.service.import_story(channel(interaction), member(interaction), data)
        details = [
            f"📥 Imported: {len(story.passages)} passages · {report.summary()}",
            *notes,
            *(o.line() for o in report.outcomes),
        ]
        await answer(interaction, _lines(details))  # the report, to the importer (the deferred answer)
        said = (
            f"📥 {interaction.user.display_name} imported {_title(story.title)} ({len(story.passages)} "
            "passages) as this channel's story; the one before is kept (`/story list`)."
        )
        await answer(interaction, said, ephemeral=False)

    # --- long stories: memory, author's note, context, summary --------------------------------------
    @story.command(
        name="memory", description="Show or set what the model must not forget (premise, tone, rules)"
    )
    @app_commands.describe(
        text="The new memory, pinned at the start of every context (no option: show it)",
        clear="Clear the memory",
    )
    async def memory(
        self,
        interaction: Interaction,
        text: app_commands.Range[str, 1, OPTION_LIMIT] | None = None,
        clear: bool = False,
    ) -> None:
        service = self.service  # its limit is a setting: the core says when a memory is over it
        await self._pinned(interaction, "memory", "memory", service.memory, service.set_memory, text, clear)

    @story.command(
        name="note", description="Show or set the author's note: a standing direction for the story"
    )
    @app_commands.describe(
        text="Where the story should go and how it should read (a /continue direction replaces it once)",
        clear="Clear the author's note",
    )
    async def note(
        self,
        interaction: Interaction,
        text: app_commands.Range[str, 1, MAX_NOTE_CHARS] | None = None,
        clear: bool = False,
    ) -> None:
        service = self.service
        await self._pinned(interaction, "author's note", "note", service.note, service.set_note, text, clear)

    @story.command(name="context", description="Exactly what the model receives next (only to you)")
    @app_commands.describe(
        direction="Preview with this /continue direction", length="Preview with this /continue length"
    )
    async def context(
        self,
        interaction: Interaction,
        direction: Direction | None = None,
        length: Length | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)  # it asks Ollama about the model
        preview = await self.service.context_preview(
            channel(interaction), member(interaction), direction, length
        )
        r, text = preview.record, preview.user_text
        unit = "tokens" if r["unit"] == "tokens" else "tokens (estimated)"
        older = f", {r['dropped']} older left out" if r["dropped"] else ""
        cast = ", ".join(p["name"] for p in r["cast"]) or "none"
        header = shown(
            f"🔎 Next for **{preview.model}** (window {preview.window} tokens, {preview.num_predict} for the "
            f"answer): context {r['size']} of {r['budget']} {unit} · parts: {', '.join(r['parts'])} · lore: "
            f"{', '.join(e['name'] for e in r['lore']) or 'none'} · {len(r['passage_ids'])} passages{older}"
            f" · guidance: {r['guidance'] or 'none'} · cast: {cast}"
            f"\n-# ⚙️ {preview.settings_line}"
        )[:1500]
        inline = f"{header}\n```text\n{text}\n```"
        if len(inline) <= MESSAGE_LIMIT and "```" not in text:  # in a code block: shown exactly as written
            await self.show_inputs(interaction, inline)
            return
        note = "\n-# the prompt, exactly as the model reads it, is in the file"
        await self.show_inputs(interaction, header, note, file=("context.txt", text))

    async def show_inputs(
        self, interaction: Interaction, text: str, footer: str = "", file: tuple[str, str] | None = None
    ) -> None:
        """Show a story's inputs to the member who asked, and only to them (the rule: module docstring).
        Text past one message is split; `file` (name, contents) goes along as an attachment."""
        if file is not None:
            attachment = discord.File(io.BytesIO(file[1].encode()), filename=file[0])
            if interaction.response.is_done():
                await interaction.followup.send(text + footer, ephemeral=True, file=attachment)
            else:
                await interaction.response.send_message(text + footer, ephemeral=True, file=attachment)
        elif len(text) + len(footer) <= MESSAGE_LIMIT:
            await self._private(interaction).send(text + footer)
        else:
            await send_text(self._private(interaction), text, footer)

    def _private(self, interaction: Interaction) -> Poster:
        return self.deliveries.poster(interaction, ephemeral=True)

    async def _pinned(
        self, interaction: Interaction, label: str, command: str, get, put, text: str | None, clear: bool
    ) -> None:
        """Show (no option), set (`text`) or clear (`clear`) the memory or the author's note."""
        where = channel(interaction)
        if text is None and not clear:
            note = get(where)
            if note is None or not note.text:
                await self.show_inputs(
                    interaction, f"This story has no {label}: `/story {command} text:…` sets it."
                )
            else:
                await self.show_inputs(interaction, f"📌 **The story's {label}**\n{shown(note.text)}")
            return
        if text is not None and clear:
            raise StoryError(f"give the new {label} as `text`, or `clear: True` to clear it, not both")
        note = put(where, member(interaction), "" if clear else text)
        who = interaction.user.display_name
        if not note.text:
            said = f"🧹 {who} cleared the story's {label}."
        else:
            said = (
                f"📌 {who} set the story's {label} ({len(note.text):,} characters): “{_preview(note.text)}”"
            )
        await answer(interaction, said, ephemeral=False)

    async def _show_summary(self, interaction: Interaction) -> None:
        state = self.service.summary_state(channel(interaction))
        if state.current is not None:
            text = f"📜 **Summary of the first {state.covers} passages**\n{shown(state.current.text or '')}"
        elif state.last_error:
            text = "📜 No summary yet."
        else:
            text = "📜 No summary: the whole story still fits the model's window."
        footer = "\n-# a new summary is being written" if state.writing else ""
        if state.paused:
            footer += "\n-# new summaries are paused: `/story summary resume`"
        if state.last_error:
            footer += f"\n-# the last attempt failed: {shown(state.last_error)}"
        await self.show_inputs(interaction, text, footer)

    # --- the story's settings ------------------------------------------------------------------------
    def may_configure(self, interaction: Interaction) -> bool:
        """The member holds the role the operator named for the settings (its name or id), or without
        one, the Manage Messages permission."""
        if self.settings_role is None:
            return interaction.permissions.manage_messages
        roles = getattr(interaction.user, "roles", [])
        return any(self.settings_role in (r.name, str(r.id)) for r in roles)

    @story.command(name="settings", description="Show or set the story's model, sampling and default length")
    @app_commands.describe(
        model="The model (one the operator allows here: no option lists them)",
        temperature=f"How adventurous the wording is ({_span('temperature')})",
        top_p=f"Keep only the likeliest words up to this share ({_span('top_p')})",
        repeat_penalty=f"How much to avoid repeating words ({_span('repeat_penalty')}; 1 is none)",
        length="The length /continue asks when none is given",
        reset="Back to the operator's defaults first",
    )
    async def settings(
        self,
        interaction: Interaction,
        model: ModelName | None = None,
        temperature: Temperature | None = None,
        top_p: TopP | None = None,
        repeat_penalty: RepeatPenalty | None = None,
        length: Length | None = None,
        reset: bool = False,
    ) -> None:
        where = channel(interaction)
        changes = {
            "model": model,
            "temperature": temperature,
            "top_p": top_p,
            "repeat_penalty": repeat_penalty,
            "length": length,
        }
        if not reset and all(v is None for v in changes.values()):
            current, used = self.service.settings(where)
            allowed = ", ".join(self.service.allowed_models(where))
            who = f"the {self.settings_role} role" if self.settings_role else "Manage Messages"
            await self.show_inputs(
                interaction,
                f"⚙️ {describe_settings(current, used)}\n-# models allowed here: {allowed}; "
                f"changing them needs {who}",
            )
            return
        new = self.service.set_settings(
            where, member(interaction), self.may_configure(interaction), reset=reset, **changes
        )
        _, used = self.service.settings(where)
        said = (
            f"⚙️ {interaction.user.display_name} changed the story's settings: {describe_settings(new, used)}"
        )
        await answer(interaction, said, ephemeral=False)

    # --- the rolling summary, by hand ----------------------------------------------------------------
    summary = app_commands.Group(name="summary", description="The rolling summary", parent=story)

    @summary.command(name="edit", description="Rewrite the rolling summary in a form (the model's is kept)")
    async def summary_edit(self, interaction: Interaction) -> None:
        state = self.service.summary_state(channel(interaction))
        if state.current is None:
            raise StoryError(
                "this story has no summary yet to edit: one is written once the story outgrows the model's "
                "window (`/story show summary:True`)"
            )
        await interaction.response.send_modal(SummaryEditForm(self, state.current, interaction.user.id))

    async def summary_edited(self, interaction: Interaction, writing: bool) -> None:
        said = f"📜 {interaction.user.display_name} rewrote the story's summary."
        if writing:
            said += " A summary the model is writing now will be dropped: this edit wins."
        await answer(interaction, said, ephemeral=False)

    @summary.command(name="restore", description="Bring back the summary's previous version")
    async def summary_restore(self, interaction: Interaction) -> None:
        back = self.service.restore_summary(channel(interaction), member(interaction))
        said = (
            f"📜 {interaction.user.display_name} restored the previous summary: "
            f"“{_preview(back.text or '', 200)}”"
        )
        await answer(interaction, said, ephemeral=False)

    @summary.command(name="pause", description="Stop new summaries being written (the current one stays)")
    async def summary_pause(self, interaction: Interaction) -> None:
        self.service.pause_summaries(channel(interaction), member(interaction), True)
        said = (
            f"⏸️ {interaction.user.display_name} paused the summaries: `/story summary resume` restarts them."
        )
        await answer(interaction, said, ephemeral=False)

    @summary.command(name="resume", description="Let new summaries be written again")
    async def summary_resume(self, interaction: Interaction) -> None:
        self.service.pause_summaries(channel(interaction), member(interaction), False)
        await answer(
            interaction, f"▶️ {interaction.user.display_name} resumed the summaries.", ephemeral=False
        )

    # --- personas: who plays whom --------------------------------------------------------------------
    persona = app_commands.Group(
        name="persona", description="The character you write in this story", guild_only=True
    )

    @persona.command(name="set", description="Say which character you write (pinned in the model's context)")
    @app_commands.describe(name="Your character's name", description="Who they are, in a sentence or two")
    async def persona_set(
        self,
        interaction: Interaction,
        name: PersonaName,
        description: PersonaText,
    ) -> None:
        p = self.service.set_persona(channel(interaction), member(interaction), name, description)
        said = f"🎭 {interaction.user.display_name} plays {_bold(p.name)}: {p.description}"
        await answer(interaction, said, ephemeral=False)

    @persona.command(name="clear", description="Stop playing your character in this story")
    async def persona_clear(self, interaction: Interaction) -> None:
        if not self.service.clear_persona(channel(interaction), member(interaction)):
            raise StoryError("you have no persona in this story: `/persona set name description` sets one")
        await answer(interaction, f"🎭 {interaction.user.display_name} left the cast.", ephemeral=False)

    @persona.command(name="list", description="The story's cast (only to you)")
    async def persona_list(self, interaction: Interaction) -> None:
        cast = self.service.cast(channel(interaction))
        lines = [
            f"**{discord.utils.escape_markdown(p.name)}** ({p.member_name}): {p.description}" for p in cast
        ]
        await self.show_inputs(
            interaction,
            "🎭 The cast\n" + "\n".join(lines)
            if lines
            else "🎭 No cast yet: `/persona set name description`.",
        )

    # --- the lorebook --------------------------------------------------------------------------------
    lore = app_commands.Group(
        name="lore",
        description="The story's lorebook: what the model is told when a keyword comes up",
        guild_only=True,
    )

    @lore.command(
        name="add", description="Add an entry the model is told about when a keyword of it comes up"
    )
    @app_commands.describe(
        name="What it is about: a character, a place, an object",
        keywords="Words that bring it in, separated by commas (e.g. Mara, the smuggler)",
        text="What the model should know, in a sentence or two",
        always="Bring it into every passage, mentioned or not",
    )
    async def lore_add(
        self, interaction: Interaction, name: Name, keywords: Keywords, text: LoreText, always: bool = False
    ) -> None:
        change = lorebook.LoreChange(name, keywords, text, always)
        entry = self.service.lore_add(channel(interaction), member(interaction), change)
        said = f"📚 {interaction.user.display_name} added {_named(entry)} to the lorebook ({_keys(entry)})."
        await answer(interaction, said, ephemeral=False)

    @lore.command(name="edit", description="Change an entry: the options you give (none: edit it in a form)")
    @app_commands.describe(
        name="The entry's name",
        keywords="Its new keywords, separated by commas",
        text="Its new text",
        new_name="A new name for it",
        always="Bring it into every passage (True) or only when mentioned (False)",
    )
    async def lore_edit(
        self,
        interaction: Interaction,
        name: Name,
        keywords: Keywords | None = None,
        text: LoreText | None = None,
        new_name: Name | None = None,
        always: bool | None = None,
    ) -> None:
        where = channel(interaction)
        if keywords is None and text is None and new_name is None and always is None:
            entry = self.service.lore_entry(where, name)
            await interaction.response.send_modal(LoreEditForm(self, entry))
            return
        change = lorebook.LoreChange(new_name, keywords, text, always)
        entry = self.service.lore_edit(where, member(interaction), name, change)
        await _edited(interaction, entry)

    @lore.command(name="remove", description="Take an entry out (another member's needs Manage Messages)")
    @app_commands.describe(name="The entry's name")
    async def lore_remove(self, interaction: Interaction, name: Name) -> None:
        entry = self.service.lore_remove(
            channel(interaction), member(interaction), name, interaction.permissions.manage_messages
        )
        said = f"📚 {interaction.user.display_name} took {_named(entry)} out of the lorebook."
        await answer(interaction, said, ephemeral=False)

    @lore.command(name="list", description="The lorebook's entries (only to you)")
    async def lore_list(self, interaction: Interaction) -> None:
        entries = self.service.lore(channel(interaction))
        if not entries:
            await self.show_inputs(
                interaction, "The lorebook is empty: `/lore add name keywords text` adds one."
            )
            return
        body = "\n\n".join(f"{_named(e)} · {_keys(e)} · v{e.version}\n{e.text}" for e in entries)
        title = f"📚 {len(entries)} lore entries"
        if len(title) + len(body) + 2 <= MESSAGE_LIMIT:
            await self.show_inputs(interaction, shown(f"{title}\n\n{body}"))
            return
        await self.show_inputs(
            interaction,
            f"{title}: the whole lorebook is in the file",
            file=("lorebook.md", f"# Lorebook\n\n{body}\n"),
        )

    @lore.command(name="import", description="Entries from a SillyTavern World Info, NovelAI or our lorebook")
    @app_commands.describe(file="The lorebook's .json (or .lorebook) file")
    async def lore_import(self, interaction: Interaction, file: discord.Attachment) -> None:
        data = await read_attachment(interaction, file)
        report = self.service.import_lore(channel(interaction), member(interaction), data)
        await answer(interaction, _lines([f"📚 {report.summary()}", *(o.line() for o in report.outcomes)]))
        said = f"📚 {interaction.user.display_name} imported a lorebook ({report.summary()})."
        await answer(interaction, said, ephemeral=False)

    @lore.command(name="export", description="The lorebook as a file: ours, or SillyTavern's (only to you)")
    @app_commands.describe(format="ours (for /lore import) or sillytavern (World Info)")
    async def lore_export(
        self, interaction: Interaction, format: Literal["ours", "sillytavern"] = "ours"
    ) -> None:
        text = self.service.export_lore(channel(interaction), format)
        n = len(self.service.lore(channel(interaction)))
        await self.show_inputs(interaction, f"📚 {n} lore entries", file=(f"lorebook-{format}.json", text))

    # --- /privacy ------------------------------------------------------------------------------------
    @app_commands.command(name="privacy", description="Keep your passages and ratings out of training data")
    @app_commands.describe(
        feedback="exclude: keep your passages and ratings out of training data; include: allow"
    )
    async def privacy(
        self, interaction: Interaction, feedback: Literal["exclude", "include"] | None = None
    ) -> None:
        who = member(interaction)
        if feedback is not None:
            self.service.set_opt_out(who, feedback == "exclude")
        if self.service.opted_out(who):
            state = (
                "excluded: nothing you write or rate goes into training data (`/privacy include` to allow)"
            )
        else:
            state = (
                "included: your passages and ratings may help train the model (`/privacy exclude` to opt out)"
            )
        await answer(interaction, f"🔒 Your feedback is {state}.")


class PassageEditForm(discord.ui.Modal):
    """`/story edit position` alone, or ✏️: the passage's text, prefilled. It keeps the revision and story
    the member saw, so an edit (or a take chosen) while the form was open is not overwritten."""

    def __init__(self, story: StoryCog, passage: Passage, member_id: int):
        # discord.py finds an open form by its custom_id alone: one per member, or two members' forms
        # on the same revision would be one.
        super().__init__(
            title=f"Edit passage {passage.position}",
            timeout=900,
            custom_id=f"story:passage:{passage.id}:{passage.revision}:{member_id}",
        )
        self.story, self.passage = story, passage
        self.text: discord.ui.TextInput = discord.ui.TextInput(
            label="The passage",
            style=discord.TextStyle.paragraph,
            default=passage.text,
            max_length=history.MODAL_TEXT_LIMIT,
            custom_id="text",
        )
        self.add_item(self.text)

    async def on_submit(self, interaction: Interaction) -> None:
        await self.story.guarded(interaction, lambda: self._save(interaction))

    async def _save(self, interaction: Interaction) -> None:
        p = self.passage
        edited = self.story.service.edit(
            channel(interaction),
            member(interaction),
            p.position,
            self.text.value,
            interaction.permissions.manage_messages,
            revision=p.revision,
            story_id=p.story_id,
        )
        await self.story.edited(interaction, edited)


class SummaryEditForm(discord.ui.Modal):
    """`/story summary edit`: the summary, prefilled. It keeps the summary the member saw, so a summary
    that came in while the form was open is not overwritten unseen (the member is told to look again)."""

    def __init__(self, story: StoryCog, current: Summary, member_id: int):
        super().__init__(
            title="Edit the summary", timeout=900, custom_id=f"story:summary:{current.id}:{member_id}"
        )
        self.story, self.seen = story, current.id
        self.text: discord.ui.TextInput = discord.ui.TextInput(
            label="What happened so far",
            style=discord.TextStyle.paragraph,
            default=current.text,
            max_length=MAX_SUMMARY_CHARS,
            custom_id="text",
        )
        self.add_item(self.text)

    async def on_submit(self, interaction: Interaction) -> None:
        await self.story.guarded(interaction, lambda: self._save(interaction))

    async def _save(self, interaction: Interaction) -> None:
        where = channel(interaction)
        writing = self.story.service.summary_state(where).writing
        self.story.service.edit_summary(where, member(interaction), self.text.value, self.seen)
        await self.story.summary_edited(interaction, writing)


class LoreEditForm(discord.ui.Modal):
    """`/lore edit name` alone: the entry's keywords and text, prefilled. It keeps the version the member
    saw, so an edit someone made while the form was open is not overwritten (the core refuses it)."""

    def __init__(self, story: StoryCog, entry: LoreEntry):
        super().__init__(
            title=f"Edit {entry.name}"[:45], custom_id=f"story:lore:{entry.id}:{entry.version}", timeout=900
        )
        self.story, self.entry_name, self.version = story, entry.name, entry.version
        self.keywords: discord.ui.TextInput = discord.ui.TextInput(
            label="Keywords, separated by commas",
            default=", ".join(entry.keywords),
            required=False,
            max_length=KEYWORDS_CHARS,
            custom_id="keywords",
        )
        self.text: discord.ui.TextInput = discord.ui.TextInput(
            label="What the model should know",
            style=discord.TextStyle.paragraph,
            default=entry.text,
            max_length=lorebook.MAX_TEXT_CHARS,
            custom_id="text",
        )
        self.add_item(self.keywords)
        self.add_item(self.text)

    async def on_submit(self, interaction: Interaction) -> None:
        await self.story.guarded(interaction, lambda: self._save(interaction))

    async def _save(self, interaction: Interaction) -> None:
        change = lorebook.LoreChange(keywords=self.keywords.value, text=self.text.value)
        where, who = channel(interaction), member(interaction)
        entry = self.story.service.lore_edit(where, who, self.entry_name, change, self.version)
        await _edited(interaction, entry)


# --- what the commands read from an interaction, and how they answer ---------------------------------
def member(interaction: Interaction) -> Member:
    return Member(str(interaction.user.id), interaction.user.display_name)


def channel(interaction: Interaction) -> Channel:
    where = interaction.channel
    parent = getattr(where, "parent_id", None)  # threads
    return Channel(
        str(interaction.channel_id),
        str(interaction.guild_id) if interaction.guild_id else None,
        str(parent) if parent else None,
    )


async def answer(interaction: Interaction, text: str, ephemeral: bool = True, links: bool = False) -> None:
    """A short reply to whoever acted: the interaction's response, or a followup once answered. Member
    text it quotes may hold links: they do not unfurl. `links`: the text links channels (<#id>) the bot
    named itself, and the member text in it went through `shown` already."""
    text = (text if links else shown(text))[:MESSAGE_LIMIT]
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=ephemeral, suppress_embeds=True)
    else:
        await interaction.response.send_message(text, ephemeral=ephemeral, suppress_embeds=True)


async def read_attachment(interaction: Interaction, file: discord.Attachment) -> bytes:
    """An attachment's bytes, refused before downloading when Discord says it is over the import limit
    (and again if it turns out larger). Acknowledged first, privately (a download may take a while; the
    report, or the refusal, goes to the member alone, then what changed is said in the channel)."""
    check_size(file.size)
    await interaction.response.defer(ephemeral=True, thinking=True)
    data = await file.read()
    check_size(len(data))
    return data


def _lines(lines: list[str], limit: int = MESSAGE_LIMIT) -> str:
    """Lines up to one message; the rest said to be left out."""
    out: list[str] = []
    for i, line in enumerate(lines):
        if sum(len(x) + 1 for x in out) + len(line) > limit - 60:
            out.append(f"-# … and {len(lines) - i} more lines")
            break
        out.append(line)
    return "\n".join(out)


def _may_open_threads(interaction: Interaction) -> bool:
    """The bot may open a thread of this text channel (or of the text channel of this thread)."""
    where = interaction.channel
    parent = where.parent if isinstance(where, discord.Thread) else where
    perms = interaction.app_permissions
    return (
        isinstance(parent, discord.TextChannel)
        and perms.create_public_threads
        and perms.send_messages_in_threads
    )


def _what(interaction: Interaction) -> str:
    """The command, button or form an interaction is, for the log."""
    if interaction.command is not None:
        return f"/{interaction.command.qualified_name}"
    return str(dict(interaction.data or {}).get("custom_id", "an interaction"))


def _preview(text: str, n: int = 300) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _title(title: str | None) -> str:
    """A story's title as a reply shows it, bold, with nothing in it able to ping."""
    return f"**{shown(discord.utils.escape_markdown(title or 'Untitled'))}**"


def _keys(entry: LoreEntry) -> str:
    keys = ", ".join(entry.keywords)
    return ("always on" + (f"; also {keys}" if keys else "")) if entry.always_on else f"keywords: {keys}"


def _named(entry: LoreEntry) -> str:
    return _bold(entry.name)


def _bold(name: str) -> str:
    return f"**{discord.utils.escape_markdown(name)}**"


async def _edited(interaction: Interaction, entry: LoreEntry) -> None:
    who = interaction.user.display_name
    said = f"📚 {who} edited {_named(entry)} ({_keys(entry)}; version {entry.version})."
    await answer(interaction, said, ephemeral=False)
