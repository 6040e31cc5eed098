"""Rolling summaries: the summarising prompt and the rules for which summary fits a story. Pure.

When a story's passages no longer fit the model's window, the oldest ones are told in brief by the model
(:mod:`bot.core.summarizer` asks for it in the background) and that summary takes their place in the
context. A summary is *rolling*: the next one retells the previous summary plus the passages after it.
It stays valid while the passages it covers are the story's, unchanged (:func:`digest`); once one is
undone it is no longer used, an older valid summary (or none) stands in, and a new one is written the
next time the story overflows.

Everything the summariser says to the model is in this module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from contract import prompt as writer_prompt
from contract.serving import GenerateRequest, ServingError, request_for

from .story import Passage, Status, Summary

#: How long a summary is asked to be; the context builder keeps it within its share of the window.
SUMMARY_WORDS = 200

INSTRUCTIONS = (
    "Summarise the story below for a writer who will continue it. Keep every named character, place and "
    "object, what each character wants, and the events in the order they happened; leave out style and "
    "dialogue. Write plain past-tense prose in one paragraph of at most {words} words, with no title, no "
    "list and no comment of your own."
)
PREVIOUS_LEAD = "The story so far, in brief:"
PASSAGES_LEAD = "The story:"
NEXT_LEAD = "What happened next:"


class SummaryUnavailable(ValueError):
    """A summary that cannot be asked of this model; the message says what to set."""


def summary_prompt(previous: str | None, passages: Sequence[str], words: int = SUMMARY_WORDS) -> str:
    """The summarising instructions with the previous summary and the passages to fold into it."""
    story = "\n\n".join(writer_prompt.neutralize(t.strip()) for t in passages)
    parts = [INSTRUCTIONS.format(words=words)]
    if previous:
        parts += [f"{PREVIOUS_LEAD}\n{writer_prompt.neutralize(previous.strip())}", f"{NEXT_LEAD}\n{story}"]
    else:
        parts.append(f"{PASSAGES_LEAD}\n{story}")
    return "\n\n".join(parts) + "\n"


def summary_request(text: str, template: str, system: str = "") -> GenerateRequest:
    """The generate request for a summary prompt, by contract.serving's one builder, given the model's
    template and SYSTEM; a model it refuses (a writer prompt not of ours) cannot summarise."""
    try:
        return request_for(template, text, model_system=system)
    except ServingError as exc:
        raise SummaryUnavailable(
            "this model's TEMPLATE holds a writer prompt that is not one of ours, so it cannot be asked "
            "for a summary: set summary_model (STORY_BOT_SUMMARY_MODEL) to a plain instruct model"
        ) from exc


def clean_summary(output: str) -> str:
    """The summary in a model's output: the answer if it wrote tags (a writer model), one paragraph."""
    parsed = writer_prompt.parse_output(output)
    text = parsed.answer or ("" if parsed.reasoning else output)
    text = writer_prompt.defuse_control(" ".join(text.split()))  # it is fed back into every context
    for lead in (PREVIOUS_LEAD, "Summary:"):
        if text.startswith(lead):
            text = text[len(lead) :].lstrip()
    return text


def digest(passages: Iterable[Passage]) -> str:
    """A fingerprint of passages (ids and texts, in story order): a change to any of them changes it."""
    h = hashlib.sha256()
    for _, pid, text in sorted((p.position, p.id, p.text) for p in passages):
        h.update(f"{pid}:{len(text)}:{text}".encode())
    return h.hexdigest()


def current(summaries: Iterable[Summary], passages: Sequence[Passage]) -> Summary | None:
    """The newest finished summary whose covered passages are all still in the story, unchanged."""
    return next(iter(valid(summaries, passages, 1)), None)


def valid(summaries: Iterable[Summary], passages: Sequence[Passage], limit: int = 2) -> list[Summary]:
    """The newest `limit` finished summaries (newest first) whose covered passages are all still in the
    story, unchanged. The context builder takes the newer one with the next step (see
    :func:`bot.core.context.build_story_context`)."""
    present = {p.id: p for p in passages}
    ids = present.keys()
    digests: dict[tuple[int, ...], str] = {}  # summaries covering the same passages share one digest
    out: list[Summary] = []
    for s in summaries:
        if s.status != Status.DONE or not (s.text or "").strip() or not ids >= set(s.passage_ids):
            continue
        if any(o.passage_ids == s.passage_ids for o in out):
            continue  # a newer version of the same summary (a writer's edit) stands in for it
        if s.passage_ids not in digests:
            digests[s.passage_ids] = digest(present[i] for i in s.passage_ids)
        if digests[s.passage_ids] == s.digest:
            out.append(s)
            if len(out) >= limit:
                break
    return out
