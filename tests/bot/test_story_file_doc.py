"""The story file example in docs/story-files.md is a file the bot reads, and writes back the same."""

from __future__ import annotations

import json
import re
from pathlib import Path

from bot.core import storyfile

DOC = Path(__file__).resolve().parents[2] / "docs" / "story-files.md"


def test_the_documented_example_is_a_story_file_the_bot_reads():
    example = re.search(r"```json\n(.*?)\n```", DOC.read_text(), re.S)
    assert example is not None
    document = json.loads(example.group(1))
    doc = storyfile.read(document, max_passage_chars=6000, max_memory_chars=2000, max_note_chars=300)
    assert doc.model_dump() == document  # every field the example shows is the schema's, in its order
    assert list(document) == list(storyfile.StoryDocument.model_fields)
