"""The story core: passages, the context fitted to the model's window, and the operations on a story.

Nothing here imports Discord; the Discord adapter, the console and the benchmark all drive
:class:`bot.core.service.StoryService`.
"""
