"""The context at a full window keeps a long stable prefix: passages leave in steps, what changes often
sits after them, and the same story gives the same cut on every request until the next step."""

from __future__ import annotations

import os
import random
import statistics

from bot.core.context import LORE_LEAD, Budget, CharCounter, Shares, build_context, build_story_context
from bot.core.lore import LoreEntry, parse_keywords
from bot.core.story import AuthorKind, Note, Passage, Summary
from contract import prompt

CHARS = CharCounter(chars_per_token=1.0)  # one "token" per character: easy arithmetic
BUDGET = Budget(3000, 600, usual_predict=600)
MEMORY = Note(7, "memory", "A grim tale told by the lighthouse keeper, in the first person.")
NAMES = ("Mara", "Jon", "Ines")
LORE = [
    LoreEntry(i, n, parse_keywords(n), f"{n} has a secret worth a boat.", version=1)
    for i, n in enumerate(NAMES)
]


def _story(n: int, seed: int = 7) -> list[Passage]:
    """Passages of varied length; every few mention a character, so triggered lore comes and goes."""
    rng = random.Random(seed)
    out = []
    for i in range(1, n + 1):
        who = NAMES[i % 3] if i % 4 == 0 else "the keeper"
        text = f"Passage {i}: {who} climbed the stairs. " + "The lamp burned on. " * rng.randint(3, 12)
        out.append(Passage(i, 1, i, AuthorKind.MEMBER, "1", "A", text.strip()))
    return out


def _shared(a: str, b: str) -> int:
    return len(os.path.commonprefix([a, b]))


def _prompts(passages, note="Keep it tense.", **kw):
    for i in range(1, len(passages) + 1):
        ctx = build_context(passages[:i], CHARS, BUDGET, note, memory=MEMORY, lore=LORE, **kw)
        yield ctx, prompt.render_prompt(ctx.text, note)


def test_consecutive_prompts_at_a_full_window_share_most_of_their_prefix():
    story = _story(120)
    shares, previous = [], None
    for ctx, user in _prompts(story):
        if previous is not None and ctx.dropped:
            shares.append(_shared(previous, user) / len(user))
        previous = user
    assert len(shares) > 60  # the window was full for most of the story
    assert statistics.median(shares) >= 0.8
    # The old policy (one passage at a time) shares only the header and the memory.
    old = [s for s in shares if s < 0.2]
    assert len(old) < len(shares) / 4


def test_the_start_moves_only_in_big_steps_and_is_the_same_on_every_request_until_then():
    story = _story(120)
    starts, moves = [], []
    for i, (ctx, _) in enumerate(_prompts(story), 1):
        again = build_context(story[:i], CHARS, BUDGET, "Keep it tense.", memory=MEMORY, lore=LORE)
        assert again.text == ctx.text  # deterministic: the preview is the prompt
        if starts and ctx.passage_ids[0] != starts[-1]:
            left = [p for p in story if starts[-1] <= p.id < ctx.passage_ids[0]]
            moves.append(sum(CHARS.count(p.text) for p in left) / ctx.budget)
        starts.append(ctx.passage_ids[0])
        assert not ctx.cut and ctx.size <= ctx.budget
    assert starts == sorted(starts) and len(moves) >= 5
    assert min(moves) >= Shares().step * 0.5  # a step is a good part of the room, never one passage


def test_triggered_lore_and_the_direction_sit_after_the_passages_and_do_not_move_them():
    story = _story(60)
    quiet = build_context(story, CHARS, BUDGET, memory=MEMORY, lore=LORE, shares=Shares(scan=0))
    loud = build_context(
        story,
        CHARS,
        BUDGET,
        "Mara and Jon and Ines.",
        memory=MEMORY,
        lore=LORE,
        mentions="Mara and Jon and Ines.",
    )
    assert quiet.lore == [] and len(loud.lore) == 3
    assert loud.passage_ids == quiet.passage_ids  # the lorebook's room is kept whether used or not
    assert loud.text.startswith(quiet.text + "\n\n* * *\n\n" + LORE_LEAD + "\n\n")
    assert loud.text.endswith(LORE[0].text) and loud.size <= loud.budget  # the last mentioned first


def test_a_request_of_another_length_keeps_the_steps_and_space_short_keeps_the_priorities():
    story = _story(80)
    usual = build_context(story, CHARS, BUDGET, memory=MEMORY, lore=LORE)
    long = Budget(3000, 1500, usual_predict=600)  # far less room for this one request
    tight = build_context(story, CHARS, long, "Mara.", memory=MEMORY, lore=LORE, mentions="Mara.")
    assert tight.text.startswith(MEMORY.text) and tight.lore[0].name == "Mara"  # memory, lore first
    assert tight.passage_ids[-1] == story[-1].id and tight.size <= tight.budget  # then the newest passages
    assert tight.passage_ids[0] > usual.passage_ids[0]
    # ... and the next usual request starts where the previous usual one did.
    assert build_context(story, CHARS, BUDGET, memory=MEMORY, lore=LORE).passage_ids == usual.passage_ids


def test_a_summary_written_ahead_comes_in_with_the_next_step_and_the_prefix_is_stable_until_then():
    story = _story(120)
    written: list[Summary] = []  # newest first, as summary.valid gives them
    previous, breaks, rolls, lost = None, 0, 0, 0
    for i in range(1, len(story) + 1):
        ctx = build_story_context(story[:i], written[:2], CHARS, BUDGET, memory=MEMORY)
        user = prompt.render_prompt(ctx.text)
        if previous is not None:
            prev_ctx, prev_user = previous
            if ctx.summary_id != prev_ctx.summary_id:  # a new summary comes in only with a step
                rolls += 1
                assert ctx.passage_ids[0] > prev_ctx.passage_ids[0] or prev_ctx.dropped  # or one was late
            elif ctx.passage_ids[0] == prev_ctx.passage_ids[0]:  # no step: memory and summary byte-stable
                assert _shared(prev_user, user) >= len(prev_user) - len(prompt.PROMPT_SUFFIX)
            breaks += _shared(prev_user, user) < 0.5 * len(user)
        lost += bool(ctx.dropped)  # passages left before a summary told them
        previous = (ctx, user)
        if ctx.summarise_upto is not None and (not written or ctx.summarise_upto > written[0].upto_position):
            assert ctx.summarise_upto < story[i - 1].position - 1  # never the two newest
            text = f"Everything up to passage {ctx.summarise_upto}, in brief."
            written.insert(0, Summary(len(written) + 1, 1, ctx.summarise_upto, (), "d", "done", "m", text))
    assert 4 <= rolls <= 30 and lost <= 1  # summaries ready before their step: nothing is just lost
    assert breaks <= rolls + 1  # the cache breaks once per step, a new summary with it
