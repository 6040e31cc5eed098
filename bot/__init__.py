"""The story bot: writers grow a story together in a Discord channel or a terminal; the model continues it."""
