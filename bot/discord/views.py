"""The buttons under a model passage: 👍 and 👎 (with counts), Regenerate, Show reasoning, Edit, and ◀ ▶
to step through its takes when it has several.

They are `DynamicItem`s: the generation id lives in the custom_id (`story:rate:<id>:up`), the classes
are registered once in `setup_hook`, so buttons keep working after a restart and no view is kept per
message. A press only decodes the custom_id and hands over to the story cog (cog.py), through the cog's
guard, as every command goes. This module sits below the cog, so it finds the cog by name.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, cast

import discord
from discord.ui import Button, DynamicItem, Item

STORY_COG = "Story"  # the story cog's name (StoryCog in cog.py)
VALUES = {"up": 1, "down": -1}


class ButtonActions(Protocol):
    """What the buttons ask of the story cog."""

    async def guarded(
        self, interaction: discord.Interaction, action: Callable[[], Awaitable[None]]
    ) -> None: ...

    async def rate(self, interaction: discord.Interaction, generation_id: int, value: int) -> None: ...

    async def regenerate(self, interaction: discord.Interaction, generation_id: int) -> None: ...

    async def show_reasoning(self, interaction: discord.Interaction, generation_id: int) -> None: ...

    async def edit_form(self, interaction: discord.Interaction, generation_id: int) -> None: ...

    async def choose_take(self, interaction: discord.Interaction, generation_id: int) -> None: ...


class PassageButton(DynamicItem[Button], template=r"story:(rate|regen|why|edit|take):\d+.*"):
    """A button of one passage: its look, and `press`, the cog's action for it. (This base is never
    registered; each subclass matches its own custom_ids.)"""

    def __init__(
        self, generation_id: int, custom_id: str, emoji: str, label: str, disabled: bool = False, row: int = 0
    ):
        style = discord.ButtonStyle.secondary
        button: Button[Any] = Button(
            emoji=emoji, label=label, style=style, custom_id=custom_id, disabled=disabled, row=row
        )
        super().__init__(button)
        self.generation_id = generation_id

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        story = cast(ButtonActions, interaction.client.get_cog(STORY_COG))
        await story.guarded(interaction, lambda: self.press(story, interaction))

    async def press(self, story: ButtonActions, interaction: discord.Interaction) -> None:
        raise NotImplementedError


class RateButton(PassageButton, template=r"story:rate:(?P<gen>\d+):(?P<v>up|down)"):
    def __init__(self, generation_id: int, value: int, count: int = 0):
        word, emoji = ("up", "👍") if value > 0 else ("down", "👎")
        super().__init__(generation_id, f"story:rate:{generation_id}:{word}", emoji, str(count))
        self.value = value

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: Item, match: re.Match[str]):
        return cls(int(match["gen"]), VALUES[match["v"]])

    async def press(self, story: ButtonActions, interaction: discord.Interaction) -> None:
        await story.rate(interaction, self.generation_id, self.value)


class RegenerateButton(PassageButton, template=r"story:regen:(?P<gen>\d+)"):
    def __init__(self, generation_id: int):
        super().__init__(generation_id, f"story:regen:{generation_id}", "🔄", "Regenerate")

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: Item, match: re.Match[str]):
        return cls(int(match["gen"]))

    async def press(self, story: ButtonActions, interaction: discord.Interaction) -> None:
        await story.regenerate(interaction, self.generation_id)


class ReasoningButton(PassageButton, template=r"story:why:(?P<gen>\d+)"):
    def __init__(self, generation_id: int):
        super().__init__(generation_id, f"story:why:{generation_id}", "💭", "Show reasoning")

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: Item, match: re.Match[str]):
        return cls(int(match["gen"]))

    async def press(self, story: ButtonActions, interaction: discord.Interaction) -> None:
        await story.show_reasoning(interaction, self.generation_id)


class EditButton(PassageButton, template=r"story:edit:(?P<gen>\d+)"):
    """Opens the form to edit the passage (the take shown, `generation_id`)."""

    def __init__(self, generation_id: int):
        super().__init__(generation_id, f"story:edit:{generation_id}", "✏️", "Edit")

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: Item, match: re.Match[str]):
        return cls(int(match["gen"]))

    async def press(self, story: ButtonActions, interaction: discord.Interaction) -> None:
        await story.edit_form(interaction, self.generation_id)


class TakeButton(PassageButton, template=r"story:take:(?P<gen>\d+):(?P<way>prev|next)"):
    """◀ or ▶: show the take `generation_id` (the one before or after the take shown) for everyone."""

    def __init__(self, generation_id: int, way: str, disabled: bool = False):
        emoji, label = ("◀️", "Previous take") if way == "prev" else ("▶️", "Next take")
        super().__init__(generation_id, f"story:take:{generation_id}:{way}", emoji, label, disabled, row=1)

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: Item, match: re.Match[str]):
        return cls(int(match["gen"]), match["way"])

    async def press(self, story: ButtonActions, interaction: discord.Interaction) -> None:
        await story.choose_take(interaction, self.generation_id)


DYNAMIC_ITEMS = (RateButton, RegenerateButton, ReasoningButton, EditButton, TakeButton)


def passage_view(
    generation_id: int, up: int = 0, down: int = 0, takes: Sequence[int] = ()
) -> discord.ui.View:
    """The buttons of one model passage showing take `generation_id`; the counts are its ratings so
    far; `takes`: every take of its slot, oldest first (◀ ▶ when there are several)."""
    view = discord.ui.View(timeout=None)
    for item in (
        RateButton(generation_id, 1, up),
        RateButton(generation_id, -1, down),
        RegenerateButton(generation_id),
        ReasoningButton(generation_id),
        EditButton(generation_id),
    ):
        view.add_item(item)
    if len(takes) > 1 and generation_id in takes:
        k = takes.index(generation_id)
        prev, after = takes[max(k - 1, 0)], takes[min(k + 1, len(takes) - 1)]
        view.add_item(TakeButton(prev, "prev", disabled=k == 0))
        view.add_item(TakeButton(after, "next", disabled=k == len(takes) - 1))
    return view
