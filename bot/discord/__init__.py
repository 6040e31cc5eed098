"""The Discord adapter: a thin driver of the story service (client, commands, buttons, streaming)."""
