"""Fitting the newest passages into the model's window."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from bot.core.context import Budget, CharCounter, ContextTooSmall, TokenizerCounter, build_context
from bot.core.story import AuthorKind, Passage


def _passages(*texts: str) -> list[Passage]:
    return [Passage(i, 1, i, AuthorKind.MEMBER, "1", "A", t) for i, t in enumerate(texts, 1)]


CHARS = CharCounter(chars_per_token=1.0)  # one "token" per character: easy arithmetic


def _room(window: int, num_predict: int = 0) -> int:
    return Budget(window, num_predict).for_context(CHARS, None, None)


def test_everything_fits_oldest_first():
    ctx = build_context(_passages("One.", "Two."), CHARS, Budget(10_000, 500))
    assert ctx.text == "One.\n\nTwo." and ctx.passage_ids == [1, 2] and ctx.dropped == 0 and not ctx.cut
    assert ctx.record()["passage_ids"] == [1, 2] and ctx.record()["unit"] == "chars"


def test_the_newest_passages_win_whole_from_a_step():
    old = "First sentence here. Second sentence here. Third one."
    passages = _passages("Ancient history.", old, "B" * 40)
    frame = 400 - _room(400)  # what the prompt around the context takes
    window = frame + 40 + 2 + len("Third one.") + 5  # room for the newest and a bit of the middle one
    ctx = build_context(passages, CHARS, Budget(window, 0))
    assert ctx.passage_ids == [3] and ctx.dropped == 2 and not ctx.cut  # no passage is cut to fill
    assert ctx.text == "B" * 40 and ctx.size <= ctx.budget


def test_when_not_even_the_newest_step_fits_the_oldest_kept_is_cut_at_a_sentence():
    old = "First sentence here. Second sentence here. Third one."
    passages = _passages("Ancient history.", "B" * 40, old)
    frame = 400 - _room(400)
    ctx = build_context(passages, CHARS, Budget(frame + len("Third one.") + 10, 0))
    assert ctx.passage_ids == [3] and ctx.dropped == 2 and ctx.cut
    assert ctx.text == "Third one." and ctx.size <= ctx.budget


def test_the_answer_budget_is_kept_free():
    passages = _passages(*(f"Sentence number {i}." for i in range(200)))
    roomy = build_context(passages, CHARS, Budget(3000, 0))
    tight = build_context(passages, CHARS, Budget(3000, 1500))
    assert len(tight.passage_ids) < len(roomy.passage_ids)
    assert tight.size <= 3000 - 1500


def test_a_window_too_small_for_the_answer_says_what_to_change():
    with pytest.raises(ContextTooSmall, match="raise num_ctx"):
        build_context(_passages("x"), CHARS, Budget(600, 500))


def test_token_counts_from_a_tokenizer_json(tmp_path):
    vocab = {"[UNK]": 0, "the": 1, "rain": 2, "fell": 3, ".": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(tmp_path / "tokenizer.json"))
    counter = TokenizerCounter(tmp_path)  # a folder holding tokenizer.json works too
    assert counter.unit == "tokens" and counter.count("the rain fell") == 3
    ctx = build_context(_passages("the rain fell"), counter, Budget(4096, 100))
    assert ctx.size == 3 and ctx.record()["unit"] == "tokens"


def test_a_missing_tokenizer_is_named(tmp_path):
    with pytest.raises(ValueError, match="tokenizer.json"):
        TokenizerCounter(tmp_path / "nowhere")
