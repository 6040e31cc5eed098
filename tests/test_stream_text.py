"""StreamText: a token's bytes into the text a stream shows, as Ollama's runner shows it."""

from __future__ import annotations

from engines.text_stream import StreamText


def _feed(stream: StreamText, *pieces: bytes) -> list[str]:
    return [stream.add(p) for p in pieces]


def test_an_invalid_byte_is_shown_at_once_and_what_follows_keeps_streaming():
    # 0x80 cannot begin a character: Ollama passes it on (U+FFFD once JSON-encoded) and goes on.
    assert _feed(StreamText(), b"ch", b"\x80", b" rain", b" fell") == ["ch", "\ufffd", " rain", " fell"]


def test_a_character_split_over_tokens_waits_for_its_last_byte():
    s = StreamText()
    assert _feed(s, "é".encode()[:1], "é".encode()[1:] + b"t") == ["", "ét"]
    # An unfinished character at the end is flushed as U+FFFD, never dropped silently.
    assert s.add("—".encode()[:2]) == "" and s.add(b"", final=True) == "\ufffd"


def test_a_lead_byte_followed_by_no_continuation_does_not_hold_the_stream():
    assert _feed(StreamText(), b"a\xc3", b"b", b"c") == ["a", "\ufffdb", "c"]


def test_a_stop_string_ends_the_text_and_is_dropped():
    s = StreamText(["</answer>"])
    assert _feed(s, b"She ran", b".</ans", b"wer> more") == ["She ran", ".", ""]
    assert s.stopped and s.add(b"late") == "" and s.add(b"", final=True) == ""


def test_text_that_only_looked_like_a_stop_is_shown_once_it_cannot_be_one():
    s = StreamText(["</answer>", "\n\n\n"])
    assert _feed(s, b"a </a", b"side", b"\n\n", b"x") == ["a ", "</aside", "", "\n\nx"]
    assert not s.stopped


def test_the_earliest_of_several_stops_wins():
    s = StreamText(["END", "<|im_end|>"])
    assert s.add(b"one<|im_end|>two END") == "one" and s.stopped


def test_the_final_flush_gives_what_was_held_for_a_stop():
    s = StreamText(["</answer>"])
    assert s.add(b"the end </ans") == "the end " and s.add(b"", final=True) == "</ans"
