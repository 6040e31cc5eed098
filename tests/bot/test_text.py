"""Cleaning members' text, defusing mentions, splitting long text for 2000-character messages."""

from __future__ import annotations

import re

import pytest

from bot.core.text import clean_input, defuse_mentions, one_line, split_message


def test_clean_input_drops_control_and_invisible_characters():
    raw = "Hel\u200blo\x00 there\u202e!\r\n\r\n\r\n\r\nNext\x07 line\ufeff\tend  \n"
    assert clean_input(raw) == "Hello there!\n\nNext line\tend"


def test_one_line_collapses_and_cuts():
    assert one_line("  A\n\ttitle \u200b here ", 7) == "A title"


@pytest.mark.parametrize(
    "text",
    ["@everyone look", "hi @here", "<@123456789012345678> and <@!42>", "<@&987> role", "<#555> channel"],
)
def test_mentions_are_made_inert(text):
    out = defuse_mentions(text)
    assert not re.search(r"@(everyone|here)|<@!?\d+>|<@&\d+>|<#\d+>", out)
    assert out.replace("\u200b", "") == text  # nothing else changes


def test_split_prefers_paragraphs_then_sentences():
    para = "Word " * 300  # 1500 characters
    text = f"{para.strip()}.\n\n{para.strip()}."
    parts = split_message(text, 2000)
    assert len(parts) == 2 and all(p.endswith(".") for p in parts)
    sentences = " ".join(f"Sentence {i} is here and it goes on a while." for i in range(100))
    parts = split_message(sentences, 500)
    assert all(len(p) <= 500 for p in parts) and all(p.endswith(".") for p in parts)
    assert " ".join(parts) == sentences


def test_split_never_loses_text_even_in_one_enormous_word():
    text = "x" * 4500
    parts = split_message(text, 2000)
    assert [len(p) for p in parts] == [2000, 2000, 500] and "".join(parts) == text


def test_short_text_is_one_part():
    assert split_message("  hello  ") == ["hello"] and split_message("") == []
