"""The Discord adapter: a thin driver of the story service (client -> cog -> delivery -> stream -> views)."""
