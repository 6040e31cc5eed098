"""The buttons under a model passage: 👍 and 👎 (with counts), Regenerate, Show reasoning.

They are `DynamicItem`s: the generation id lives in the custom_id (`story:rate:<id>:up`), the classes
are registered once in `setup_hook`, so buttons keep working after a restart and no view is kept per
message. The callbacks only decode the custom_id and hand over to the bot.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import discord

if TYPE_CHECKING:
    from .client import StoryBot

VALUES = {"up": 1, "down": -1}


class RateButton(
    discord.ui.DynamicItem[discord.ui.Button], template=r"story:rate:(?P<gen>\d+):(?P<v>up|down)"
):
    def __init__(self, generation_id: int, value: int, count: int = 0):
        word = "up" if value > 0 else "down"
        super().__init__(
            discord.ui.Button(
                emoji="👍" if value > 0 else "👎",
                label=str(count),
                style=discord.ButtonStyle.secondary,
                custom_id=f"story:rate:{generation_id}:{word}",
            )
        )
        self.generation_id, self.value = generation_id, value

    @classmethod
    async def from_custom_id(cls, interaction, item, match: re.Match[str]):
        return cls(int(match["gen"]), VALUES[match["v"]])

    async def callback(self, interaction: discord.Interaction[StoryBot]) -> None:
        await interaction.client.rate(interaction, self.generation_id, self.value)


class RegenerateButton(discord.ui.DynamicItem[discord.ui.Button], template=r"story:regen:(?P<gen>\d+)"):
    def __init__(self, generation_id: int):
        super().__init__(
            discord.ui.Button(
                emoji="🔄",
                label="Regenerate",
                style=discord.ButtonStyle.secondary,
                custom_id=f"story:regen:{generation_id}",
            )  # fmt: skip
        )
        self.generation_id = generation_id

    @classmethod
    async def from_custom_id(cls, interaction, item, match: re.Match[str]):
        return cls(int(match["gen"]))

    async def callback(self, interaction: discord.Interaction[StoryBot]) -> None:
        await interaction.client.regenerate(interaction, self.generation_id)


class ReasoningButton(discord.ui.DynamicItem[discord.ui.Button], template=r"story:why:(?P<gen>\d+)"):
    def __init__(self, generation_id: int):
        super().__init__(
            discord.ui.Button(
                emoji="💭",
                label="Show reasoning",
                style=discord.ButtonStyle.secondary,
                custom_id=f"story:why:{generation_id}",
            )  # fmt: skip
        )
        self.generation_id = generation_id

    @classmethod
    async def from_custom_id(cls, interaction, item, match: re.Match[str]):
        return cls(int(match["gen"]))

    async def callback(self, interaction: discord.Interaction[StoryBot]) -> None:
        await interaction.client.show_reasoning(interaction, self.generation_id)


DYNAMIC_ITEMS = (RateButton, RegenerateButton, ReasoningButton)


def passage_view(generation_id: int, up: int = 0, down: int = 0) -> discord.ui.View:
    """The buttons of one model passage; the counts are the ratings so far."""
    view = discord.ui.View(timeout=None)
    for item in (RateButton(generation_id, 1, up), RateButton(generation_id, -1, down),
                 RegenerateButton(generation_id), ReasoningButton(generation_id)):  # fmt: skip
        view.add_item(item)
    return view
