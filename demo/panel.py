"""A panel of simulated writers with one stated, fixed preference, as pure functions.

A writer of the panel likes a passage when all three hold:

1. it is in the trained format: a reasoning, then an answer, with nothing the parser had to repair;
2. its answer is near the asked length: between half and twice the words asked for;
3. its answer names a character of the context (a capitalised name the context uses, see `characters`).

The writers differ only in which held-out contexts they judge, so the panel's verdict on a model is the
share of its passages liked, over every context and sample, with a 95% Wilson interval.

The third is a taste the books do not share: three sentences of the demo's books name a character in
about one window of nine (they say "he" and "she"), so SFT on them does not teach it, and the
preference step has something to teach that the panel can measure.

In the demo's console session the writers act on what they see, always the same way (`act`): they rate
each take; pick the one take they like when only one is, else the nearer of two they dislike (the one
meeting more of the three); rewrite a passage they dislike when a small fix makes it one they like
(`rewrite`); and erase it when none does and they had no better take to pick, then ask again, up to
three times, for a take they like or can fix, erasing the others (`retry`). Those actions become feedback,
and the same panel then judges base, SFT and SFT+preference on held-out contexts the feedback never
saw, each naming a character (a context that names no one cannot be liked).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

from contract import prompt
from pipeline.data.sentences import split_sentences
from pipeline.evaluate.judge import wilson

# Capitalised words that are not names: sentence openers, pronouns, titles alone, peoples, days and months.
_STOP_WORDS = """I A An The This That These Those There Then Than Now Here He She It We You They
    His Her Its Our
    Your Their My Me Him Them Us What When Where Which Who Whom Why How But And Or Nor So Yet For If
    As At By In Of On To Up No Not Yes Oh Ah Well Do Did Does Is Was Were Be Been Have Had Has Will
    Would Shall Should Can Could May Might Must Let All Some Any Each Every One Two After Before Upon
    With Without From Into Once While Though Although Because Since Until Still Even Just Only Very
    Mr Mrs Miss Sir Madam Lady Lord Dr Mister St Please Street Road Lane Square Fort Castle Bridge War
    English French Swiss Spanish German Italian Dutch Irish Scotch Scottish Russian Turkish Greek Indian
    Monday Tuesday Wednesday Thursday Friday Saturday Sunday
    January February March April June July August September October November December God Chapter"""
_NOT_NAMES = frozenset(_STOP_WORDS.split())
_WORD = re.compile(r"[A-Za-z][a-z]+(?:[A-Z][a-z]+)?|[A-Z]")  # McCarthy is one word
_AFTER_PLACE_WORD = re.compile(r"\b(?:to|in|into|at|from|by|towards?|near|across)\s+(?:the\s+)?$", re.I)
_BEFORE_PLACE_WORD = re.compile(r"\s+(?:Street|Road|Lane|Square|Place|Hall|Court|Park|Fort|Castle|Bridge)\b")
_AFTER_TITLE = re.compile(r"\b(?:Mr|Mrs|Ms|Dr|St)\.\s*$")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s*[\"'“‘(]?\s*|(?:[\"“‘]|(?<!\w)')\s*)$")


def characters(context: str, most: int = 3) -> list[str]:
    """The names a context uses, most frequent first: capitalised words that are not a stop word and
    appear at least once in the middle of a sentence (so "Then" at a sentence start is not a name),
    or after a title ("Mr. Holmes"), and not only as a place: after a preposition of place ("returned to
    Switzerland", "at the Hague") or before "Street" and the like."""
    counts: Counter[str] = Counter()
    mid: set[str] = set()
    person: set[str] = set()
    for m in _WORD.finditer(context):
        word = m.group()
        if not word[0].isupper() or word in _NOT_NAMES or len(word) < 2:
            continue
        counts[word] += 1
        before = context[max(0, m.start() - 16) : m.start()]
        if _AFTER_TITLE.search(before) or not _SENTENCE_START.search(before[-4:]):
            mid.add(word)
        if not (_AFTER_PLACE_WORD.search(before) or _BEFORE_PLACE_WORD.match(context, m.end())):
            person.add(word)
    return [w for w, _ in counts.most_common() if w in mid and w in person][:most]


@dataclass(frozen=True)
class Verdict:
    liked: bool
    in_format: bool
    near_length: bool
    names_a_character: bool

    @property
    def score(self) -> int:
        """How many of the three the passage meets: a writer picks the nearer of two takes it dislikes."""
        return self.in_format + self.near_length + self.names_a_character


def judge(context: str, output: str, asked_words: int) -> Verdict:
    """One writer's verdict on a model's raw output for `context`, asked for about `asked_words`."""
    parsed = prompt.parse_output(output)
    in_format = bool(parsed.reasoning and parsed.answer and not parsed.issues)
    words = len(parsed.answer.split())
    near = asked_words / 2 <= words <= asked_words * 2
    names = set(characters(context, most=10))
    named = any(w in names for w in re.findall(r"[A-Za-z]+", parsed.answer))
    return Verdict(in_format and near and named, in_format, near, named)


def rewrite(context: str, output: str, human: str, asked_words: int) -> str | None:
    """A writer's edit of a passage it dislikes, the smallest that makes it one it likes: the model's
    sentences cut at twice the asked length, the book's next sentences (`human`) added while under half
    of it, and the first "he" or "she" made the context's main character when the passage names none.
    None when the output is not in the trained format (the writer keeps the plan, fixes the passage)
    or the context names no one."""
    parsed = prompt.parse_output(output)
    names = characters(context)
    if not (parsed.reasoning and parsed.answer and not parsed.issues and names):
        return None
    words: list[str] = []
    for sentence in _sentences(parsed.answer):
        if words and len(words) + len(sentence.split()) > asked_words * 2:
            break
        words += sentence.split()
    for sentence in _sentences(human):
        if len(words) >= asked_words / 2:
            break
        words += sentence.split()
    text = " ".join(words)
    if not judge(context, prompt.render_target(parsed.reasoning, text), asked_words).names_a_character:
        text = _PRONOUN.sub(names[0], text, count=1)
    return text if judge(context, prompt.render_target(parsed.reasoning, text), asked_words).liked else None


_PRONOUN = re.compile(r"\b(?:[Hh]e|[Ss]he)\b")


def _sentences(text: str) -> list[str]:
    """Sentences as the demo's windows were cut (the pipeline's splitter), paragraph by paragraph."""
    return [s for paragraph in text.splitlines() for s in split_sentences(paragraph)]


@dataclass(frozen=True)
class Act:
    """What a writer does with a passage's two takes: each take's rating, the take it picks (None: it
    keeps the one shown), then what it does to the passage now shown: keep, edit (to `text`) or erase."""

    ratings: tuple[bool, ...]
    take: int | None
    then: str  # "keep", "edit" or "erase"
    text: str | None = None

    @property
    def actions(self) -> list[str]:
        """The actions as the report counts them ("keep" only when the writer did nothing else)."""
        picked = ["take"] if self.take else []
        return picked + ([self.then] if self.then != "keep" or not picked else [])


def act(context: str, outputs: tuple[str, str], human: str, asked_words: int) -> Act:
    """The writers' fixed conduct on two takes of a passage (the second one shown)."""
    verdicts = [judge(context, o, asked_words) for o in outputs]
    ratings = (verdicts[0].liked, verdicts[1].liked)
    if all(ratings):
        return Act(ratings, None, "keep")
    if any(ratings):
        return Act(ratings, 1 if ratings[0] else 2, "keep")
    scores = [v.score for v in verdicts]
    take = None if scores[0] == scores[1] else 1 + scores.index(max(scores))
    text = rewrite(context, outputs[(take or 2) - 1], human, asked_words)
    if text:
        return Act(ratings, take, "edit", text)
    return Act(ratings, take, "keep" if take else "erase")


#: How many times the writers ask again after erasing a passage, for one they like or can fix.
RETRIES = 3


def retry(context: str, output: str, human: str, asked_words: int) -> Act:
    """The writers' conduct on a take they asked for after erasing a passage: rate it, keep it when
    they like it, fix it as `act` would when a small edit makes it one they like, else erase it too."""
    liked = judge(context, output, asked_words).liked
    text = None if liked else rewrite(context, output, human, asked_words)
    return Act((liked,), None, "edit" if text else "keep" if liked else "erase", text)


def rate(verdicts: list[Verdict]) -> dict:
    """The panel's figures for one model: the preference rate, its interval, and each criterion's rate."""
    n = len(verdicts)
    liked = sum(v.liked for v in verdicts)
    low, high = wilson(liked, n) or (0.0, 1.0)  # no verdicts: nothing known
    share = lambda k: round(sum(getattr(v, k) for v in verdicts) / n, 4) if n else None  # noqa: E731
    return {
        "n": n,
        "liked": liked,
        "rate": round(liked / n, 4) if n else None,
        "ci95": [round(low, 4), round(high, 4)],
        "in_format": share("in_format"),
        "near_length": share("near_length"),
        "names_a_character": share("names_a_character"),
    }


def paired(a: dict[tuple[int, int], Verdict], b: dict[tuple[int, int], Verdict]) -> dict:
    """Model a against model b on the same held-out outputs' slots (context, sample): how often the
    panel liked a's output where it did not like b's, the reverse, and the exact one-sided sign test's
    p-value that a is no better (the slots where both or neither were liked say nothing)."""
    slots = sorted(a.keys() & b.keys())
    wins = sum(a[k].liked and not b[k].liked for k in slots)
    losses = sum(b[k].liked and not a[k].liked for k in slots)
    n = wins + losses
    p = sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n
    return {"slots": len(slots), "wins": wins, "losses": losses, "p_one_sided": round(p, 4)}
