"""A fast sentence splitter tuned for fiction: dialogue, nested quotes, abbreviations, ellipses, dashes.

It works on one unwrapped paragraph at a time (a paragraph break is always a sentence break). One
regular expression finds the candidate breaks: terminal punctuation, any closing quotes or brackets,
whitespace, then something that can start a sentence (a capital or a digit, perhaps behind opening
quotes). A few cheap checks then veto candidates: a known abbreviation or an initial before the
period, and a speech tag after a quoted exclamation (`"Stop!" Holmes cried.` is one sentence).

Unlike pysbd it splits inside quotations (`"I am tired. Let us go," said he.` is two sentences): the
windows cut from a book are counted in sentences, and a dialogue scene must not become one
300-word "sentence". The conventions are written out in tests/data/gold_sentences.json.
"""

from __future__ import annotations

import re

_OPENERS = "\"'“‘«(\\[_"
_CLOSERS = "\"'”’»)\\]_"

# A candidate break: terminal punctuation (or a dash that ends a quotation: interrupted speech),
# closing quotes or brackets, whitespace, and the start of the next sentence.
_BREAK = re.compile(
    rf"(?:[.!?]+|…|\.\s\.\s\.|(?:—|--)(?=[{_CLOSERS}]))[{_CLOSERS}]*(\s+)(?=[{_OPENERS}]*[A-Z0-9])"
)

# Words that end with a period but rarely end a sentence (lower-case, without the period). Words that
# often end one too ("etc.", "Esq.", "Ltd.") are left out: before a capital they end the sentence.
ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "messrs",
        "mme",
        "mlle",
        "dr",
        "prof",
        "rev",
        "hon",
        "st",
        "mt",
        "ft",
        "capt",
        "col",
        "gen",
        "lt",
        "sgt",
        "maj",
        "cmdr",
        "adm",
        "gov",
        "sen",
        "rep",
        "jr",
        "sr",
        "vs",
        "viz",
        "cf",
        "al",
        "approx",
        "dept",
        "univ",
        "corp",
        "bros",
        "jan",
        "feb",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
    ]
)
# Abbreviations only when a number follows: "No. 7", "vol. 2" (but "He said no. Then...").
_BEFORE_NUMBER = frozenset(["no", "nos", "vol", "vols", "ch", "chap", "pp", "p", "fig", "art"])
_SPEECH_VERBS = (
    "said|says|cried|asked|replied|answered|shouted|whispered|exclaimed|called|muttered|murmured|"
    "screamed|yelled|added|continued|returned|observed|remarked|roared|sobbed|gasped|began|repeated|"
    "thought|went on|put in|interrupted"
)
# `"Stop!" Holmes cried.` / `"Stop!" cried Holmes.`: a speech tag after a quoted ! or ?.
_SPEECH_TAG = re.compile(rf"(?:[A-Z][\w.’'-]*(?: [A-Z][\w’'-]*)? (?:{_SPEECH_VERBS})\b)")
_WORD_BEFORE = re.compile(r"([\w.’'-]+)$")


def split_sentences(paragraph: str) -> list[str]:
    """The sentences of one paragraph, whitespace inside them kept as it was."""
    text = paragraph.strip()
    if not text:
        return []
    out: list[str] = []
    start = 0
    for m in _BREAK.finditer(text):
        end = m.start(1)
        if not _is_break(text, start, end, m.end()):
            continue
        out.append(text[start:end])
        start = m.end()
    out.append(text[start:])
    return out


def _is_break(text: str, start: int, end: int, nxt: int) -> bool:
    head = text[start:end].rstrip(_CLOSERS)
    if head.endswith(".") and not head.endswith(("..", ". . .")):
        w = _WORD_BEFORE.search(head, max(0, len(head) - 40), len(head) - 1)
        word = w.group(1) if w else ""
        if not word:
            return True
        low = word.lower().strip("'’-")
        if low in _BEFORE_NUMBER and text[nxt : nxt + 1].isdigit():
            return False
        if low in ABBREVIATIONS:
            return False
        if len(word) == 1 and word.isalpha() and word.isupper() and word != "I":
            return False  # an initial: J. R. R. Tolkien
        if "." in word and not word[-1].isdigit():  # e.g. / i.e. / a.m. / U.S., but not "£3.50."
            return False
    elif head.endswith(("!", "?")) and text[end - 1] in _CLOSERS:
        return not _SPEECH_TAG.match(text, nxt)
    return True


def sentences_of(paragraphs: list[str]) -> list[tuple[str, bool]]:
    """(sentence, starts_a_paragraph) for every sentence of the paragraphs, in order."""
    out: list[tuple[str, bool]] = []
    for para in paragraphs:
        for i, s in enumerate(split_sentences(para)):
            out.append((s, i == 0))
    return out
