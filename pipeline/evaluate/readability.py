"""Flesch Reading Ease and Gunning Fog exactly as textstat 0.7.x computes them, a text at a time.

textstat cleans and splits the whole text again in every function, counts each sentence's words
through the same path, and looks every word's syllables up anew behind a 128-entry cache. Here a text
is cleaned and split once and each distinct word's syllables and difficulty are worked out once per
process. The word rules, dictionaries and formula constants are textstat's own (imported from it), and
the arithmetic runs in the same order, so the floats are bit-identical to textstat's.
"""

from __future__ import annotations

import re
from itertools import islice

LANG = "en_US"  # textstat's default language

# textstat's word and sentence rules (textstat/backend: constants, transformations, counts), compiled once.
_NONCONTRACTION_APOSTROPHE = re.compile(r"\'(?!" + r"[tsd]|ve|ll|re" + ")")
_KEPT = re.compile(r"[\w\s\']")  # textstat removes every other character: [^\w\s\']
_SENTENCE = re.compile(r"\b[^.!?]+[.!?]*", re.UNICODE)
_WORD_CHAR = re.compile(r"\w")


class _DeletePunctuation(dict):
    """A str.translate table deleting what textstat's [^\\w\\s'] removes, filled per character seen.
    The class is a per-character test, so deleting character by character is the same as re.sub."""

    def __missing__(self, code: int) -> int | None:
        kept = code if _KEPT.match(chr(code)) else None
        self[code] = kept
        return kept


_DELETE_PUNCTUATION = _DeletePunctuation()


def _strip_punctuation(text: str) -> str:
    if "'" in text:
        text = _NONCONTRACTION_APOSTROPHE.sub("", text)
    return text.translate(_DELETE_PUNCTUATION)


def words(text: str) -> list[str]:
    """textstat's word list (`list_words` with its defaults): punctuation out, contractions kept."""
    return _strip_punctuation(text).split()


def lower_words(text: str) -> list[str]:
    """The same words lowercased the way textstat does for syllables: the cleaned text, then split."""
    return _strip_punctuation(text).lower().split()


def _at_most_two_words(piece: str) -> bool:
    """len(words(piece)) <= 2 without cleaning the piece: punctuation removal drops exactly the
    whitespace-separated tokens that hold no word character (\\w), and never splits or joins tokens."""
    return len(list(islice(filter(_WORD_CHAR.search, piece.split()), 3))) <= 2


def both_words(text: str) -> tuple[list[str], list[str]]:
    """`words(text)` and `lower_words(text)` from one cleaning pass."""
    stripped = _strip_punctuation(text)
    return stripped.split(), stripped.lower().split()


class _Memo(dict):
    """A dict that fills itself from a function: hits stay in C (`map(memo.__getitem__, words)`)."""

    def __init__(self, fn):
        super().__init__()
        self._fn = fn

    def __missing__(self, key):
        value = self[key] = self._fn(key)
        return value


class Readability:
    """Holds textstat's dictionaries and the per-word caches."""

    def __init__(self) -> None:
        from textstat.backend.utils import get_cmudict, get_lang_cfg, get_lang_easy_words, get_pyphen

        self.cmudict = get_cmudict(LANG) or {}
        self._pyphen = get_pyphen(LANG)
        self._easy = get_lang_easy_words(LANG)
        self._fre = [get_lang_cfg(LANG, k) for k in ("fre_base", "fre_sentence_length", "fre_syll_per_word")]
        self._fog_threshold = int(get_lang_cfg(LANG, "syllable_threshold"))
        self._syllables = _Memo(self._count_syllables)
        self._difficult = _Memo(self._is_difficult)
        self.syllables = self._syllables.__getitem__
        self.is_difficult = self._difficult.__getitem__

    def _count_syllables(self, word: str) -> int:
        """Syllables of one lowercased word: the CMU dictionary's first pronunciation, else Pyphen."""
        try:
            return sum(1 for phone in self.cmudict[word][0] if phone[-1].isdigit())
        except (TypeError, IndexError, KeyError):
            return len(self._pyphen.positions(word)) + 1

    def _is_difficult(self, word: str) -> int:
        """textstat's `is_difficult_word` (not easy, enough syllables): Gunning Fog's complex words."""
        lower = word.lower()
        if lower in self._easy:
            return 0
        return int(sum(map(self.syllables, lower_words(lower))) >= self._fog_threshold)

    def sentences(self, text: str) -> int:
        """textstat's sentence count: pieces ending in .!? that have more than two words; at least 1."""
        if not text:
            return 0
        pieces = _SENTENCE.findall(text)
        return max(1, len(pieces) - sum(1 for s in pieces if _at_most_two_words(s)))

    def scores(self, text: str, word_list: list[str] | None = None, lower: list[str] | None = None) -> dict:
        """Counts, Flesch Reading Ease and Gunning Fog; pass the word lists if you already have them."""
        if word_list is None or lower is None:
            word_list, lower = both_words(text)
        n_words = len(word_list)
        sentences = self.sentences(text)
        syllables = sum(map(self.syllables, lower)) if text else 0
        difficult = sum(map(self.is_difficult, word_list))
        # The same operations in the same order as textstat, so the floats are identical.
        per_sentence = n_words / sentences if sentences else 0.0
        per_word = syllables / n_words if n_words else 0.0
        base, sentence_weight, syllable_weight = self._fre
        if per_sentence == 0 or per_word == 0:
            fre = 0.0
        else:
            fre = base - sentence_weight * per_sentence - syllable_weight * per_word
        fog = 0.4 * (per_sentence + 100 * difficult / n_words) if n_words else 0.0
        return {
            "words": n_words,
            "sentences": sentences,
            "syllables": syllables,
            "difficult_words": difficult,
            "flesch_reading_ease": fre,
            "gunning_fog": fog,
        }
