"""The export's rules on databases filled through the bot's store (see pipeline/feedback/export.py)."""

from __future__ import annotations

import json
import random
import time

from bot.core.story import Channel
from contract import prompt
from pipeline.feedback import export

from .conftest import ALICE, BOB, CAROL, DAN, Bot, bodies, rows_of

OPENING = "The lighthouse keeper counted the ships that never came back to harbour."


def _target(bot, gid: int) -> str:
    g = bot.store.generation(gid)
    return prompt.render_target(g.reasoning, g.answer)


def test_sft_rows_are_the_exact_prompt_and_target_of_clearly_positive_passages(bot, db):
    bot.write(ALICE, OPENING)
    liked = bot.generate(ALICE)
    bot.rate(liked, (ALICE, 1), (BOB, 1))
    bot.write(BOB, "A gull screamed.")
    mixed = bot.generate(BOB)
    bot.rate(mixed, (ALICE, 1), (BOB, -1))
    disliked = bot.generate(BOB)
    bot.rate(disliked, (ALICE, -1))
    bot.generate(ALICE)  # not rated

    rows, report = rows_of(db, "sft")
    user = bot.store.generation(liked).user_text
    assert user == prompt.render_prompt(OPENING)  # the prompt the model read, byte for byte
    assert bodies(rows) == [
        {
            "messages": [
                {"role": "user", "content": user},
                {"role": "assistant", "content": _target(bot, liked)},
            ]
        }
    ]
    assert report.written == {"positive": 1} and report.generations == 4 and report.votes == 5
    assert report.left_out == {"net rating below +1": 2, "not rated, edited, chosen or erased": 1}
    assert rows_of(db, "sft", min_votes=2)[0] == rows
    assert rows_of(db, "sft", min_votes=3)[0] == []


def test_kto_labels_thumbs_up_and_down_and_leaves_mixed_votes_out(bot, db):
    bot.write(ALICE, OPENING)
    up = bot.generate()
    bot.rate(up, (ALICE, 1))
    mixed = bot.generate()
    bot.rate(mixed, (ALICE, 1), (BOB, -1))
    down = bot.generate()
    bot.rate(down, (BOB, -1), (CAROL, -1))

    rows, report = rows_of(db, "kto")
    assert [(r["completion"], r["label"]) for r in rows] == [
        (_target(bot, up), True),
        (_target(bot, down), False),
    ]
    assert [r["prompt"] for r in rows] == [bot.store.generation(g).user_text for g in (up, down)]
    assert report.written == {"desirable": 1, "undesirable": 1}
    assert report.left_out == {"mixed votes (net between -1 and +1)": 1}
    rows, _ = rows_of(db, "kto", min_votes=2)
    assert [r["label"] for r in rows] == [False]


def test_dpo_pairs_regenerations_of_one_slot_whose_ratings_differ(bot, db):
    bot.write(ALICE, OPENING)
    first = bot.generate(ALICE)
    bot.rate(first, (ALICE, 1))
    slot = bot.slot(first)
    second = bot.generate(BOB, slot=slot)
    bot.rate(second, (BOB, -1))
    bot.generate(BOB, slot=slot)  # not rated: says nothing
    fourth = bot.generate(CAROL, slot=slot)
    bot.rate(fourth, (CAROL, 1))
    bot.write(BOB, "Night fell.")
    alone = bot.generate(BOB)  # rated, but never regenerated
    bot.rate(alone, (BOB, 1))

    rows, report = rows_of(db, "dpo")
    user = bot.store.generation(first).user_text
    assert bodies(rows) == [
        {"prompt": user, "chosen": _target(bot, first), "rejected": _target(bot, second)},
        {"prompt": user, "chosen": _target(bot, fourth), "rejected": _target(bot, second)},
    ]
    assert report.written == {"rating pairs": 2}
    assert report.pairs_left_out == {"both versions rated up or edited": 1}  # first vs fourth
    unrated = "not rated, edited, chosen or erased"
    assert report.left_out == {unrated: 1, "no other rated version of its passage": 1}
    assert rows_of(db, "dpo", min_votes=3)[0] == []


def test_dpo_skips_regenerations_whose_prompts_differ_and_identical_texts(bot, db):
    bot.write(ALICE, OPENING)
    first = bot.generate(answer="Same words.")
    bot.rate(first, (ALICE, 1))
    slot = bot.slot(first)
    same = bot.generate(slot=slot, answer="Same words.")
    bot.rate(same, (ALICE, -1))
    other = bot.generate(slot=slot, user_text=prompt.render_prompt(OPENING + " (edited)"))
    bot.rate(other, (ALICE, -1))

    rows, report = rows_of(db, "dpo")
    assert rows == []
    assert report.pairs_left_out == {
        "both versions have the same text": 1,
        "regenerations whose prompts differ": 1,
        "neither version rated at least +1 or edited": 1,
    }


def test_a_member_who_rates_twice_counts_once(bot, db):
    bot.write(ALICE, OPENING)
    gid = bot.generate()
    bot.rate(gid, (ALICE, 1), (ALICE, -1), (ALICE, -1))
    rows, report = rows_of(db, "kto")
    assert [r["label"] for r in rows] == [False] and report.votes == 1
    assert rows_of(db, "sft")[0] == []


def test_undone_passages_are_not_imitated_but_their_votes_still_count_as_preferences(bot, db):
    bot.write(ALICE, OPENING)
    gid = bot.generate()
    bot.rate(gid, (ALICE, 1), (BOB, 1))
    bot.store.remove_passages([bot.slot(gid)])  # /undo

    rows, report = rows_of(db, "sft")
    assert rows == [] and report.left_out == {"rated up but undone or reset by the writers": 1}
    rows, report = rows_of(db, "kto")
    assert [r["label"] for r in rows] == [True] and report.votes == 2  # each vote once


def test_opted_out_members_text_votes_and_requests_stay_out(bot, db):
    carol_text = "Carol's private line about the drowned bell tower and its keeper."
    bot.write(ALICE, OPENING)
    clean = bot.generate(ALICE)
    bot.rate(clean, (ALICE, 1), (CAROL, -1))
    bot.write(CAROL, carol_text)
    with_carol = bot.generate(ALICE)  # its context holds Carol's passage
    bot.rate(with_carol, (ALICE, 1))
    asked_by_carol = bot.generate(CAROL)
    bot.rate(asked_by_carol, (ALICE, 1))
    # A prompt holding the end of her text without naming her passage (a cut context, a copy...).
    fourth = Bot(bot.store, Channel("5004"))
    fourth.write(ALICE, "Then dawn.")
    copied = fourth.generate(
        ALICE,
        user_text=prompt.render_prompt(
            "Earlier: Carol's private line about the drowned bell\n  tower and its keeper.\n\nThen dawn."
        ),
    )
    bot.rate(copied, (ALICE, 1))
    elsewhere, third = Bot(bot.store, Channel("5002")), Bot(bot.store, Channel("5003"))
    elsewhere.write(DAN, "Yes.")
    third.write(ALICE, "Yes.")  # the same two words, by someone else: too short to match by text
    short = third.generate(ALICE)
    bot.rate(short, (ALICE, 1))

    before = [_target(bot, g) for g in (with_carol, asked_by_carol, copied, short)]
    assert [r["completion"] for r in rows_of(db, "kto")[0]] == before  # clean: +1 -1, mixed
    bot.store.set_opt_out(CAROL.id, True)
    bot.store.set_opt_out(DAN.id, True)
    rows, report = rows_of(db, "kto")
    assert [r["completion"] for r in rows] == [_target(bot, clean), _target(bot, short)]
    assert [r["label"] for r in rows] == [True, True]  # Carol's thumbs down no longer counts
    assert report.ignored_votes == 1 and report.left_out == {
        "its prompt holds text by a member who opted out": 2,
        "asked for by a member who opted out": 1,
    }
    assert all(carol_text not in r["prompt"] for r in rows)
    bot.store.set_opt_out(CAROL.id, False)  # back in: her passages and votes count again
    assert len(rows_of(db, "kto")[0]) == 4  # clean is mixed again


def test_duplicates_broken_outputs_and_filters(bot, db):
    bot.write(ALICE, OPENING)
    first = bot.generate(answer="The same fine line.")
    bot.rate(first, (ALICE, 1))
    again = bot.generate(slot=bot.slot(first), answer="The same fine line.")
    bot.rate(again, (ALICE, 1))
    broken = bot.generate(issues=("unclosed_answer",))
    bot.rate(broken, (ALICE, 1))
    other = bot.generate(model="other:7b")
    bot.rate(other, (ALICE, 1))

    rows, report = rows_of(db, "sft")
    assert len(rows) == 2 and report.duplicates == 1 and report.written == {"positive": 2}
    assert report.left_out == {"output broke the reasoning/answer format (unclosed_answer)": 1}
    rows, report = rows_of(db, "sft", model="writer")  # = writer:latest
    assert len(rows) == 1 and report.left_out["another model than writer"] == 1
    assert rows_of(db, "sft", model="other:7b")[0][0]["messages"][1]["content"] == _target(bot, other)
    assert rows_of(db, "sft", since=time.time() + 60)[0] == []


def test_the_same_text_rated_both_ways_is_dropped_from_kto(bot, db):
    bot.write(ALICE, OPENING)
    first = bot.generate(answer="Twice told.")
    bot.rate(first, (ALICE, 1))
    again = bot.generate(slot=bot.slot(first), answer="Twice told.")
    bot.rate(again, (BOB, -1))
    rows, report = rows_of(db, "kto")
    assert rows == [] and report.rows == 0
    assert report.left_out == {"the same text rated up in one place and down in another": 2}


def test_the_fast_text_match_finds_exactly_what_a_plain_search_finds():
    rng = random.Random(7)
    words = ["keeper", "bell", "the", "tower.", "drowned", "a", "lantern,", "Then", "sea", "x" * 70]

    def text(n: int) -> str:
        return rng.choice(["", " ", "\n"]).join(rng.choice(words) for _ in range(n))

    passages = [text(rng.randint(1, 12)) for _ in range(60)]
    matcher = export._TextMatcher(export._fold(p) for p in passages)
    folded = [export._fold(p) for p in passages]
    tails = [f[-export.MATCH_TAIL_CHARS :] for f in folded if len(f) >= export.MIN_MATCH_CHARS]
    found = 0
    for _ in range(400):
        prompt_text = text(rng.randint(5, 60))
        if rng.random() < 0.3:  # plant a passage, maybe run on into the next word
            before, after = rng.choice(["\n\n", "", " "]), rng.choice(["", "Then", " a"])
            prompt_text += before + rng.choice(passages) + after
        expected = any(t in export._fold(prompt_text) for t in tails)
        assert matcher.found_in(prompt_text) == expected, prompt_text
        found += expected
    assert 20 < found < 380  # both outcomes were exercised


def test_generations_with_markup_are_left_out_counted_by_reason(bot, db):
    """Stray tags reported by the parser, and tags stored in an answer before the parser stripped
    them, keep a generation out of every format, each counted under its own reason."""
    bot.write(ALICE, OPENING)
    good = bot.generate(answer="Clean prose at last.")
    stray = bot.generate(answer="Tags were stripped here.", issues=("stray_tag",))
    both = bot.generate(answer="And here.", issues=("stray_tag", "defused_tag"))
    old = bot.generate(answer="An old row <answer>with a tag</reasoning> inside.")
    copied = bot.generate(answer="It copied [answer] from the context.")
    for gid in (good, stray, both, old, copied):
        bot.rate(gid, (ALICE, 1))
    for fmt in ("sft", "kto"):
        rows, report = rows_of(db, fmt)
        assert len(rows) == 1 and "Clean prose at last." in json.dumps(rows[0])
        assert report.left_out == {
            "output broke the reasoning/answer format (stray_tag)": 1,
            "output broke the reasoning/answer format (defused_tag, stray_tag)": 1,
            "its answer holds reasoning/answer tags": 2,
        }
