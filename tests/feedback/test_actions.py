"""Writers' actions (edit, takes, erase) as training rows: pipeline/feedback/export.py's rules, on
databases the bot's own store filled."""

from __future__ import annotations

from contract import prompt
from pipeline.feedback import snapshot

from .conftest import ALICE, BOB, CAROL, bodies, rows_of

OPENING = "The lighthouse keeper counted the ships that never came back to harbour."
EDIT = "The door creaked open, and Mara stepped into the lamp room."


def _target(bot, gid: int, answer: str | None = None) -> str:
    g = bot.store.generation(gid)
    return prompt.render_target(g.reasoning, answer or g.answer)


def _position(bot, gid: int) -> int:
    return bot.store.passage(bot.slot(gid))[0].position


def test_an_edited_take_gives_the_edit_as_sft_and_a_pair_over_the_models_words(bot, db):
    bot.write(ALICE, OPENING)
    gid = bot.generate(ALICE)
    bot.store.edit_passage(bot.story_id, _position(bot, gid), BOB, EDIT, None, True)

    sft, report = rows_of(db, "sft")
    g = bot.store.generation(gid)
    turns = [
        {"role": "user", "content": g.user_text},
        {"role": "assistant", "content": _target(bot, gid, EDIT)},
    ]
    assert bodies(sft) == [{"messages": turns}]
    assert report.written == {"edited": 1} and report.actions == {"edits": 1}
    source = sft[0]["source"]
    assert (source["action"], source["story"], source["passage"], source["generation"]) == (
        "edit",
        bot.story_id,
        bot.slot(gid),
        gid,
    )
    assert source["model"] == "writer" and source["time"] > g_time(bot, gid) and source["prompt"] == g.prompt
    dpo, report = rows_of(db, "dpo")
    assert bodies(dpo) == [
        {"prompt": g.user_text, "chosen": _target(bot, gid, EDIT), "rejected": _target(bot, gid)}
    ]
    assert report.written == {"edit pairs": 1}
    kto, _ = rows_of(db, "kto")
    assert kto == []  # an edit says nothing about the model's words alone


def g_time(bot, gid: int) -> float:
    return bot.store.conn.execute("SELECT created_at FROM generations WHERE id = ?", (gid,)).fetchone()[0]


def test_the_chosen_take_is_preferred_over_each_other_take_of_its_passage(bot, db):
    bot.write(ALICE, OPENING)
    first = bot.generate(ALICE)
    second = bot.generate(BOB, slot=bot.slot(first))
    third = bot.generate(BOB, slot=bot.slot(first))
    position = _position(bot, first)
    bot.store.choose_take(bot.story_id, position, CAROL, 1)
    bot.store.choose_take(bot.story_id, position, CAROL, 2)  # the newest choice stands

    rows, report = rows_of(db, "dpo")
    assert [(r["chosen"], r["rejected"]) for r in rows] == [
        (_target(bot, second), _target(bot, first)),
        (_target(bot, second), _target(bot, third)),
    ]
    assert [(r["source"]["action"], r["source"]["generation"], r["source"]["rejected"]) for r in rows] == [
        ("take", second, first),
        ("take", second, third),
    ]
    assert report.written == {"take pairs": 2} and report.actions == {"take choices": 1}


def test_an_erased_take_is_undesirable_and_redo_takes_that_back(bot, db):
    bot.write(ALICE, OPENING)
    gid = bot.generate(ALICE)
    bot.store.erase(bot.story_id, _position(bot, gid), BOB)
    rows, report = rows_of(db, "kto")
    assert [(r["completion"], r["label"], r["source"]["action"]) for r in rows] == [
        (_target(bot, gid), False, "erasure")
    ]
    assert report.actions == {"erasures": 1}
    bot.store.redo(bot.story_id, BOB)
    rows, report = rows_of(db, "kto")
    assert rows == [] and report.left_out == {"not rated, edited, chosen or erased": 1}


def test_a_liked_take_erased_later_is_a_negative_everywhere(bot, db):
    """The conflict rule: the writers' last word (the erasure) wins over the thumbs up before it."""
    bot.write(ALICE, OPENING)
    liked = bot.generate(ALICE)
    disliked = bot.generate(BOB, slot=bot.slot(liked))
    bot.store.choose_take(bot.story_id, _position(bot, liked), ALICE, 1)
    bot.rate(liked, (ALICE, 1), (BOB, 1))
    bot.rate(disliked, (BOB, -1))
    bot.store.erase(bot.story_id, _position(bot, liked), CAROL)

    kto, _ = rows_of(db, "kto")
    assert [(r["completion"], r["label"]) for r in kto] == [
        (_target(bot, liked), False),
        (_target(bot, disliked), False),
    ]
    sft, report = rows_of(db, "sft")
    assert sft == [] and report.left_out["erased by the writers (erase to here)"] == 1
    dpo, report = rows_of(db, "dpo")
    assert dpo == []
    assert report.pairs_left_out == {
        "the chosen take was erased later": 1,
        "the liked version was erased later": 1,
        "erased, and nothing liked, edited or chosen kept in its place": 1,
    }


def test_a_thumbs_up_on_an_edited_take_counts_for_the_edit(bot, db):
    bot.write(ALICE, OPENING)
    gid = bot.generate(ALICE)
    bot.rate(gid, (BOB, 1))
    bot.store.edit_passage(bot.story_id, _position(bot, gid), ALICE, EDIT, None, False)
    sft, _ = rows_of(db, "sft")
    kto, _ = rows_of(db, "kto")
    assert [r["messages"][1]["content"] for r in sft] == [_target(bot, gid, EDIT)]
    assert [(r["completion"], r["label"]) for r in kto] == [(_target(bot, gid, EDIT), True)]


def test_actions_by_members_who_opted_out_are_not_counted_and_their_edits_stay_out(bot, db):
    bot.write(ALICE, OPENING)
    edited = bot.generate(ALICE)
    bot.store.edit_passage(bot.story_id, _position(bot, edited), CAROL, EDIT, None, True)
    erased_later = bot.generate(ALICE)
    bot.rate(erased_later, (ALICE, 1))
    bot.store.erase(bot.story_id, _position(bot, erased_later), CAROL)
    bot.store.set_opt_out(CAROL.id, True)

    for fmt in ("sft", "kto", "dpo"):
        rows, report = rows_of(db, fmt)
        assert EDIT not in str(rows) and report.ignored_votes == 2  # Carol's edit and erasure
    kto, report = rows_of(db, "kto")
    # Carol's edit is in the context of the take written after it: that prompt holds her words.
    assert kto == [] and report.left_out["its prompt holds text by a member who opted out"] == 1


def test_edited_back_to_the_models_words_is_no_edit(bot, db):
    bot.write(ALICE, OPENING)
    gid = bot.generate(ALICE)
    original = bot.store.generation(gid).answer
    position = _position(bot, gid)
    bot.store.edit_passage(bot.story_id, position, BOB, EDIT, None, True)
    bot.store.edit_passage(bot.story_id, position, BOB, original, None, True)
    rows, report = rows_of(db, "dpo")
    assert rows == [] and report.actions == {"edits": 1}


def test_stats_count_each_kind_of_action_per_model(bot, db, tmp_path):
    from pipeline.feedback import snapshot, stats

    bot.write(ALICE, OPENING)
    edited = bot.generate(ALICE)
    bot.store.edit_passage(bot.story_id, _position(bot, edited), BOB, EDIT, None, True)
    first = bot.generate(ALICE, model="other:7b")
    bot.generate(ALICE, model="other:7b", slot=bot.slot(first))
    bot.store.choose_take(bot.story_id, _position(bot, first), BOB, 1)
    erased = bot.generate(ALICE)
    bot.store.erase(bot.story_id, _position(bot, erased), BOB)

    totals = stats.totals(stats.by_model_and_week(snapshot.read(db)))
    assert [(g.model, g.edited, g.chosen, g.erased) for g in totals] == [
        ("other:7b", 0, 1, 0),
        ("writer", 1, 0, 1),
        ("all models", 1, 1, 1),
    ]
    md, _ = stats.write(snapshot.read(db), tmp_path / "out")
    assert "| `writer` | 2 | 0 | 0.00 | 0 | 0 | 0 | – | 1 | 0 | 1 |" in md.read_text()


def test_an_erased_take_is_rejected_under_what_the_writers_kept_in_its_place(bot, db):
    bot.write(ALICE, OPENING)
    erased = bot.generate(ALICE)
    bot.store.erase(bot.story_id, _position(bot, erased), BOB)
    disliked = bot.generate(ALICE)  # asked again at the same point: the same prompt
    bot.rate(disliked, (ALICE, -1))
    bot.store.erase(bot.story_id, _position(bot, disliked), BOB)
    kept = bot.generate(ALICE)
    bot.store.edit_passage(bot.story_id, _position(bot, kept), BOB, EDIT, None, True)

    rows, report = rows_of(db, "dpo")
    pairs = [(r["chosen"], r["rejected"], r["source"]["action"], r["source"]["rejected"]) for r in rows]
    assert pairs == [
        (_target(bot, kept, EDIT), _target(bot, kept), "edit", None),
        (_target(bot, kept, EDIT), _target(bot, erased), "erasure", erased),
        (_target(bot, kept, EDIT), _target(bot, disliked), "erasure", disliked),
    ]
    assert report.written == {"edit pairs": 1, "erasure pairs": 2}
    assert rows[1]["source"]["generation"] == kept
    assert rows[1]["prompt"] == bot.store.generation(erased).user_text


def test_an_erasure_with_nothing_approved_in_its_place_gives_no_pair(bot, db):
    bot.write(ALICE, OPENING)
    erased = bot.generate(ALICE)
    bot.store.erase(bot.story_id, _position(bot, erased), BOB)
    bot.generate(ALICE)  # asked again and left as it is: not a sign the writers want it
    bot.write(BOB, "Night fell.")
    elsewhere = bot.generate(ALICE)  # liked, but at another point of the story: another prompt
    bot.rate(elsewhere, (ALICE, 1))

    rows, report = rows_of(db, "dpo")
    assert rows == []
    assert report.pairs_left_out == {"erased, and nothing liked, edited or chosen kept in its place": 1}


def test_the_writers_edit_of_one_take_is_preferred_over_another_take_they_rated_down(bot, db):
    bot.write(ALICE, OPENING)
    first = bot.generate(ALICE)
    second = bot.generate(BOB, slot=bot.slot(first))
    bot.rate(first, (ALICE, -1))
    bot.rate(second, (ALICE, -1))
    bot.store.edit_passage(bot.story_id, _position(bot, second), ALICE, EDIT, None, True)

    rows, report = rows_of(db, "dpo")
    assert [(r["chosen"], r["rejected"], r["source"]["action"]) for r in rows] == [
        (_target(bot, second, EDIT), _target(bot, second), "edit"),
        (_target(bot, second, EDIT), _target(bot, first), "rating"),
    ]
    assert report.written == {"edit pairs": 1, "rating pairs": 1}


def test_a_take_out_of_format_as_the_model_wrote_it_is_rejected_under_what_the_writers_kept(bot, db):
    bot.write(ALICE, OPENING)
    no_passage = "<reasoning>She weighs the cost.</reasoning>"
    failed = bot.no_passage(no_passage, ["empty_answer"])  # the bot showed nothing; asked again
    bot.no_passage("<reasoning>Cut sho", None)  # an error cut it short: not a take the model finished
    stray = bot.generate(ALICE, answer="<answer>It rained.", issues=("stray_tag",))
    kept = bot.generate(BOB, slot=bot.slot(stray))
    bot.store.choose_take(bot.story_id, _position(bot, stray), BOB, 2)
    stray_output = bot.store.conn.execute("SELECT output FROM generations WHERE id = ?", (stray,)).fetchone()[
        0
    ]

    rows, report = rows_of(db, "dpo")
    assert [(r["source"]["action"], r["source"]["rejected"], r["chosen"], r["rejected"]) for r in rows] == [
        ("retry", failed, _target(bot, kept), no_passage),
        ("retry", stray, _target(bot, kept), stray_output),
    ]
    assert report.written == {"retry pairs": 2}
    assert {r["prompt"] for r in rows} == {bot.store.generation(kept).user_text}
    # Only dpo reads them: an sft or kto row must be what the model would be trained to write.
    assert "It rained." not in str(rows_of(db, "kto")[0]) and rows_of(db, "sft")[0] == []


def test_a_take_out_of_format_with_nothing_kept_for_its_prompt_or_by_an_opted_out_member_gives_no_pair(
    bot, db
):
    bot.write(ALICE, OPENING)
    bot.no_passage("<reasoning>She weighs the cost.</reasoning>", ["empty_answer"], member=CAROL)
    bot.no_passage("<reasoning>He waits.</reasoning>", ["empty_answer"])
    bot.store.set_opt_out(CAROL.id, True)
    rows, report = rows_of(db, "dpo")
    assert rows == []
    assert report.pairs_left_out == {
        "out of format, and nothing liked, edited or chosen kept for its prompt": 1
    }


def test_an_erased_take_out_of_format_is_an_erasure_pair_under_the_take_kept_in_its_place(bot, db):
    bot.write(ALICE, OPENING)
    erased = bot.generate(ALICE, answer="<answer>It rained.", issues=("stray_tag",))
    bot.store.erase(bot.story_id, _position(bot, erased), BOB)
    kept = bot.generate(ALICE)
    bot.rate(kept, (BOB, 1))
    rows, report = rows_of(db, "dpo")
    assert [(r["source"]["action"], r["source"]["generation"], r["source"]["rejected"]) for r in rows] == [
        ("erasure", kept, erased)
    ]
    assert rows[0]["rejected"].endswith("<answer><answer>It rained.</answer>")
    (erasure,) = snapshot.read(db).erasures
    assert rows[0]["source"]["time"] == erasure.erased_at  # the time of the writers' action
