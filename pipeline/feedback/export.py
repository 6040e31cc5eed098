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
  clearly liked (net >= min_votes, or edited: the writers' fix is what they like; chosen) and the other
  is not (net <= 0, rejected). Two versions both rated up are no preference: their nets may differ only
  by how many people looked. Regenerations must share the exact prompt; a pair whose prompts differ is
  left out and counted.
- Writers' actions on a take (the bot's edit, takes and erase commands), each from members who did not
  opt out (a take edited by one who did is left out: its words are theirs):
  - an edited take gives an sft row of the edited text and a dpo pair, the edited text over the model's;
  - a chosen take (the choice standing for its passage) gives dpo pairs over each other take of the
    passage with the same prompt;
  - an erased take (erase to here, not redone) gives a kto row labelled false, and a dpo pair under
    what the writers kept in its place: a take of the exact same prompt, still in the story, that they
    liked, edited or chose (they erased, asked again, and kept that).
  An edit keeps the model's reasoning: the writer fixed the passage, not the plan behind it.
- A take the model wrote out of the trained format (shown with parse issues, or not shown at all: the
  bot found no passage in it and the writers asked again) gives a dpo pair, its words exactly as the
  model wrote them (rejected) under what the writers kept for the same prompt, as above (an erasure
  pair when the writers erased it, else a retry pair). An output cut short (an error, a cancel) is not
  a take the model finished, and is not used.
- Conflicts: the writers' last word wins. An erasure not redone outranks a take's ratings and choices
  (no sft row, no chosen side; kto false), and an edit replaces the take's own words as its positive (a
  thumbs up or a choice of it counts for the edited text; the model's words are only ever rejected).
- Each row carries `source`: the action, story, passage, generation(s), model, the action's time and
  the exact prompt sent to the server (`prompt`, with `raw`). The trainers read only their own keys.
- Rows are exactly deduplicated (on what they train on) and ordered by generation id and action, so the
  same database gives the same file.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import combinations

from contract import prompt
from pipeline.feedback.snapshot import Edit, Erasure, Generation, Snapshot, TakeChoice

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
class Signals:
    """What the counted members did to each take (module doc)."""

    votes: dict[int, tuple[int, int]]  # generation id -> (up, down)
    voted_at: dict[int, float]  # generation id -> its newest counted vote
    edits: dict[int, Edit]  # generation id -> the take as the writers left it
    chosen: dict[int, TakeChoice]  # passage (slot) id -> the choice standing
    erased: dict[int, Erasure]  # generation id -> its erasure
    ignored: int = 0  # votes, edits, choices and erasures by members who opted out


@dataclass(frozen=True)
class Candidate:
    gen: Generation
    up: int
    down: int
    target: str  # the assistant text: contract.prompt.render_target(reasoning, answer)
    edited: str | None = None  # the target with the writers' edit of the answer
    edit: Edit | None = None
    erasure: Erasure | None = None
    choice: TakeChoice | None = None  # the choice standing for its passage, whichever take it chose
    voted_at: float = 0.0

    @property
    def net(self) -> int:
        return self.up - self.down

    @property
    def rated(self) -> bool:
        return self.up + self.down > 0

    @property
    def positive(self) -> str | None:
        """What the writers would have this prompt answer with, from this take (the conflict rule)."""
        return None if self.erasure else (self.edited or self.target)

    def source(self, action: str, at: float, rejected: int | None = None) -> dict:
        """Where a row came from; the same keys in every row, so a file loads as one table."""
        g = self.gen
        return {
            "action": action,
            "story": g.story_id,
            "passage": g.slot,
            "generation": g.id,
            "rejected": rejected,
            "model": g.model,
            "time": at,
            "up": self.up,
            "down": self.down,
            "prompt": g.prompt,
            "raw": g.raw,
        }


@dataclass
class Report:
    """What an export wrote and, counted by reason, what it left out."""

    fmt: str
    generations: int = 0
    votes: int = 0
    ignored_votes: int = 0  # votes, edits, choices and erasures by members who opted out
    written: Counter = field(default_factory=Counter)  # kind of row -> rows
    left_out: Counter = field(default_factory=Counter)  # reason -> generations
    pairs_left_out: Counter = field(default_factory=Counter)  # reason -> pairs (dpo)
    duplicates: int = 0
    migrated_from: int | None = None
    actions: Counter = field(default_factory=Counter)  # edits, take choices, erasures counted

    @property
    def rows(self) -> int:
        return sum((+self.written).values())

    def lines(self) -> list[str]:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted((+self.written).items())) or "none"
        out = [
            f"{self.rows} {self.fmt} rows ({kinds}) from {self.generations} finished generations and "
            f"{self.votes} counted votes"
        ]
        if self.actions:
            out.append("writer actions: " + ", ".join(f"{n} {k}" for k, n in sorted(self.actions.items())))
        if self.migrated_from is not None:
            out.append(f"read from schema version {self.migrated_from}, migrated in memory (file untouched)")
        if self.ignored_votes:
            out.append(f"{self.ignored_votes} votes and actions by members who opted out were not counted")
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
    sig, outside = signals(snap), _outside(snap, filters)
    cands = candidates(snap, sig, outside, report)
    if fmt == "dpo":
        broken = broken_takes(snap, outside)
        made = _dpo(cands, filters.min_votes, report) + _kept_over(
            cands, broken, sig, filters.min_votes, report
        )
    else:
        made = {"sft": _sft, "kto": _kto}[fmt](cands, filters.min_votes, report)
    rows = _dedupe(made, report)
    report.written = Counter(_kind(r, fmt) for r in rows)  # what was written, counted once at the end
    return rows, report


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


def signals(snap: Snapshot) -> Signals:
    """The counted members' votes and actions on each take (opted-out members' are left out)."""
    votes, ignored = counted_votes(snap)
    voted_at: dict[int, float] = {}
    for r in snap.ratings:
        if r.member_id not in snap.opted_out:
            voted_at[r.generation_id] = max(voted_at.get(r.generation_id, 0.0), r.rated_at)
    edits = {e.generation_id: e for e in snap.edits if not e.editors & snap.opted_out}
    ignored += len(snap.edits) - len(edits)
    chosen: dict[int, TakeChoice] = {}
    for c in snap.choices:  # oldest first: the newest choice of a passage stands
        chosen[c.passage_id] = c
    kept = {p: c for p, c in chosen.items() if c.member_id not in snap.opted_out}
    erased = {e.generation_id: e for e in snap.erasures if e.member_id not in snap.opted_out}
    ignored += len(chosen) - len(kept) + len(snap.erasures) - len(erased)
    return Signals(votes, voted_at, edits, kept, erased, ignored)


def candidates(
    snap: Snapshot, sig: Signals, outside: Callable[[Generation], str | None], report: Report
) -> list[Candidate]:
    """The generations every format may use, with the writers' signals; the others counted by reason."""
    report.ignored_votes = sig.ignored
    report.votes = sum(up + down for up, down in sig.votes.values())
    report.actions.update(edits=len(sig.edits), **{"take choices": len(sig.chosen)}, erasures=len(sig.erased))
    report.actions = +report.actions
    out = []
    for g in snap.generations:
        up, down = sig.votes.get(g.id, (0, 0))
        edit, erasure = sig.edits.get(g.id), sig.erased.get(g.id)
        choice = sig.chosen.get(g.slot) if g.slot is not None else None
        reason = (
            outside(g)
            or _unusable(g)
            or (None if up + down or edit or erasure or choice else "not rated, edited, chosen or erased")
        )
        if reason:
            report.left_out[reason] += 1
            continue
        try:
            target = prompt.render_target(g.reasoning, g.answer)
            edited = _edited(g, edit)
        except prompt.PromptError:
            report.left_out["empty reasoning or answer"] += 1
            continue
        out.append(Candidate(g, up, down, target, edited, edit, erasure, choice, sig.voted_at.get(g.id, 0.0)))
    return out


def _outside(snap: Snapshot, filters: Filters) -> Callable[[Generation], str | None]:
    """Why a generation is outside what the export may use at all (None: it is inside)."""
    private = opted_out_matcher(snap)
    wanted = _same_model(filters.model) if filters.model else None

    def reason(g: Generation) -> str | None:
        if wanted and not wanted(g.model):
            return f"another model than {filters.model}"
        if filters.since is not None and g.created_at < filters.since:
            return "written before --since"
        if g.requested_by in snap.opted_out:
            return "asked for by a member who opted out"
        if private(g):
            return "its prompt holds text by a member who opted out"
        return None

    return reason


def _unusable(g: Generation) -> str | None:
    """Why a take's own words cannot be trained on: its output broke the trained format."""
    if g.issues:  # counted by what was wrong: stray tags, an unclosed answer, ...
        return f"output broke the reasoning/answer format ({', '.join(sorted(g.issues))})"
    if prompt.has_markup(g.answer):  # stored before the parser stripped tags from answers
        return "its answer holds reasoning/answer tags"
    return None


def broken_takes(snap: Snapshot, outside: Callable[[Generation], str | None]) -> list[Generation]:
    """What the model wrote out of the trained format, inside the export's rules: shown with parse
    issues, or not shown at all (the bot found no passage in it)."""
    shown = [g for g in snap.generations if _unusable(g)]
    return [g for g in sorted(shown + snap.no_passage, key=lambda g: g.id) if g.output and not outside(g)]


def _edited(g: Generation, edit: Edit | None) -> str | None:
    """The target with the writers' edit of the answer (None: not edited, or edited back)."""
    if edit is None or edit.text.strip() == g.answer.strip() or prompt.has_markup(edit.text):
        return None
    return prompt.render_target(g.reasoning, edit.text)


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
        if c.erasure:
            report.left_out["erased by the writers (erase to here)"] += 1
        elif c.edited and c.edit:
            if c.gen.removed:
                report.left_out["edited, then undone or reset by the writers"] += 1
            else:
                rows.append(_messages(c, c.edited, c.source("edit", c.edit.edited_at)))
        elif not c.rated:
            report.left_out["not rated (a take choice gives dpo pairs)"] += 1
        elif c.net < min_votes:
            report.left_out[f"net rating below +{min_votes}"] += 1
        elif c.gen.removed:
            report.left_out["rated up but undone or reset by the writers"] += 1
        else:
            rows.append(_messages(c, c.target, c.source("rating", c.voted_at)))
    return rows


def _messages(c: Candidate, target: str, source: dict) -> dict:
    return {
        "messages": [
            {"role": "user", "content": c.gen.user_text},
            {"role": "assistant", "content": target},
        ],
        "source": source,
    }


def _kto(cands: list[Candidate], min_votes: int, report: Report) -> list[dict]:
    rows = []
    for c in cands:
        if c.erasure:
            source = c.source("erasure", c.erasure.erased_at)
            rows.append({"prompt": c.gen.user_text, "completion": c.target, "label": False, "source": source})
            continue
        if abs(c.net) < min_votes:
            report.left_out[
                f"mixed votes (net between -{min_votes} and +{min_votes})" if c.rated else "no rating"
            ] += 1
            continue
        label = c.net > 0
        completion = (c.edited or c.target) if label else c.target  # a 👍 counts for the edited text
        source = c.source("rating", c.voted_at)
        rows.append({"prompt": c.gen.user_text, "completion": completion, "label": label, "source": source})
    return _drop_conflicts(rows, report)


def _drop_conflicts(rows: list[dict], report: Report) -> list[dict]:
    """The same prompt and completion labelled both ways says nothing: drop all its rows."""
    labels: dict[tuple[str, str], set[bool]] = defaultdict(set)
    for r in rows:
        labels[(r["prompt"], r["completion"])].add(r["label"])
    kept = []
    for r in rows:
        if len(labels[(r["prompt"], r["completion"])]) > 1:
            report.left_out["the same text rated up in one place and down in another"] += 1
        else:
            kept.append(r)
    return kept


def _dpo(cands: list[Candidate], min_votes: int, report: Report) -> list[dict]:
    rows = [row for c in cands if (row := _edit_pair(c, report))]
    slots: dict[int, list[Candidate]] = defaultdict(list)
    for c in cands:
        if c.gen.slot is None:
            report.left_out["no passage slot"] += 1
        else:
            slots[c.gen.slot].append(c)
    for slot in sorted(slots):
        versions = sorted(slots[slot], key=lambda c: c.gen.id)
        rows += _take_pairs(versions, report)
        used: set[int] = set()
        for a, b in combinations(versions, 2):
            row = _pair(a, b, min_votes, report)
            if row:
                rows.append(row)
                used |= {a.gen.id, b.gen.id}
        for c in versions:
            if c.gen.id not in used and c.rated:
                reason = (
                    "no other rated version of its passage"
                    if len(versions) == 1
                    else "no other version of its passage to pair with (one liked, the other not)"
                )
                report.left_out[reason] += 1
    return rows


def _kept(cands: list[Candidate], min_votes: int) -> dict[str, tuple[Candidate, str]]:
    """For each prompt, the first take still in the story that the writers liked, edited or chose, with
    the text they would have it answer with."""
    kept: dict[str, tuple[Candidate, str]] = {}
    for c in cands:
        if c.positive and not c.gen.removed and (_liked(c, min_votes) or _chosen(c)):
            kept.setdefault(c.gen.user_text, (c, c.positive))
    return kept


def _kept_over(
    cands: list[Candidate], broken: list[Generation], sig: Signals, min_votes: int, report: Report
) -> list[dict]:
    """Each erased take, and each take the model wrote out of format (as it wrote it), rejected under
    what the writers kept for its prompt (the module doc's rules): an erasure pair when the writers
    erased it, else a retry pair."""
    kept = _kept(cands, min_votes)
    rejected: list[tuple[Generation, str, Erasure | None, str, str]] = [
        (c.gen, c.target, c.erasure, "erased", "in its place") for c in cands if c.erasure
    ]
    rejected += [(g, g.output, sig.erased.get(g.id), "out of format", "for its prompt") for g in broken]
    rows = []
    for gen, text, erasure, what, where in rejected:
        keeper, positive = kept.get(gen.user_text, (None, ""))
        if keeper is None:
            report.pairs_left_out[f"{what}, and nothing liked, edited or chosen kept {where}"] += 1
        elif positive == text:
            report.pairs_left_out[f"{what}, and the same text kept {where}"] += 1
        else:
            at = erasure.erased_at if erasure else keeper.gen.created_at
            source = keeper.source("erasure" if erasure else "retry", at, rejected=gen.id)
            rows.append(_preference(keeper, positive, text, source))
    return rows


def _liked(c: Candidate, min_votes: int) -> bool:
    """Rated up, or edited: the writers' fix is what they like."""
    return c.net >= min_votes or c.edited is not None


def _chosen(c: Candidate) -> bool:
    return c.choice is not None and c.choice.generation_id == c.gen.id


def _edit_pair(c: Candidate, report: Report) -> dict | None:
    """The writers' edit of a take over the model's words."""
    if not c.edited or c.edit is None:
        return None
    if c.erasure:
        report.pairs_left_out["edited, then erased by the writers"] += 1
        return None
    return _preference(c, c.edited, c.target, c.source("edit", c.edit.edited_at))


def _take_pairs(versions: list[Candidate], report: Report) -> list[dict]:
    """The take the writers chose for a passage over each other take of the same prompt."""
    choice = versions[0].choice
    chosen = next((c for c in versions if choice and c.gen.id == choice.generation_id), None)
    if choice is None or chosen is None:
        return []
    if chosen.positive is None:
        report.pairs_left_out["the chosen take was erased later"] += len(versions) - 1
        return []
    rows = []
    for other in versions:
        if other is chosen:
            continue
        if other.gen.user_text != chosen.gen.user_text:
            report.pairs_left_out["takes whose prompts differ"] += 1
        elif other.target == chosen.positive:
            report.pairs_left_out["both takes have the same text"] += 1
        else:
            source = chosen.source("take", choice.chosen_at, rejected=other.gen.id)
            rows.append(_preference(chosen, chosen.positive, other.target, source))
    return rows


def _pair(a: Candidate, b: Candidate, min_votes: int, report: Report) -> dict | None:
    if not (a.rated and b.rated):
        return None
    chosen, rejected = sorted((a, b), key=lambda c: (_liked(c, min_votes), c.net), reverse=True)
    if not _liked(chosen, min_votes):
        report.pairs_left_out[f"neither version rated at least +{min_votes} or edited"] += 1
        return None
    if rejected.net > 0 or rejected.edited:
        report.pairs_left_out["both versions rated up or edited"] += 1
        return None
    if a.gen.user_text != b.gen.user_text:
        report.pairs_left_out["regenerations whose prompts differ"] += 1
        return None
    if chosen.positive is None:
        report.pairs_left_out["the liked version was erased later"] += 1
        return None
    if chosen.positive == rejected.target:
        report.pairs_left_out["both versions have the same text"] += 1
        return None
    source = chosen.source("rating", max(a.voted_at, b.voted_at), rejected=rejected.gen.id)
    return _preference(chosen, chosen.positive, rejected.target, source)


def _preference(c: Candidate, chosen: str, rejected: str, source: dict) -> dict:
    return {"prompt": c.gen.user_text, "chosen": chosen, "rejected": rejected, "source": source}


def _dedupe(rows: Iterable[dict], report: Report) -> list[dict]:
    """Rows identical in what they train on (their `source` aside) are written once."""
    seen: set[str] = set()
    out = []
    for r in rows:
        key = json.dumps({k: v for k, v in r.items() if k != "source"}, sort_keys=True, ensure_ascii=False)
        if key in seen:
            report.duplicates += 1
            continue
        seen.add(key)
        out.append(r)
    return out


def _kind(row: dict, fmt: str) -> str:
    """The kind of row `Report.written` counts a row as."""
    action = row["source"]["action"]
    if fmt == "sft":
        return "edited" if action == "edit" else "positive"
    if fmt == "dpo":
        return f"{action} pairs"  # edit, take, rating, erasure or retry
    return "desirable" if row["label"] else "undesirable"
