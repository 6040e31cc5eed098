"""The teacher's reply checks on real replies: SmolLM2-135M as the reason teacher (fixtures generated
through the local engine and labelled by hand, tests/data/teacher_replies.json). A small teacher echoes
our instructions, comments on the prose, or writes the story on; none of that may become a row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.data import teacher

FIXTURES = json.loads((Path(__file__).parent / "teacher_replies.json").read_text(encoding="utf-8"))["replies"]


@pytest.mark.parametrize("case", FIXTURES, ids=[f"reply{i}" for i in range(len(FIXTURES))])
def test_real_replies_get_the_verdict_they_deserve(case):
    if case["expect"] == "accept":
        assert teacher.clean_reasoning(case["reply"], case["continuation"])
    else:
        with pytest.raises(teacher.BadReply, match=case["expect"]):
            teacher.clean_reasoning(case["reply"], case["continuation"])


def test_the_fixtures_hold_each_kind_of_failure():
    kinds = {c["expect"] for c in FIXTURES}
    assert {"comments on the prose", "echoes our instructions", "writes the story on", "accept"} <= kinds


GOOD = (
    "Gregor wants to be useful again, yet his sister fears what he has become. She will hesitate at the "
    "door, then decide to feed him, and the plot should move toward a quiet, painful routine."
)


@pytest.mark.parametrize(
    "reply, reason",
    [
        (GOOD + " Remember: 80 to 250 words, no headings.", "echoes our instructions"),
        (GOOD + " I think about what each character present wants and feels.", "echoes our instructions"),
        ("The passage uses vivid imagery and the author builds suspense. " + GOOD, "comments on the prose"),
        (GOOD + ' "Come in," she said. "No," he cried, "not yet."', "writes the story on"),
    ],
)
def test_echoes_commentary_and_dialogue_are_refused(reply, reason):
    with pytest.raises(teacher.BadReply, match=reason):
        teacher.clean_reasoning(reply, "Something else entirely happens next in the kitchen.")


def test_good_reasoning_passes_and_a_reply_cut_off_mid_sentence_loses_its_torso():
    assert teacher.clean_reasoning(GOOD, "x") == GOOD
    assert (
        teacher.clean_reasoning(GOOD + " Then Grete will", "x") == GOOD
    )  # --max-tokens cut it: the torso goes
    # One mention of the story is planning, not commentary.
    planning = GOOD + " The scene calls for a slow pace as the story turns darker."
    assert teacher.clean_reasoning(planning, "x") == planning


def test_reason_kinds_count_alike_failures_together():
    assert teacher.reason_kind("unusable reply: too short (12 words)") == "unusable reply: too short"
    assert teacher.reason_kind(
        "unusable reply: it echoes our instructions ('present tense') instead of x"
    ) == ("unusable reply: it echoes our instructions instead of x")
