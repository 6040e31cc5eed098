"""The bot's ratings as training rows for SFT, KTO and DPO. Pure: a :class:`Snapshot` in, rows out.

Rules (the README's section 8 says the same for users):

- Votes: one per member per generation (the store's key; rating again replaces the vote). Votes of
  members who opted out are not counted. A generation's *net* rating is up minus down.
- Every format uses only finished generations whose output parsed cleanly into reasoning and answer
  (what the model actually wrote then equals the target we train on), and leaves out a generation when
  a member who opted out asked for it (their direction is in its prompt) or its prompt holds their text:
  a passage of theirs is in the context record, or the last 64 characters (whitespace folded) of one
  of their passages of at least 24 characters appear in the prompt. Shorter passages ("Yes.") would
  match innocent prompts, so only the context record catches them.
- sft: net >= min_votes (so more up than down), and its passage still in the story: a passage the
  writers undid or reset is not imitated.
- kto: label true for net >= min_votes, false for net <= -min_votes; mixed votes are left out. Undone
  passages count: the vote was on what the model wrote for that prompt.
- dpo: within one slot (regenerations of the same prompt), every two rated generations where one is
  clearly liked (net >= min_votes, chosen) and the other is not (net <= 0, rejected). Two versions both
  rated up are no preference: their nets may differ only by how many people looked. Regenerations
  must share the exact prompt; a pair whose prompts differ is left out and counted.
- Rows are exactly deduplicated and ordered by generation id, so the same database gives the same file.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import combinations

from contract import prompt
from pipeline.feedback.snapshot import Generation, Snapshot

FORMATS = ("sft", "kto", "dpo")
#: Opted-out passages shorter than this are matched by id only (see the module doc).
MIN_MATCH_CHARS = 24
MATCH_TAIL_CHARS = 64


@dataclass(frozen=True)
class Filters:
    min_votes: int = 1
    since: float | None = None  # unix time: generations created at or after it
    model: str | None = None


@dataclass(frozen=True)
class Candidate:
    gen: Generation
    up: int
    down: int
    target: str  # the assistant text: contract.prompt.render_target(reasoning, answer)

    @property
    def net(self) -> int:
        return self.up - self.down

    @property
    def rated(self) -> bool:
        return self.up + self.down > 0


@dataclass
class Report:
    """What an export wrote and, counted by reason, what it left out."""

    fmt: str
    generations: int = 0
    votes: int = 0
    ignored_votes: int = 0  # by members who opted out
    written: Counter = field(default_factory=Counter)  # kind of row -> rows
    left_out: Counter = field(default_factory=Counter)  # reason -> generations
    pairs_left_out: Counter = field(default_factory=Counter)  # reason -> pairs (dpo)
    duplicates: int = 0
    migrated_from: int | None = None

    @property
    def rows(self) -> int:
        return sum((+self.written).values())

    def lines(self) -> list[str]:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted((+self.written).items())) or "none"
        out = [
            f"{self.rows} {self.fmt} rows ({kinds}) from {self.generations} finished generations and "
            f"{self.votes} counted votes"
        ]
        if self.migrated_from is not None:
            out.append(f"read from schema version {self.migrated_from}, migrated in memory (file untouched)")
        if self.ignored_votes:
            out.append(f"{self.ignored_votes} votes by members who opted out were not counted")
        for title, counter in (("generations", self.left_out), ("pairs", self.pairs_left_out)):
            if counter:
                out.append(f"left out ({title}):")
                out += [f"  {n:>6}  {reason}" for reason, n in sorted(counter.items(), key=_by_count)]
        if self.duplicates:
            out.append(f"dropped {self.duplicates} rows identical to an earlier row")
        return out


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def export(snap: Snapshot, fmt: str, filters: Filters = Filters()) -> tuple[list[dict], Report]:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if filters.min_votes < 1:
        raise ValueError("--min-votes must be at least 1")
    report = Report(fmt, generations=len(snap.generations), migrated_from=snap.migrated_from)
    cands = candidates(snap, filters, report)
    rows = {"sft": _sft, "kto": _kto, "dpo": _dpo}[fmt](cands, filters.min_votes, report)
    return _dedupe(rows, report), report


def counted_votes(snap: Snapshot) -> tuple[dict[int, tuple[int, int]], int]:
    """(up, down) per generation id from members who did not opt out, and how many votes were ignored."""
    latest: dict[tuple[int, str], int] = {}  # one vote per member per generation, whatever the source
    ignored = 0
    for r in snap.ratings:
        if r.member_id in snap.opted_out:
            ignored += 1
        else:
            latest[(r.generation_id, r.member_id)] = r.value
    tally: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for (gid, _), value in latest.items():
        tally[gid][0 if value > 0 else 1] += 1
    return {gid: (up, down) for gid, (up, down) in tally.items()}, ignored


def candidates(snap: Snapshot, filters: Filters, report: Report) -> list[Candidate]:
    """The generations every format may use, with their counted votes; the others counted by reason."""
    votes, report.ignored_votes = counted_votes(snap)
    report.votes = sum(up + down for up, down in votes.values())
    private = opted_out_matcher(snap)
    wanted = _same_model(filters.model) if filters.model else None
    out = []
    for g in snap.generations:
        up, down = votes.get(g.id, (0, 0))
        reason = None
        if wanted and not wanted(g.model):
            reason = f"another model than {filters.model}"
        elif filters.since is not None and g.created_at < filters.since:
            reason = "written before --since"
        elif g.requested_by in snap.opted_out:
            reason = "asked for by a member who opted out"
        elif private(g):
            reason = "its prompt holds text by a member who opted out"
        elif g.issues:  # counted by what was wrong: stray tags, an unclosed answer, ...
            reason = f"output broke the reasoning/answer format ({', '.join(sorted(g.issues))})"
        elif prompt.has_markup(g.answer):  # stored before the parser stripped tags from answers
            reason = "its answer holds reasoning/answer tags"
        elif not up + down:
            reason = "not rated"
        if reason:
            report.left_out[reason] += 1
            continue
        try:
            target = prompt.render_target(g.reasoning, g.answer)
        except prompt.PromptError:
            report.left_out["empty reasoning or answer"] += 1
            continue
        out.append(Candidate(g, up, down, target))
    return out


def opted_out_matcher(snap: Snapshot) -> Callable[[Generation], bool]:
    """Whether a generation's prompt holds text by a member who opted out (rule in the module doc)."""
    ids = set(snap.opted_out_passages)
    texts = _TextMatcher(_fold(prompt.neutralize(t)) for t in snap.opted_out_passages.values())
    return lambda g: bool(ids.intersection(g.context_passages)) or texts.found_in(g.user_text)


class _TextMatcher:
    """Finds the tail of any of many passages in a prompt, fast: a tail is looked for only in prompts
    holding its longest whole word (its *anchor*: a word whole in the tail is whole in the prompt too),
    so thousands of opted-out passages against thousands of prompts stay well under a second."""

    def __init__(self, folded: Iterable[str]):
        self.by_anchor: dict[str, list[str]] = defaultdict(list)
        self.loose: list[str] = []  # tails with no whole word for an anchor
        for text in folded:
            if len(text) < MIN_MATCH_CHARS:
                continue
            tail = text[-MATCH_TAIL_CHARS:]
            inner = tail.split(" ")[1:-1]  # the first and last words may be cut or run on in the prompt
            if inner:
                self.by_anchor[max(inner, key=len)].append(tail)
            else:
                self.loose.append(tail)

    def found_in(self, text: str) -> bool:
        words = text.split()
        tails = [t for a in set(words).intersection(self.by_anchor) for t in self.by_anchor[a]] + self.loose
        if not tails:
            return False
        folded = " ".join(words)
        return any(t in folded for t in tails)


def _fold(text: str) -> str:
    return " ".join(text.split())


def _same_model(name: str) -> Callable[[str], bool]:
    """Ollama names without a tag mean ':latest', so `writer` matches `writer:latest`."""

    def norm(n: str) -> str:
        return n if ":" in n.rsplit("/", 1)[-1] else f"{n}:latest"

    wanted = norm(name)
    return lambda model: norm(model) == wanted


def _sft(cands: list[Candidate], min_votes: int, report: Report) -> list[dict]:
    rows = []
    for c in cands:
        if c.net < min_votes:
            report.left_out[f"net rating below +{min_votes}"] += 1
        elif c.gen.removed:
            report.left_out["rated up but undone or reset by the writers"] += 1
        else:
            rows.append(_messages(c))
            report.written["positive"] += 1
    return rows


def _messages(c: Candidate) -> dict:
    return {
        "messages": [
            {"role": "user", "content": c.gen.user_text},
            {"role": "assistant", "content": c.target},
        ]
    }


def _kto(cands: list[Candidate], min_votes: int, report: Report) -> list[dict]:
    rows = []
    for c in cands:
        if abs(c.net) < min_votes:
            report.left_out[f"mixed votes (net between -{min_votes} and +{min_votes})"] += 1
            continue
        label = c.net > 0
        rows.append({"prompt": c.gen.user_text, "completion": c.target, "label": label})
        report.written["desirable" if label else "undesirable"] += 1
    return _drop_conflicts(rows, report)


def _drop_conflicts(rows: list[dict], report: Report) -> list[dict]:
    """The same prompt and completion labelled both ways says nothing: drop all its rows."""
    labels: dict[tuple[str, str], set[bool]] = defaultdict(set)
    for r in rows:
        labels[(r["prompt"], r["completion"])].add(r["label"])
    kept = []
    for r in rows:
        if len(labels[(r["prompt"], r["completion"])]) > 1:
            report.written["desirable" if r["label"] else "undesirable"] -= 1
            report.left_out["the same text rated up in one place and down in another"] += 1
        else:
            kept.append(r)
    return kept


def _dpo(cands: list[Candidate], min_votes: int, report: Report) -> list[dict]:
    slots: dict[int, list[Candidate]] = defaultdict(list)
    for c in cands:
        if c.gen.slot is None:
            report.left_out["no passage slot"] += 1
        else:
            slots[c.gen.slot].append(c)
    rows = []
    for slot in sorted(slots):
        versions = sorted(slots[slot], key=lambda c: c.gen.id)
        used: set[int] = set()
        for a, b in combinations(versions, 2):
            row = _pair(a, b, min_votes, report)
            if row:
                rows.append(row)
                used |= {a.gen.id, b.gen.id}
        for c in versions:
            if c.gen.id not in used:
                reason = (
                    "no other rated version of its passage"
                    if len(versions) == 1
                    else "no other version of its passage to pair with (one liked, the other not)"
                )
                report.left_out[reason] += 1
    report.written["pairs"] = len(rows)
    return rows


def _pair(a: Candidate, b: Candidate, min_votes: int, report: Report) -> dict | None:
    chosen, rejected = (a, b) if a.net >= b.net else (b, a)
    if chosen.net < min_votes:
        report.pairs_left_out[f"neither version rated at least +{min_votes}"] += 1
        return None
    if rejected.net > 0:
        report.pairs_left_out["both versions rated up"] += 1
        return None
    if a.gen.user_text != b.gen.user_text:
        report.pairs_left_out["regenerations whose prompts differ"] += 1
        return None
    if a.target == b.target:
        report.pairs_left_out["both versions have the same text"] += 1
        return None
    return {"prompt": a.gen.user_text, "chosen": chosen.target, "rejected": rejected.target}


def _dedupe(rows: Iterable[dict], report: Report) -> list[dict]:
    seen: set[str] = set()
    out = []
    for r in rows:
        key = json.dumps(r, sort_keys=True, ensure_ascii=False)
        if key in seen:
            report.duplicates += 1
            kind = {"sft": "positive", "dpo": "pairs"}.get(report.fmt) or (
                "desirable" if r["label"] else "undesirable"
            )
            report.written[kind] -= 1
            continue
        seen.add(key)
        out.append(r)
    return out
