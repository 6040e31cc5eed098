import json
from pathlib import Path

import pytest

from pipeline.data.sentences import split_sentences

GOLD = json.loads((Path(__file__).parent / "gold_sentences.json").read_text(encoding="utf-8"))["cases"]


@pytest.mark.parametrize("case", GOLD, ids=[f"{i}-{c['kind']}" for i, c in enumerate(GOLD)])
def test_gold_set(case):
    assert split_sentences(case["text"]) == case["sentences"]


def test_gold_set_covers_the_hard_kinds():
    kinds = {c["kind"] for c in GOLD}
    assert {"dialogue", "nested", "abbreviation", "ellipsis", "dash"} <= kinds
    assert len(GOLD) >= 50


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", []),
        ("   ", []),
        ("No end punctuation", ["No end punctuation"]),
        ("Ends with a quote.\u201d", ["Ends with a quote.\u201d"]),
        ("Two.  Spaces between.", ["Two.", "Spaces between."]),
        ("It cost \u00a33.50. He paid.", ["It cost \u00a33.50.", "He paid."]),
    ],
)
def test_edges(text, expected):
    assert split_sentences(text) == expected


def test_text_is_kept_verbatim():
    text = "\u201cWhat?\u201d Mr. Holmes asked. She\u2014hesitating\u2014said nothing... Then she left."
    assert " ".join(split_sentences(text)) == text
