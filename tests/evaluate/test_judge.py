"""The judge's pure core: its prompt, the lenient verdict parser, the pairing of compare outputs and the
statistics (win rate with a Wilson interval over items, consistency across the two orders)."""

from __future__ import annotations

import pytest

from contract import prompt
from pipeline.evaluate import judge
from pipeline.evaluate.judge import TIE, A, B

FULL = "context: A\nmotivation: B\npacing: tie\nprose: A\noverall: A"


@pytest.mark.parametrize(
    "reply, overall",
    [
        (FULL, A),
        ("**Overall**: Continuation B", B),
        ("1. Context - A\n2. Motivation: B\nOverall verdict: it is a tie", TIE),
        ("overall: a tie", TIE),
        ("  B.  ", B),
        ("[[A]]", A),
        ("A\n\n### Context:\nThe storm had raged for three days.", A),  # SmolLM2's answer, then rambling
        ("Continuation B is better: it keeps the storm.", B),
        ("<think>A reads well, but the overall: A line is a thought</think>\nOverall: B", B),
        ("OVERALL = b is better than a", B),
        ("### Context: The storm raged.\nContext better: B\nOverall prose: A", A),  # echo, then verdicts
        ("<think>Overall: A, surely. But wait", None),  # out of tokens while thinking
        # unreadable: never silently a tie
        ("Overall: A and B", None),
        ("I think both are nice stories about the sea and its moods.", None),
        ("Continuation A: The rain fell again.", None),
        ("Continuation A:\nThe rain fell again.", None),  # a heading echoed, not a choice
        ("", None),
    ],
)
def test_verdicts_are_read_leniently_and_unreadable_ones_stay_unread(reply, overall):
    assert judge.parse_verdict(reply).overall == overall


def test_criteria_are_read_per_line_and_missing_ones_are_none():
    v = judge.parse_verdict(FULL)
    assert v.criteria == {"context": A, "motivation": B, "pacing": TIE, "prose": A} and v.ok
    partial = judge.parse_verdict("### Context: The storm.\nFollows the context better: **B**\nOverall: A")
    assert partial.criteria == {"context": B, "motivation": None, "pacing": None, "prose": None}


def test_the_prompt_holds_the_rubric_and_the_end_of_a_long_context():
    chat = judge.messages("x" * 50 + "THE END", "first text", "second text", context_chars=10)
    user = chat[1]["content"]
    assert chat[0]["role"] == "system" and chat[1]["role"] == "user"
    assert "…xxxTHE END\n" in user and "x" * 11 not in user
    assert user.index("first text") < user.index("### Continuation B:") < user.index("second text")
    assert all(f"{c}:" in user for c in (*judge.CRITERIA, judge.OVERALL))
    assert "(empty)" in judge.messages("ctx", "", "b")[1]["content"]


def test_wilson_interval_matches_the_textbook_values():
    low, high = judge.wilson(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert judge.wilson(10, 10)[1] == pytest.approx(1.0) and judge.wilson(0, 10)[0] == pytest.approx(0.0)
    assert judge.wilson(0, 0) is None


def test_tally_averages_the_two_orders_per_item_and_counts_what_could_not_be_read():
    pairs = [("a", "a"), ("a", "b"), ("tie", "tie"), (None, None), ("b", None), ("b", "b")]
    t = judge.tally(pairs)
    # item scores: 1, 0.5, 0.5, -, 0, 0 -> 2 of 5 judged items
    assert t["items"] == 6 and t["judged"] == 5 and t["win_rate"] == pytest.approx(0.4)
    assert t["ci95"] == pytest.approx(list(judge.wilson(2.0, 5)))
    assert (t["a_both"], t["b_both"], t["tie_both"], t["split"]) == (1, 1, 1, 1)
    assert (t["unparsed"], t["one_unparsed"], t["unparsed_verdicts"]) == (1, 1, 3)
    assert t["consistency"] == pytest.approx(3 / 4) and t["both_parsed"] == 4


def test_a_verdict_in_the_second_order_is_swapped_back_to_the_models():
    assert judge.for_model(A, swapped=False) == "a" and judge.for_model(A, swapped=True) == "b"
    assert judge.for_model(TIE, swapped=True) == "tie" and judge.for_model(None, swapped=True) is None


def _row(model: str, i: int, context: str, answer: str, sample: int = 0) -> dict:
    return {
        "model": model,
        "context_index": i,
        "sample": sample,
        "prompt": prompt.render_prompt(context),
        "output": f"<reasoning>r</reasoning><answer>{answer}</answer>",
        "answer": answer,
    }


def test_items_pair_the_same_context_and_sample_and_read_the_context_back():
    rows = [_row("a", 0, "Rain.", "wet"), _row("b", 0, "Rain.", "dry"), _row("c", 0, "Rain.", "grey")]
    assert judge.pick_labels(rows, "a", "c") == ("a", "c")
    items = judge.pair_items(rows, "a", "b")
    assert items == [judge.Item((0, 0), "Rain.", "wet", "dry")]
    without_answer = {k: v for k, v in rows[1].items() if k != "answer"}
    assert judge.pair_items([rows[0], without_answer], "a", "b")[0].b == "dry"


@pytest.mark.parametrize(
    "rows, a, b, message",
    [
        ([_row("a", 0, "Rain.", "x"), _row("b", 0, "Snow.", "y")], "a", "b", "were given different prompts"),
        (
            [_row("a", 0, "R.", "x"), _row("a", 1, "S.", "x"), _row("b", 0, "R.", "y")],
            "a",
            "b",
            "'a' has an output for context 2, sample 0 and 'b' has none",
        ),
        (
            [_row("a", 0, "R.", "x"), _row("b", 0, "R.", "y"), _row("c", 0, "R.", "z")],
            None,
            None,
            "name the two to compare with --a and --b",
        ),
        ([_row("a", 0, "R.", "x"), _row("b", 0, "R.", "y")], "a", "z", "--b 'z' is not in the outputs"),
        ([_row("a", 0, "R.", "x"), _row("b", 0, "R.", "y")], "a", "a", "compare two different models"),
        (
            [_row("a", 0, "R.", "x"), _row("a", 0, "R.", "x"), _row("b", 0, "R.", "y")],
            "a",
            "b",
            "'a' has two outputs for context 1",
        ),
    ],
)
def test_mismatched_inputs_name_the_problem(rows, a, b, message):
    with pytest.raises(judge.JudgeError) as e:
        a, b = judge.pick_labels(rows, a, b)
        judge.pair_items(rows, a, b)
    assert message in str(e.value)


def test_summary_counts_the_judges_preference_for_the_first_shown():
    item = judge.Item((0, 0), "ctx", "x", "y")
    always_first = judge.Judged(item, ("A", "A"), (judge.parse_verdict("A"), judge.parse_verdict("A")))
    summary = judge.summarize([always_first])
    assert summary["first_shown_rate"] == 1.0
    assert summary["overall"]["win_rate"] == 0.5 and summary["overall"]["consistency"] == 0.0
    assert summary["criteria"] == {}  # the judge gave no criteria: none reported
    rows = judge.verdict_rows([always_first], "tuned", "base")
    assert [(r["shown_a"], r["winner"]) for r in rows] == [("tuned", "tuned"), ("base", "base")]
    assert all(r["prompt_version"] == judge.PROMPT_VERSION for r in rows)
