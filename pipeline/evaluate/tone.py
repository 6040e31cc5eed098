"""Polarity and subjectivity exactly as `TextBlob(text).sentiment` gives them (the pattern analyzer).

TextBlob runs pattern's tokenizer and then scores the words against its bundled lexicon, whose every
lookup goes through a Python-level lazy dict. Here the lexicon is a plain dict, each word's entry is
worked out once per process, and the tokenizer's per-token punctuation splitting is cached by token.
The tokenizer's data (punctuation, abbreviations, contractions, emoticons) is imported from TextBlob.
Where a text holds anything the tokenizer's emoticon or sarcasm rewriting could touch, TextBlob's own
tokenizer is used instead, so the words scored are always the ones TextBlob scores.
"""

from __future__ import annotations

import re

from pipeline.evaluate.readability import _Memo


class Tone:
    def __init__(self) -> None:
        from textblob import _text as pattern_text
        from textblob import en as textblob_en

        pattern = textblob_en.sentiment
        self._library_tokenize = pattern.tokenizer
        self._negations = frozenset(pattern.negations)
        self._modifiers = tuple(pattern.modifiers)
        self._is_modifier_word = pattern.modifier
        self._lexicon = dict(pattern.items())  # forces the lazy load, then a plain dict
        self._punctuation_string = pattern_text.PUNCTUATION  # pattern tests `w not in` this string
        self._emoticons: dict[str, float] = {}
        for (_kind, polarity), faces in pattern_text.EMOTICONS.items():  # first kind listed wins
            for face in faces:
                self._emoticons.setdefault(face.lower(), polarity)
        self._entries = {w: self._entry(w) for w in self._lexicon}  # absent: not in the lexicon
        # tokenizer data
        self._replace = dict(pattern_text.replacements)
        self._literal_replace = all(re.escape(k) == k for k in self._replace)
        self._lead = tuple(pattern_text.PUNCTUATION.replace(".", ""))
        self._trail = (*self._lead, ".")
        self._abbreviations = pattern_text.ABBREVIATIONS
        self._abbr_res = (pattern_text.RE_ABBR1, pattern_text.RE_ABBR2, pattern_text.RE_ABBR3)
        self._rewrites = (pattern_text.RE_SARCASM, pattern_text.RE_EMOTICONS)
        self._eos = pattern_text.EOS
        self._pieces = _Memo(self._joined_pieces)
        self._paragraph_re = re.compile(r"\n{2,}")

    # --- tokens -----------------------------------------------------------------------------------
    def _split_token(self, t: str) -> list[str]:
        """pattern's find_tokens on one whitespace-free token: leading and trailing punctuation apart."""
        head, tail = [], []
        while t.startswith(self._lead) and t not in self._replace:
            head.append(t[0])
            t = t[1:]
        while t.endswith(self._trail) and t not in self._replace:
            if t.endswith(self._lead):
                tail.append(t[-1])
                t = t[:-1]
            if t.endswith("..."):
                tail.append("...")
                t = t[:-3].rstrip(".")
            if t.endswith("."):
                if t in self._abbreviations or any(r.match(t) for r in self._abbr_res):
                    break
                tail.append(".")
                t = t[:-1]
        return [*head, *([t] if t else []), *reversed(tail)]

    def _joined_pieces(self, token: str) -> str:
        return " ".join(p for p in self._split_token(token) if p != self._eos)

    def words(self, text: str) -> list[str]:
        """The lowercased words TextBlob's sentiment scores for this text."""
        s = text
        for a, b in self._replace.items():
            s = s.replace(a, b) if self._literal_replace else re.sub(a, b, s)
        s = (
            s.replace("\u201c", " \u201c ")
            .replace("\u201d", " \u201d ")
            .replace("\u2018", " \u2018 ")
            .replace("\u2019", " \u2019 ")
            .replace("'", " ' ")
            .replace('"', ' " ')
        )
        s = self._paragraph_re.sub(f" {self._eos} ", s.replace("\r\n", "\n"))
        # pattern collapses whitespace and takes `(\S+)\s` tokens: str.split() gives the same tokens.
        # Its sentence grouping only drops the end-of-paragraph markers (done per token here), and its
        # emoticon and sarcasm rewrites run per sentence: they can only fire where their pattern also
        # matches the whole joined text, and then pattern's own tokenizer is used.
        joined = " ".join(map(self._pieces.__getitem__, s.split()))
        if self._eos in s:  # the dropped markers left double spaces
            joined = " ".join(joined.split())
        if any(r.search(joined) for r in self._rewrites):
            joined = " ".join(self._library_tokenize(text))
        return joined.lower().split()  # lowercasing joined or per word is the same: no case spans a space

    # --- scores -----------------------------------------------------------------------------------
    def _entry(self, word: str) -> tuple | None:
        """(polarity, subjectivity, intensity, is_modifier) of a lexicon word (its POS-less sense)."""
        senses = self._lexicon[word]
        if None not in senses:
            return None
        p, s, i = senses[None]
        return p, s, i, any(m in senses for m in self._modifiers)

    def sentiment(self, text: str) -> tuple[float, float]:
        """(polarity, subjectivity) by pattern's assessment rules, summed in the same order."""
        found: list[list] = []  # [polarity, subjectivity, intensity, negated] per assessed chunk
        modifier = negation = None  # the preceding modifier word, the preceding negation word
        entries = self._entries
        for w in self.words(text):
            entry = entries.get(w)
            if entry is not None:
                p, s, i, is_modifier = entry
                if modifier is None:  # "good"
                    found.append([p, s, i, False])
                else:  # "really good": the modifier's intensity scales this word
                    last = found[-1]
                    last[0] = max(-1.0, min(p * last[2], +1.0))
                    last[1] = max(-1.0, min(s * last[2], +1.0))
                    last[2] = i
                if negation is not None:  # "not (really) good"
                    found[-1][2] = 1.0 / found[-1][2]
                    found[-1][3] = True
                modifier = w if is_modifier else None
                negation = w if w in self._negations else None
                continue
            if modifier is None and negation is None and w.isalpha() and w not in self._negations:
                continue  # an ordinary unknown word with nothing pending: no rule below applies
            if w in self._negations:
                negation = w
            elif negation and len(w.strip("'")) > 1:  # a negation carries across small words only
                negation = None
            if negation is not None and modifier is not None and self._is_modifier_word(modifier):
                found[-1][3] = True  # "really not good"
                negation = None
            elif modifier and len(w) > 2:
                modifier = None
            if w == "!" and found:
                found[-1][0] = max(-1.0, min(found[-1][0] * 1.25, +1.0))
            if w == "(!)":
                found.append([0.0, 1.0, 1.0, False])
            if w.isalpha() is False and len(w) <= 5 and w not in self._punctuation_string:
                polarity = self._emoticons.get(w)
                if polarity is not None:
                    found.append([polarity, 1.0, 1.0, False])
        if not found:
            return 0.0, 0.0
        # pattern sums from the integer 0 in order and divides by float(n): so do we.
        polarity = sum(f[0] * -0.5 if f[3] else f[0] for f in found) / float(len(found))
        subjectivity = sum(f[1] for f in found) / float(len(found))
        return polarity, subjectivity
