"""Pairwise judging: a judge model reads one context and two models' continuations of it, and says which
continues it better on a rubric. Pure: the prompt, the verdict parser, the pairing of `eval compare`
outputs and the statistics; the command (commands.py) sends the prompts through the teacher backends.

Every item (a context and sample both models continued) is judged twice, once in each order, so a judge
that prefers whatever it reads first cancels out; the two verdicts of an item are averaged into its score,
and items, not verdicts, are the independent unit of the interval.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from contract import prompt

#: Recorded in every result: a change to the judge's prompt or its answer format gets a new version, so
#: figures judged under different prompts are never mixed up.
PROMPT_VERSION = "judge-v1"
CRITERIA = ("context", "motivation", "pacing", "prose")
OVERALL = "overall"
A, B, TIE = "A", "B", "tie"  # a verdict as the judge sees the pair: first shown, second shown, or a tie
Z95 = 1.959963984540054  # the normal quantile of 0.975

SYSTEM = "You are a careful fiction editor. You compare two continuations of the same story fairly."
RUBRIC = """\
Below is the end of a story (the context) and two continuations of it, A and B, written by two writers.
Decide which continuation is better on each criterion:
1. context: it follows on from the context: the same scene, events, facts, point of view and tense.
2. motivation: the characters act from the motivations and feelings the context gives them.
3. pacing: it moves the plot forward the right amount, neither stalling nor rushing ahead.
4. prose: clear, vivid, well-formed prose, without repetition.
Ignore length unless it hurts a criterion. A tie is fine when neither is better.

### Context:
{context}

### Continuation A:
{first}

### Continuation B:
{second}

Answer with exactly these five lines, each ending in A, B or tie, and nothing else:
context: A
motivation: A
pacing: A
prose: A
overall: A"""


class JudgeError(ValueError):
    """The inputs cannot be judged (empty, mismatched, a model not in them); the message says the fix."""


# --- the prompt -------------------------------------------------------------------------------------
def messages(context: str, first: str, second: str, context_chars: int | None = None) -> list[dict]:
    """The chat the judge gets: our system turn and the rubric with the texts filled in."""
    if context_chars is not None and len(context) > context_chars:
        context = "…" + context[-context_chars:]  # the end of the story is what a continuation follows
    user = RUBRIC.format(
        context=context.strip(), first=first.strip() or "(empty)", second=second.strip() or "(empty)"
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


# --- the verdict ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """What a judge's reply says: the overall choice and each criterion's (None where unreadable)."""

    overall: str | None
    criteria: dict[str, str | None] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.overall is not None


_FIRST_KEY = re.compile(r"^(?:overall|final|verdict|winner)")  # 'Overall prose: A' is the overall verdict
_KEYS = (  # else a line's label, by the first pattern that matches it ('context better: A' is context)
    ("context", re.compile(r"context|follow|consisten|coheren")),
    ("motivation", re.compile(r"motiv|character")),
    ("pacing", re.compile(r"pac|plot|progress")),
    ("prose", re.compile(r"prose|style|writing|language")),
    (OVERALL, re.compile(r"overall|verdict|winner|better|prefer|decision|choice|result")),
)
_LINE = re.compile(r"^[\s>*#\-\d.)]*(?P<key>[a-z][a-z /'()-]{0,40}?)\s*(?:[:=]|\s-\s|\s–\s)\s*(?P<value>.+)$")
_TIE_WORDS = r"(?:tie|tied|equal|both|neither|draw|same|even)\b"
_TIE_FIRST = re.compile(r"^(?:(?:it\s+is|it'?s)\s+)?(?:an?\s+)?" + _TIE_WORDS)
_TIE_ANY = re.compile(r"\b(?:tie|tied|draw|equal|equally|neither)\b")
_CHOICE = re.compile(r"^(?:continuation|response|option|story|text|writer|answer)?\s*([ab])\b(?![-'])")
_BOTH = re.compile(r"^\s*(?:and|&|,|/|or)\s*(?:continuation\s+)?[ab]\b")  # 'A and B': no choice
_NAMED = re.compile(r"\b(?:continuation|response|option|story|text|writer)\s+([ab])\b")
_BRACKETED = re.compile(r"\[\[\s*(a|b|tie)\s*\]\]")
_BETTER = re.compile(r"\b(?:continuation|response|option)\s+([ab])\s+is\s+(?:the\s+)?(?:better|stronger)")
_ALONE = re.compile(r"(?:continuation|response|option)?\s*([ab]|tie)")


def _choice(value: str) -> str | None:
    """A, B or tie from the value part of a line ('B', '**Continuation B**', 'it is a tie'), or None
    where it names both or neither."""
    v = re.sub(r"[*_`\"'\[\]]", "", value).strip().lower()
    if _TIE_FIRST.match(v):
        return TIE
    m = _CHOICE.match(v)
    if m:
        return None if _BOTH.match(v[m.end() :]) else m[1].upper()
    named = set(_NAMED.findall(v))
    if named:
        return named.pop().upper() if len(named) == 1 else None
    return TIE if _TIE_ANY.search(v) else None


def _label(key: str) -> str | None:
    if _FIRST_KEY.match(key):
        return OVERALL
    return next((name for name, pattern in _KEYS if pattern.search(key)), None)


def parse_verdict(text: str) -> Verdict:
    """Read a judge's reply leniently: 'label: choice' lines in any order, case and markup (the first
    readable line of each label counts, so an echoed '### Context: ...' does not hide the verdict);
    without an overall line, a reply that is one choice ('B', '[[A]]', 'Continuation B is better').
    Whatever cannot be read is None, never a tie."""
    # A reasoning model's thoughts are not its verdict (unclosed: it ran out of tokens while thinking).
    text = re.sub(r"(?s)<think>.*?(?:</think>|$)", "", text or "")
    found: dict[str, str | None] = {}
    for line in text.splitlines():
        m = _LINE.match(re.sub(r"[*_`]", "", line).strip().lower())
        label = _label(m["key"]) if m else None
        if m and label is not None and found.get(label) is None:
            found[label] = _choice(m["value"])
    overall = found.get(OVERALL) or _lone_choice(text)
    return Verdict(overall, {c: found.get(c) for c in CRITERIA})


def _lone_choice(text: str) -> str | None:
    """A reply whose first line is only a choice ('B.', 'Tie', 'Continuation A', then maybe rambling),
    or that says one in a known phrase ('[[A]]', 'Continuation B is better')."""
    plain = text.strip().lower()
    for pattern in (_BRACKETED, _BETTER):
        hits = set(pattern.findall(plain))
        if len(hits) == 1:
            return _normal(hits.pop())
    first_line = next((line for line in plain.splitlines() if line.strip()), "")
    m = _ALONE.fullmatch(re.sub(r"[*_`\"'\[\].!]", "", first_line).strip())
    return _normal(m[1]) if m else None


def _normal(choice: str) -> str:
    return TIE if choice == "tie" else choice.upper()


# --- the items: pairs of `eval compare` outputs -----------------------------------------------------
@dataclass(frozen=True)
class Item:
    """One context and sample both models continued; `key` is (context_index, sample)."""

    key: tuple[int, int]
    context: str
    a: str
    b: str


def labels_of(rows: Iterable[dict]) -> list[str]:
    """The model labels in `eval compare` outputs, in order of first appearance."""
    return list(dict.fromkeys(str(r.get("model")) for r in rows if r.get("model") is not None))


def pick_labels(rows: Sequence[dict], a: str | None, b: str | None) -> tuple[str, str]:
    """The two models to compare: as given, or the only two the outputs hold."""
    labels = labels_of(rows)
    if not labels:
        raise JudgeError(
            "the outputs name no model (no 'model' field): give the outputs.jsonl `eval compare` wrote"
        )
    if a is None and b is None and len(labels) == 2:
        return labels[0], labels[1]
    if a is None or b is None:
        raise JudgeError(
            f"the outputs hold the models {', '.join(labels) or 'none'}: "
            "name the two to compare with --a and --b"
        )
    for flag, label in (("--a", a), ("--b", b)):
        if label not in labels:
            raise JudgeError(
                f"{flag} {label!r} is not in the outputs (they hold: {', '.join(labels) or 'none'})"
            )
    if a == b:
        raise JudgeError(f"--a and --b are both {a!r}: compare two different models")
    return a, b


def answer_of(row: dict) -> str:
    """The continuation a row holds: compare's parsed answer, else the answer parsed from its output."""
    if isinstance(row.get("answer"), str):
        return row["answer"]
    return prompt.parse_output(str(row.get("output") or "")).answer


def context_of(row: dict) -> str:
    """The story context of a row: read back from the writer prompt compare recorded."""
    text = row.get("prompt")
    if not isinstance(text, str) or not text.strip():
        raise JudgeError(
            f"an output of {row.get('model')!r} has no 'prompt': give the outputs.jsonl of `eval compare`"
        )
    parts = prompt.split_prompt(text)
    return parts[0] if parts else text


def pair_items(rows: Sequence[dict], a: str, b: str) -> list[Item]:
    """Items both models answered, matched by context and sample; the two must have seen the same prompt."""
    by_model: dict[str, dict[tuple[int, int], dict]] = {a: {}, b: {}}
    for n, row in enumerate(rows, 1):
        label = row.get("model")
        if label not in by_model:
            continue
        try:
            key = (int(row["context_index"]), int(row.get("sample") or 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise JudgeError(
                f"output row {n} has no context_index: give the outputs.jsonl of `eval compare`"
            ) from exc
        if key in by_model[label]:
            raise JudgeError(
                f"{label!r} has two outputs for context {key[0] + 1}, sample {key[1]}: "
                "give each model's outputs once"
            )
        by_model[label][key] = row
    rows_a, rows_b = by_model[a], by_model[b]
    if rows_a.keys() != rows_b.keys():
        only = sorted(rows_a.keys() ^ rows_b.keys())[0]
        has, lacks = (a, b) if only in rows_a else (b, a)
        raise JudgeError(
            f"{has!r} has an output for context {only[0] + 1}, sample {only[1]} and {lacks!r} has none "
            f"({len(rows_a)} against {len(rows_b)} outputs): "
            "rerun `eval compare` so both answer the same contexts"
        )
    items = []
    for key in sorted(rows_a):
        ra, rb = rows_a[key], rows_b[key]
        if ra.get("prompt") != rb.get("prompt"):
            raise JudgeError(
                f"context {key[0] + 1}, sample {key[1]}: {a!r} and {b!r} were given different prompts "
                "(different contexts files or lengths): compare outputs of the same contexts"
            )
        items.append(Item(key, context_of(ra), answer_of(ra), answer_of(rb)))
    if not items:
        raise JudgeError(f"no outputs of {a!r} and {b!r} to judge: run `eval compare` with both first")
    return items


# --- from verdicts to results -----------------------------------------------------------------------
def for_model(choice: str | None, swapped: bool) -> str | None:
    """A shown-position choice as the models' labels 'a', 'b' or 'tie' (swapped: B was shown first)."""
    if choice is None or choice == TIE:
        return None if choice is None else "tie"
    return {A: "b", B: "a"}[choice] if swapped else {A: "a", B: "b"}[choice]


SCORE = {"a": 1.0, "tie": 0.5, "b": 0.0}


def item_score(first: str | None, second: str | None) -> float | None:
    """An item's score for model a: the mean of its readable verdicts (1 win, 0.5 tie, 0 loss)."""
    scores = [SCORE[c] for c in (first, second) if c is not None]
    return sum(scores) / len(scores) if scores else None


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion. With scores in [0, 1] rather than 0 or 1 (ties, split
    orders) the variance is at most p(1 - p), so the interval is conservative, never too narrow."""
    if n <= 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def tally(pairs: Sequence[tuple[str | None, str | None]]) -> dict:
    """The results of one criterion from each item's two verdicts (in model terms, order 1 then order 2):
    win rate of a with its 95% interval, the outcome counts, and the judge's consistency across orders."""
    scores = [s for s in (item_score(x, y) for x, y in pairs) if s is not None]
    both = [(x, y) for x, y in pairs if x is not None and y is not None]
    agree = sum(x == y for x, y in both)
    counts = {
        "a_both": sum(x == y == "a" for x, y in both),
        "b_both": sum(x == y == "b" for x, y in both),
        "tie_both": sum(x == y == "tie" for x, y in both),
        "split": len(both) - agree,
        "one_unparsed": sum((x is None) != (y is None) for x, y in pairs),
        "unparsed": sum(x is None and y is None for x, y in pairs),
    }
    interval = wilson(sum(scores), len(scores))
    return {
        "items": len(pairs),
        "judged": len(scores),
        "win_rate": sum(scores) / len(scores) if scores else None,
        "ci95": list(interval) if interval else None,
        "consistency": agree / len(both) if both else None,
        "consistent_items": agree,
        "both_parsed": len(both),
        "unparsed_verdicts": sum((x is None) + (y is None) for x, y in pairs),
        **counts,
    }


@dataclass
class Judged:
    """The two verdicts of one item: the judge's replies, in the order shown (a first, then b first)."""

    item: Item
    replies: tuple[str, str]
    verdicts: tuple[Verdict, Verdict]

    def in_model_terms(self, criterion: str) -> tuple[str | None, str | None]:
        get = (lambda v: v.overall) if criterion == OVERALL else (lambda v: v.criteria.get(criterion))
        return for_model(get(self.verdicts[0]), False), for_model(get(self.verdicts[1]), True)


def summarize(judged: Sequence[Judged]) -> dict:
    """Overall and per-criterion results, and how often the judge chose the continuation shown first."""
    results = {c: tally([j.in_model_terms(c) for j in judged]) for c in (OVERALL, *CRITERIA)}
    decisive = [v.overall for j in judged for v in j.verdicts if v.overall in (A, B)]
    return {
        OVERALL: results[OVERALL],
        "criteria": {c: results[c] for c in CRITERIA if results[c]["judged"]},
        "first_shown_rate": sum(c == A for c in decisive) / len(decisive) if decisive else None,
    }


def verdict_rows(judged: Sequence[Judged], a: str, b: str) -> list[dict]:
    """Every judge call as a row of verdicts.jsonl: which model was shown first, the reply, what was read."""
    rows = []
    for j in judged:
        for order, (reply, verdict) in enumerate(zip(j.replies, j.verdicts, strict=True)):
            first, second = (a, b) if order == 0 else (b, a)
            rows.append(
                {
                    "context_index": j.item.key[0],
                    "sample": j.item.key[1],
                    "order": order + 1,
                    "shown_a": first,
                    "shown_b": second,
                    "reply": reply,
                    "parsed": verdict.ok,
                    "overall": verdict.overall,
                    "criteria": verdict.criteria,
                    "winner": {None: None, "tie": "tie", "a": a, "b": b}[
                        for_model(verdict.overall, order == 1)
                    ],
                    "prompt_version": PROMPT_VERSION,
                }
            )
    return rows
