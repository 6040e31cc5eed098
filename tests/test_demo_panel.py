"""The demo's simulated writers (demo/panel.py) and its derived rows (demo/rows.py): pure functions."""

from __future__ import annotations

from contract import prompt
from demo import panel
from demo.rows import derived_reasoning, derived_rows

CONTEXT = (
    "Gregor woke to find the room dark. Grete knocked at the door and called to him twice. "
    "Then the father came, and Grete stepped back. The clock struck seven."
)


def test_characters_are_names_used_mid_sentence_not_sentence_openers():
    names = panel.characters(CONTEXT, most=5)
    assert names[0] == "Grete"  # twice, once mid-sentence
    assert "Then" not in names and "The" not in names
    # "Gregor" only opens a sentence: no evidence it is a name rather than a capitalised opener.
    assert "Gregor" not in names


def test_a_place_is_not_a_character():
    context = "After the murder of Clerval I returned to Switzerland. They will soon return to England."
    assert panel.characters(context, most=5) == ["Clerval"]  # "of Clerval": a person; "to England": a place
    street = "I was walking down Baker Street when the case at the Hague came back to me."
    assert panel.characters(street) == []
    # A people is no one, and neither is a place before "Fort" (the demo's held-out book says so).
    river = "We saw Tilbury Fort and remembered the Spanish ships. It was the Swiss diligence."
    assert panel.characters(river) == []


def test_a_name_after_a_title_or_an_opening_quote_is_read_as_such():
    # "Mr." ends in a full stop but starts no sentence; McCarthy is one name; 'Please' opens a speech.
    context = "No one but Mr. McCarthy was in favour of it. The Footman said, 'Please wait.'"
    assert panel.characters(context) == ["McCarthy", "Footman"]


def _output(answer: str, reasoning: str = "Grete waits.") -> str:
    return prompt.render_target(reasoning, answer)


def test_the_panel_likes_only_passages_meeting_all_three_criteria():
    good = _output("At last Grete opened the door. " + "She looked in. " * 30)
    v = panel.judge(CONTEXT, good, 100)
    assert v == panel.Verdict(True, True, True, True)
    assert panel.judge(CONTEXT, "At last Grete opened the door. " * 10, 100).in_format is False  # no tags
    short = panel.judge(CONTEXT, _output("Grete sighed."), 100)
    assert (short.liked, short.near_length, short.names_a_character) == (False, False, True)
    nameless = panel.judge(CONTEXT, _output("She looked in. " * 30), 100)
    assert (nameless.liked, nameless.names_a_character) == (False, False)


def test_rate_counts_the_liked_and_each_criterion():
    verdicts = [panel.Verdict(True, True, True, True), panel.Verdict(False, True, False, True)]
    r = panel.rate(verdicts)
    assert (r["n"], r["liked"], r["rate"], r["near_length"], r["names_a_character"]) == (2, 1, 0.5, 0.5, 1.0)
    assert r["ci95"][0] < 0.5 < r["ci95"][1]


def test_derived_rows_carry_the_human_continuation_and_a_plan_naming_who_acts_next():
    window = {"context": CONTEXT, "continuation": "Grete came in. She set the tray down."}
    reasoning = derived_reasoning(window["context"], window["continuation"])
    assert "Grete" in reasoning and "2 sentences" in reasoning
    (row,) = derived_rows([window])
    parsed = prompt.parse_output(row["messages"][1]["content"])
    assert parsed.answer == window["continuation"] and parsed.reasoning == reasoning and not parsed.issues
    # Asked for at the continuation's own length (7 words: the nearest ten, at least ten).
    assert row["messages"][0]["content"] == prompt.render_prompt(CONTEXT, length=10)


BOOK = "The door stayed shut. Nothing moved in the hall for a long while after that."


def test_a_writer_edits_a_disliked_passage_with_the_smallest_fix_it_likes():
    # Too short and nameless: the book's next sentences are added and "she" becomes the main character.
    edited = panel.rewrite(CONTEXT, _output("She waited."), BOOK, 20)
    assert edited == "Grete waited. " + BOOK
    assert panel.judge(CONTEXT, _output(edited), 20).liked
    # Too long: cut at a sentence within twice the asked length; the name it has is kept.
    long = panel.rewrite(CONTEXT, _output("Grete sat. " + "The rain fell on the roof. " * 20), BOOK, 10)
    assert long is not None and long.startswith("Grete sat.") and len(long.split()) <= 20
    # Out of format (no plan to keep), or a context naming no one: no edit.
    assert panel.rewrite(CONTEXT, "She waited.", BOOK, 20) is None
    assert panel.rewrite("It was dark. The clock struck.", _output("She waited."), BOOK, 20) is None


def test_the_writers_conduct_on_two_takes_is_fixed():
    liked, nameless = _output("Grete opened the door and looked in at him."), _output("It rained.")
    assert panel.act(CONTEXT, (liked, nameless), BOOK, 10) == panel.Act((True, False), 1, "keep")
    assert panel.act(CONTEXT, (nameless, liked), BOOK, 10) == panel.Act((False, True), 2, "keep")
    assert panel.act(CONTEXT, (liked, liked), BOOK, 10) == panel.Act((True, True), None, "keep")
    # Both disliked: the nearer take (in format and near the length, against in format only) is picked,
    # then fixed to one the writers like.
    edit = panel.act(CONTEXT, (nameless, _output("She sat down by the window.")), BOOK, 10)
    assert (edit.take, edit.then, edit.text) == (2, "edit", "Grete sat down by the window.")
    assert edit.actions == ["take", "edit"]
    # The nearer take cannot be fixed (it names no one and has no "she" to name): picked and left.
    picked = panel.act(CONTEXT, (nameless, "no format at all"), BOOK, 10)
    assert picked == panel.Act((False, False), 1, "keep") and picked.actions == ["take"]
    # Neither nearer, neither fixable: erased.
    erased = panel.act(CONTEXT, ("no format at all", "nor this"), BOOK, 10)
    assert erased == panel.Act((False, False), None, "erase") and erased.actions == ["erase"]
    assert panel.act(CONTEXT, (liked, liked), BOOK, 10).actions == ["keep"]


def test_after_an_erasure_the_writers_rate_the_new_take_and_keep_fix_or_erase_it():
    liked = _output("Grete opened the door and looked in at him.")
    assert panel.retry(CONTEXT, liked, BOOK, 10) == panel.Act((True,), None, "keep")
    fixed = panel.retry(CONTEXT, _output("She sat down by the window."), BOOK, 10)
    assert fixed == panel.Act((False,), None, "edit", "Grete sat down by the window.")
    assert fixed.actions == ["edit"]
    assert panel.retry(CONTEXT, "no format at all", BOOK, 10) == panel.Act((False,), None, "erase")


def test_two_models_are_compared_slot_by_slot_with_a_sign_test():
    liked, disliked = panel.Verdict(True, True, True, True), panel.Verdict(False, True, True, False)
    a = {(c, 0): liked for c in range(5)} | {(5, 0): disliked, (6, 0): liked}
    b = {(c, 0): disliked for c in range(5)} | {(5, 0): liked, (6, 0): liked, (7, 0): liked}
    # 5 wins, 1 loss, one slot both liked, one only b has: P(X >= 5 | 6 fair coins) = 7/64.
    assert panel.paired(a, b) == {"slots": 7, "wins": 5, "losses": 1, "p_one_sided": round(7 / 64, 4)}
    assert panel.paired(a, a) == {"slots": 7, "wins": 0, "losses": 0, "p_one_sided": 1.0}
