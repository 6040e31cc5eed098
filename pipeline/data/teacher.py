"""A teacher model writes training targets: the reasoning for book chunks (`reason`) and whole stories
for Writing Prompts (`distill`, sequence-level knowledge distillation).

What the teacher is asked, how its reply is checked, and a resumable runner. Every finished row goes
to a journal (`train.jsonl.journal`, one JSON line per work item, flushed and fsynced) keyed by a
hash of the item; a re-run skips the keys already there, so an interrupted or partly failed run is
finished by running the same command again, and nothing is written twice. The train and validation
files are written from the journal, atomically, once every item has been tried. Items that still
fail after the retries are tried again on the next run; each is appended to `train.failed.jsonl`, an
append-only log that keeps every run's failures (the reason and the reply text of each try) whatever
later runs do, and the run counts its rejections by reason for the summary it prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from contract import prompt as P
from pipeline.data.backends import ChatBackend, Fatal, Transient
from pipeline.data.gutenberg import TRAIN, VALIDATION, text_key
from pipeline.data.writing_prompts import prompt_id
from plumbing import jsonl


class BadReply(Exception):
    """A teacher reply that must not become a training row (empty, malformed, leaking, copying)."""


class InputError(ValueError):
    pass


# --- what the teacher is asked -------------------------------------------------------------------
REASON_SYSTEM = (
    "You are a perceptive fiction editor. You write the thinking a skilled novelist does at a given "
    "point of a story, just before writing the next passage."
)
REASON_TASK = """\
Below are a passage of a story (STORY SO FAR) and the passage its author wrote next (WHAT HAPPENS NEXT).

Write the thought process a writer goes through at the end of STORY SO FAR, before writing on, so that \
the thinking leads naturally to what happens next. Think step by step about:
- what each character present wants and feels at this moment,
- how they are likely to act and react, toward each other and toward the world around them,
- where the plot should move next, and the tone and pace it calls for.

Rules:
- Plan ahead as if you had not read the next passage: never mention it and never quote it.
- Plain prose in the present tense, 80 to 250 words.
- No headings, no tags, no preamble such as "Here is".

STORY SO FAR:
\"\"\"
{context}
\"\"\"

WHAT HAPPENS NEXT:
\"\"\"
{continuation}
\"\"\""""


def reason_messages(context: str, continuation: str) -> list[dict]:
    return [
        {"role": "system", "content": REASON_SYSTEM},
        {"role": "user", "content": REASON_TASK.format(context=context, continuation=continuation)},
    ]


def distill_system(length: P.Length | str | int | None) -> str:
    size = f", {P.length_phrase(length)}" if length else ""
    return (
        "You are a skilled fiction writer. The user's message is a writer's request; under "
        f"'{P.CONTEXT_HEADER}' it gives the premise of a story to be written. First think it through step "
        "by step: who the characters are, what they want, how they will act and interact with each other "
        f"and the world, and how the story should unfold. Put that thinking inside {P.REASONING_OPEN}"
        f"...{P.REASONING_CLOSE}. Then write the story itself inside {P.ANSWER_OPEN}...{P.ANSWER_CLOSE}: "
        f"vivid prose, a complete story{size}. Write nothing outside the tags."
    )


def distill_messages(premise: str, length: P.Length | str | int | None = None) -> list[dict]:
    """The teacher sees the very prompt the student will be trained on, plus a system turn on the format."""
    return [
        {"role": "system", "content": distill_system(length)},
        {"role": "user", "content": P.render_prompt(premise, length=length)},
    ]


# --- checking the reply --------------------------------------------------------------------------
_THINK = re.compile(r"(?is)<think>.*?</think>")
_WRAPPER = re.compile(r"(?is)^\s*<reasoning>(.*)</reasoning>\s*$")
_ANY_TAG = re.compile(r"(?i)</?\s*(?:reasoning|answer|think)\s*>")
_PREAMBLE = re.compile(r"(?i)^(?:sure|okay|ok|certainly|of course|here(?:'s| is| are))\b[^\n]*:[ \t]*\n+")
_LABELS = re.compile(r"(?i)\b(?:what happens next|story so far)\b")
MIN_REASONING_WORDS, MAX_REASONING_WORDS = 20, 800
COPY_NGRAM = 10
#: Our own instructions, placeholders left out: a reply that repeats a run of ECHO_NGRAM of their words
#: (or states one of their rules) echoes the request instead of reasoning about the story.
_INSTRUCTIONS = REASON_SYSTEM + "\n" + re.sub(r"\{\w+\}", " ", REASON_TASK)
ECHO_NGRAM = 5
_RULES = re.compile(
    r"(?i)\b\d+\s*(?:-|–|to)\s*\d+\s*words\b|\bpresent tense\b|\bno (?:headings|tags|preamble)\b"
    r"|\bthought process\b|\bplain prose\b|\bstep[- ]by[- ]step\b|\bnever (?:mention|quote)\b"
)
#: Talk about the text as a text (its passage, author, style, reader) rather than about the people in it.
_COMMENTARY = re.compile(
    r"(?i)\b(?:the|this|that|a)\s+(?:(?:next|previous|following|given|above)\s+)?"
    r"(?:passage|text|excerpt|extract|prose|paragraph|chapter)\b"
    r"|\b(?:the|this)\s+(?:story|scene|narrative)\s+(?:is|was|describes|depicts|portrays|presents|uses|"
    r"highlights|explores|conveys|captures|has been|tells)\b"
    r"|\bthe\s+(?:author|writer|reader)(?:'s|’s)?\b|\bliterary\b|\bimagery\b|\bwriting style\b"
    r"|\bnarrative\b|\bre-?(?:explained|written|told|phrased)\b|\bedit(?:ed|ing)\b|\bsummar(?:y|i[sz]es?)\b"
    r"|\bwriting(?: prompts?| process| technique)?\b|\bdraft\b|\breaders?\b|\bgrammar\b|\bclarity\b"
    r"|\b(?:your|my) (?:story|text|writing)\b|\bthe story (?:explores|is written|you)\b"
)
#: Dialogue lines ("…," she said): the reply writes the story on instead of thinking about it.
_DIALOGUE = re.compile(r"[\"“][^\"“”]{2,}[\"”][^.\n]{0,40}\b(?:said|asked|replied|cried|shouted|whispered)\b")
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*(?=\s|$)")
COMMENTARY_HITS = 2


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:['’][a-z]+)?", text.lower())


def copies(text: str, source: str, n: int = COPY_NGRAM) -> bool:
    """True if text repeats a run of n words of source, or is source itself."""
    a, b = _words(text), _words(source)
    if a and a == b:
        return True
    grams = {tuple(b[i : i + n]) for i in range(len(b) - n + 1)}
    return any(tuple(a[i : i + n]) in grams for i in range(len(a) - n + 1))


def _strip_think(text: str) -> str:
    text = _THINK.sub("", text)
    if re.match(r"(?is)\s*<think>", text):
        raise BadReply("the reply is an unfinished <think> block (raise --max-tokens)")
    return text.strip()


def clean_reasoning(text: str, continuation: str) -> str:
    """The teacher's reasoning, checked; BadReply says why it cannot be used."""
    text = _strip_think(text)
    if m := _WRAPPER.match(text):
        text = m.group(1).strip()
    text = _PREAMBLE.sub("", text, count=1).strip()
    if not text:
        raise BadReply("empty reply")
    if _ANY_TAG.search(text):
        raise BadReply("reasoning/answer/think tags leak into the reasoning")
    text = whole_sentences(text)
    n = len(text.split())
    if n < MIN_REASONING_WORDS:
        raise BadReply(f"too short ({n} words)")
    if n > MAX_REASONING_WORDS:
        raise BadReply(f"too long ({n} words)")
    if copies(text, continuation):
        raise BadReply("it copies the continuation word for word")
    if _LABELS.search(text):
        raise BadReply("it talks about the instructions (STORY SO FAR / WHAT HAPPENS NEXT)")
    if echo := echoes(text):
        raise BadReply(f"it echoes our instructions ({echo!r}) instead of reasoning about the story")
    if len(_DIALOGUE.findall(text)) >= 2:
        raise BadReply("it writes the story on (dialogue) instead of reasoning about it")
    if len(hits := commentary(text)) >= COMMENTARY_HITS:
        shown = ", ".join(repr(h) for h in hits[:3])
        raise BadReply(f"it comments on the prose ({shown}) instead of reasoning about the story")
    return text


def whole_sentences(text: str) -> str:
    """The reply up to its last finished sentence: a teacher cut off by --max-tokens leaves a torso."""
    ends = list(_SENTENCE_END.finditer(text))
    if not ends:
        return text if not text or text[-1] in ".!?…" else ""
    return text[: ends[-1].end()].strip()


def echoes(text: str) -> str | None:
    """The first piece of our instructions the reply repeats (a rule, or a run of words), if any."""
    if m := _RULES.search(text):
        return m.group(0)
    a, b = _words(text), _words(_INSTRUCTIONS)
    grams = {tuple(b[i : i + ECHO_NGRAM]) for i in range(len(b) - ECHO_NGRAM + 1)}
    for i in range(len(a) - ECHO_NGRAM + 1):
        if tuple(a[i : i + ECHO_NGRAM]) in grams:
            return " ".join(a[i : i + ECHO_NGRAM])
    return None


def commentary(text: str) -> list[str]:
    """The distinct phrases in which the reply talks about the text rather than the story's people."""
    return list(dict.fromkeys(m.group(0).lower() for m in _COMMENTARY.finditer(text)))


def parse_story(text: str, premise: str, min_words: int) -> tuple[str, str]:
    """(reasoning, story) from a distillation reply, checked."""
    parsed = P.parse_output(_strip_think(text))
    if parsed.issues:
        raise BadReply("malformed reply: " + ", ".join(parsed.issues))
    reasoning, story = parsed.reasoning, parsed.answer
    if _ANY_TAG.search(reasoning) or _ANY_TAG.search(story):
        raise BadReply("nested tags in the reply")
    if len(reasoning.split()) < 10:
        raise BadReply(f"reasoning too short ({len(reasoning.split())} words)")
    if len(story.split()) < min_words:
        raise BadReply(f"story too short ({len(story.split())} words, need {min_words})")
    if copies(story, premise) and len(story.split()) < len(premise.split()) + min_words:
        raise BadReply("the story only echoes the prompt")
    return reasoning, story


# --- work items ----------------------------------------------------------------------------------
@dataclass
class Job:
    key: str
    id: str
    split: str
    messages: list[dict]
    build: Callable[[str], dict]  # reply text -> training row; raises BadReply


def _split(rec: dict, where: str) -> str:
    split = rec.get("split", TRAIN)
    if split not in (TRAIN, VALIDATION):
        raise InputError(f"{where}: split is {split!r}; use {TRAIN!r} or {VALIDATION!r}")
    return split


def reason_jobs(records: Iterable[dict], source: str = "input") -> list[Job]:
    """One job per chunk of chunks.jsonl (context + continuation), duplicates dropped."""
    jobs: dict[str, Job] = {}
    for i, rec in enumerate(records, 1):
        context, continuation = rec.get("context"), rec.get("continuation")
        if not isinstance(context, str) or not isinstance(continuation, str):
            raise InputError(
                f"{source} record {i} lacks context/continuation: give chunks from `data gutenberg`"
            )
        key = rec.get("key") or text_key(context, continuation)

        def build(reply: str, context=context, continuation=continuation) -> dict:
            return P.training_row(context, clean_reasoning(reply, continuation), continuation)

        jobs.setdefault(
            key,
            Job(
                key,
                str(rec.get("id", key)),
                _split(rec, f"{source} record {i}"),
                reason_messages(context, continuation),
                build,
            ),
        )
    return list(jobs.values())


def distill_jobs(
    records: Iterable[dict], length: str | int | None = None, min_words: int = 50, source: str = "input"
) -> list[Job]:
    """One job per distinct prompt of pairs.jsonl: the prompt is the premise the story grows from, so
    the student's user text is the writer prompt with the premise as its context."""
    jobs: dict[str, Job] = {}
    for i, rec in enumerate(records, 1):
        premise = rec.get("prompt")
        if not isinstance(premise, str) or not premise.strip():
            raise InputError(f"{source} record {i} has no prompt: give pairs from `data writing-prompts`")
        key = rec.get("prompt_id") or prompt_id(premise)
        if length:
            key = f"{key}:{length}"

        def build(reply: str, premise=premise) -> dict:
            reasoning, story = parse_story(reply, premise, min_words)
            return P.training_row(premise, reasoning, story, length=length)

        jobs.setdefault(
            key,
            Job(
                key,
                str(rec.get("id", key)),
                _split(rec, f"{source} record {i}"),
                distill_messages(premise, length),
                build,
            ),
        )
    return list(jobs.values())


# --- outputs and journal -------------------------------------------------------------------------
def val_path_for(output: Path) -> Path:
    """train.jsonl -> val.jsonl; other names get .val: rows.jsonl -> rows.val.jsonl."""
    if "train" in output.name:
        i = output.name.rfind("train")
        return output.with_name(output.name[:i] + "val" + output.name[i + 5 :])
    return output.with_name(f"{output.stem}.val{output.suffix or '.jsonl'}")


def journal_path_for(output: Path) -> Path:
    return output.with_name(output.name + ".journal")


def failed_path_for(output: Path) -> Path:
    return output.with_name(f"{output.stem}.failed.jsonl")


class Journal:
    """Finished rows, one JSON line each, appended and fsynced as they come (the file and its folder are
    made on the first row: a run that finishes nothing leaves neither)."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, dict] = {}
        if path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):  # a line cut by a crash: drop it, its item is redone
            with open(self.path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
        for _, entry in jsonl.iter_objects(self.path, on_bad=lambda reason, n: None):  # redone too
            with contextlib.suppress(KeyError, TypeError):
                self.entries[entry["key"]] = entry

    def add(self, entry: dict) -> None:
        jsonl.append(self.path, [entry])
        self.entries[entry["key"]] = entry


# --- the runner ----------------------------------------------------------------------------------
@dataclass
class RunResult:
    total: int = 0
    already_done: int = 0
    done: int = 0
    failed: list[dict] = field(default_factory=list)
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    written: dict[str, int] = field(default_factory=dict)  # path -> rows
    reasons: Counter = field(default_factory=Counter)  # why tries failed, this run (numbers left out)
    logged: list[dict] = field(default_factory=list)  # items with failed tries, for the failure log

    @property
    def finished(self) -> int:
        return self.already_done + self.done


@dataclass
class RunOptions:
    concurrency: int = 4
    retries: int = 3  # tries after the first
    backoff: float = 2.0  # seconds before the first retry, doubling each time (with jitter)
    max_backoff: float = 60.0


async def run_jobs(
    jobs: list[Job],
    backend: ChatBackend,
    output: Path,
    val_output: Path | None = None,
    opts: RunOptions | None = None,
    on_progress: Callable[[RunResult], None] | None = None,
) -> RunResult:
    """Send the jobs to the teacher, journal each good row, then write the train/val files.

    Raises Fatal (nothing more can succeed: bad model name, bad key, server gone); the journal keeps
    what was finished either way.
    """
    opts = opts or RunOptions()
    val_output = val_output or val_path_for(output)
    journal = Journal(journal_path_for(output))
    result = RunResult(total=len(jobs))
    pending = [j for j in jobs if j.key not in journal.entries]
    result.already_done = len(jobs) - len(pending)
    queue = iter(pending)

    async def worker() -> None:
        for job in queue:  # one shared iterator: each job goes to exactly one worker
            await _process(job, backend, journal, result, opts)
            if on_progress:
                on_progress(result)

    try:
        async with asyncio.TaskGroup() as tg:
            for _ in range(max(1, min(opts.concurrency, len(pending)))):
                tg.create_task(worker())
    except* Fatal as eg:
        first = eg.exceptions[0]
        raise first from first.__cause__  # its own cause (the server's error), not the group carrying it
    _write_outputs(jobs, journal, output, val_output, result)
    return result


def reason_kind(error: str) -> str:
    """A failure's reason without its figures, to count alike reasons together."""
    return re.sub(r"\s*\([^)]*\)", "", error).strip()


async def _process(
    job: Job, backend: ChatBackend, journal: Journal, result: RunResult, opts: RunOptions
) -> None:
    error, unreachable = "", True
    tries: list[dict] = []
    for attempt in range(opts.retries + 1):
        delay, reply = None, None
        try:
            reply = await backend.complete(job.messages)
            result.prompt_tokens += reply.prompt_tokens
            result.completion_tokens += reply.completion_tokens
            row = job.build(reply.text)
        except Transient as e:
            error, unreachable, delay = str(e), unreachable and e.unreachable, e.retry_after
        except BadReply as e:
            error, unreachable = f"unusable reply: {e}", False
        except P.PromptError as e:  # the input itself cannot become a row: retrying will not help
            error, unreachable = f"cannot build the row: {e}", False
            break
        else:
            journal.add({"key": job.key, "id": job.id, "split": job.split, "row": row})
            result.done += 1
            if tries:  # the rejected tries before this one are kept in the failure log too
                result.logged.append(
                    {
                        "key": job.key,
                        "id": job.id,
                        "split": job.split,
                        "status": "recovered",
                        "attempts": len(tries) + 1,
                        "tries": tries,
                    }
                )
            return
        tries.append({"reason": error, "reply": reply.text if reply is not None else None})
        result.reasons[reason_kind(error)] += 1
        if attempt < opts.retries:
            result.retries += 1
            wait = delay if delay is not None else opts.backoff * 2**attempt * (0.5 + random.random())
            await asyncio.sleep(min(wait, opts.max_backoff))
    if unreachable:
        raise Fatal(f"{error}: is the teacher server running? (finished rows are kept; re-run to resume)")
    result.failed.append(
        {
            "key": job.key,
            "id": job.id,
            "split": job.split,
            "status": "failed",
            "error": error,
            "attempts": len(tries),
            "tries": tries,
        }
    )
    result.logged.append(result.failed[-1])


def _write_outputs(
    jobs: list[Job], journal: Journal, output: Path, val_output: Path, result: RunResult
) -> None:
    rows: dict[str, list[dict]] = {TRAIN: [], VALIDATION: []}
    for job in jobs:  # input order, whatever order the teacher finished in
        if entry := journal.entries.get(job.key):
            rows[job.split].append(entry["row"])
    result.written[str(output)] = jsonl.write(output, rows[TRAIN])
    if rows[VALIDATION]:
        result.written[str(val_output)] = jsonl.write(val_output, rows[VALIDATION])
    if result.logged:  # appended, never rewritten: the history of every run's failures stays
        run = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        jsonl.append(failed_path_for(output), ({"run": run, **entry} for entry in result.logged))
