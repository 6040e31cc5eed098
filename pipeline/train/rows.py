"""Training rows: read, check, fit to the window and tokenize them with the base's chat template.

An SFT row is what `contract.prompt.training_row` makes: `{"messages": [user, assistant]}` (an optional
system turn first). The prompt is rendered by the base's pinned chat template with its generation prompt
(`contract.chat_template`: what serving sends) and tokenized on its own, then the reply after it, closed
as the template closes an assistant turn: exactly the tokens a served model sees before it writes, so
training and serving agree even where a tokenizer would merge across the boundary, and for templates
whose generation prompt differs from a finished turn (DeepSeek-R1's closed think block). Prompt tokens
get label -100.

Rows that cannot train are skipped and counted by reason, never fatal one by one. A row too long for the
window loses the oldest part of its story context (re-rendered through the writer prompt, so the header
survives); the target is never cut, and a row whose target alone does not fit is skipped.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from contract import chat_template, prompt
from contract import target as targets
from contract.target import Target
from pipeline.train.options import TrainError
from plumbing import jsonl


class RowsError(TrainError):
    """A data file that cannot train at all (missing, unreadable, no usable row)."""


class SkipRow(ValueError):
    """One row that cannot train; the message is the reason it is counted under."""


@dataclass
class RowStats:
    """What happened to the rows of one file."""

    path: str
    total: int = 0
    kept: int = 0
    cut: int = 0  # kept after dropping the oldest part of the context
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, int] = field(default_factory=dict)  # reason -> first line number

    def skip(self, reason: str, line: int) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, line)

    def summary(self) -> str:
        text = f"{self.path}: {self.kept} of {self.total} rows kept"
        if self.cut:
            text += f", {self.cut} with the oldest context cut to fit"
        for reason, n in self.skipped.most_common():
            text += f"\n  skipped {n}: {reason} (first at line {self.examples[reason]})"
        return text

    def as_dict(self) -> dict:
        return {"total": self.total, "kept": self.kept, "cut": self.cut, "skipped": dict(self.skipped)}


def read_jsonl(path: str | Path, stats: RowStats) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each JSON object line; blank lines are ignored, bad ones counted."""

    def bad(reason: str, n: int) -> None:
        stats.total += 1
        stats.skip(reason, n)

    try:
        for n, obj in jsonl.iter_objects(
            path, "the JSONL file the data step (or feedback export) wrote", bad
        ):
            stats.total += 1
            yield n, obj
    except jsonl.JsonlError as e:
        raise RowsError(str(e)) from e


def require_rows(stats: RowStats, what: str) -> None:
    if stats.kept == 0:
        detail = "" if not stats.total else "\n" + stats.summary()
        raise RowsError(f"no usable {what} rows in {stats.path}{detail}")


def cut_context(tokenizer, context: str, drop_tokens: int) -> str:
    """The context without (at least) its first drop_tokens tokens, starting at a word boundary."""
    offsets = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    if drop_tokens >= len(offsets):
        return ""
    start = offsets[drop_tokens][0]
    space = re.search(r"\s", context[start:])  # begin at the next whole word
    return context[start + space.end() :].lstrip() if space else ""


# ---- Rendering through the chat template -----------------------------------------------------------


def template_of(tokenizer) -> chat_template.ChatTemplate:
    """The pinned chat template `base.load_tokenizer` gave the tokenizer (its record rides along)."""
    found = chat_template.of_tokenizer(tokenizer)
    if found is None:
        raise TrainError(
            "the tokenizer has no chat template: load it with pipeline.train.base.load_tokenizer"
        )
    return found


def _render(tokenizer, messages: list[dict]) -> str:
    """The prompt for these turns, ready for the reply: what serving sends (BOS written by the template)."""
    return template_of(tokenizer).render(messages, add_generation_prompt=True)


def _ids(tokenizer, text: str) -> list[int]:
    # The chat template writes any BOS itself, so the tokenizer must not add another.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    cut: bool


def encode_turns(tokenizer, head: list[dict], reply: str) -> tuple[list[int], list[int]]:
    """Token ids of the prompt (head turns + generation prompt, as served) and of the reply after it,
    closed as the template closes an assistant turn (`<|im_end|>\n`, `<｜end▁of▁sentence｜>`)."""
    chat = template_of(tokenizer)
    return _ids(tokenizer, _render(tokenizer, head)), _ids(tokenizer, reply + chat.reply_end)


def fit_head(tokenizer, head: list[dict], reply_tokens: int, max_length: int) -> tuple[list[dict], bool]:
    """The head turns with the user's story context cut from the left until prompt + reply fit."""
    budget = max_length - reply_tokens
    prompt_ids = _ids(tokenizer, _render(tokenizer, head))
    if len(prompt_ids) <= budget:
        return head, False
    parts = prompt.split_prompt(head[-1]["content"])
    if parts is None:
        raise SkipRow("too long for --max-length and not a writer prompt, so its context cannot be cut")
    context, guidance, words = parts
    for attempt in range(8):  # token counts shift a little at the new edge; drop a margin more each try
        excess = len(prompt_ids) - budget
        context = cut_context(tokenizer, context, excess + 2 * attempt)
        if not context.strip():
            break
        user = prompt.render_prompt(context, guidance, words)
        head = [*head[:-1], {"role": "user", "content": user}]
        prompt_ids = _ids(tokenizer, _render(tokenizer, head))
        if len(prompt_ids) <= budget:
            return head, True
    raise SkipRow("the target (with the prompt's header) alone is longer than --max-length")


def _sft_turns(obj: dict, target: Target = targets.DEFAULT) -> tuple[list[dict], str]:
    """(head turns, assistant reply in the target's shape) of an SFT row, or SkipRow saying what is wrong."""
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise SkipRow('no "messages" list')
    if not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
        raise SkipRow('a message is not {"role", "content": text}')
    roles = [m.get("role") for m in messages]
    if roles not in (["user", "assistant"], ["system", "user", "assistant"]):
        raise SkipRow("roles are not [system,] user, assistant")
    if not messages[-2]["content"].strip():
        raise SkipRow("empty prompt")
    try:
        reply = target.reply(messages[-1]["content"])
    except targets.TargetError as e:
        raise SkipRow(str(e)) from e
    head = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]]
    return head, reply


def defused(tokenizer, head: list[dict], *replies: str) -> tuple[list[dict], list[str]]:
    """The turns and replies with control tokens defused as at serving (`prompt.defuse_control`), and
    the base tokenizer's own added special tokens too: no row text can open or close a turn."""
    specials = prompt.special_tokens_of(tokenizer)
    head = [{**m, "content": prompt.defuse_control(m["content"], specials)} for m in head]
    return head, [prompt.defuse_control(r, specials) for r in replies]


def encode_sft(tokenizer, obj: dict, max_length: int, target: Target = targets.DEFAULT) -> Encoded:
    """One SFT row as input_ids and labels (-100 on the prompt), fitted to max_length tokens; `text`
    rows are plain text with every token labelled (`encode_text`)."""
    if not target.chat:
        return encode_text(tokenizer, obj, max_length)
    head, (reply,) = defused(tokenizer, *_sft_turns(obj, target))
    _, reply_ids = encode_turns(tokenizer, head, reply)
    head, cut = fit_head(tokenizer, head, len(reply_ids), max_length)
    prompt_ids, reply_ids = encode_turns(tokenizer, head, reply)
    return Encoded(prompt_ids + reply_ids, [-100] * len(prompt_ids) + reply_ids, cut)


def encode_text(tokenizer, obj: dict, max_length: int) -> Encoded:
    """A `text` row: the window's plain text (`contract.target.plain_text`), control tokens defused,
    with the tokenizer's own BOS (if it adds one) and EOS after it, as a document ends; too long, it
    loses its oldest part, as a context does. Every token is trained on."""
    try:
        text = targets.plain_text(obj)
    except targets.TargetError as e:
        raise SkipRow(str(e)) from e
    text = prompt.defuse_control(text, prompt.special_tokens_of(tokenizer))
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids, cut = tokenizer(text)["input_ids"] + eos, False
    for attempt in range(8):  # token counts shift a little at the new edge; drop a margin more each try
        if len(ids) <= max_length:
            return Encoded(ids, list(ids), cut)
        text, cut = cut_context(tokenizer, text, len(ids) - max_length + 2 * attempt), True
        ids = tokenizer(text)["input_ids"] + eos if text.strip() else []
    raise SkipRow("a window that cannot be cut to --max-length")


def load_sft(
    path: str | Path, tokenizer, max_length: int, target: Target = targets.DEFAULT, split: str = "train"
) -> tuple[list[dict], RowStats]:
    """Encoded SFT examples of a JSONL file in the target's shape and what happened to its rows. The
    data step's windows carry their book's split: a `text` run takes those of `split` only, so one
    chunks file serves as --data and --eval-data and no held-out book is trained on."""
    stats = RowStats(str(path))
    examples = []
    for n, obj in read_jsonl(path, stats):
        try:
            if not target.chat and obj.get("split", split) != split:
                raise SkipRow(f"a window of the {obj['split']} split (this file is read for {split})")
            enc = encode_sft(tokenizer, obj, max_length, target)
        except SkipRow as e:
            stats.skip(str(e), n)
            continue
        examples.append({"input_ids": enc.input_ids, "labels": enc.labels})
        stats.kept += 1
        stats.cut += enc.cut
    require_rows(stats, "SFT" if target.chat else "text")
    return examples, stats


# ---- Preference rows (TRL's DPO and KTO formats) --------------------------------------------------------

PREFERENCE_FIELDS = {"dpo": ("prompt", "chosen", "rejected"), "kto": ("prompt", "completion", "label")}


def _as_head(value) -> list[dict]:
    """A prompt as chat turns: a plain string is the user's writer prompt; a list is taken as is."""
    if isinstance(value, str):
        if not value.strip():
            raise SkipRow("empty prompt")
        return [{"role": "user", "content": value}]
    if (
        isinstance(value, list)
        and value
        and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in value)
        and value[-1].get("role") == "user"
    ):
        return [{"role": m.get("role"), "content": m["content"]} for m in value]
    raise SkipRow("prompt is neither text nor a list of messages ending with the user's")


def _as_reply(value, name: str) -> str:
    """A reply as text: a plain string, or a conversational list holding one assistant message."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        if value[0].get("role") != "assistant":
            raise SkipRow(f"{name} is a message but not the assistant's")
        value = value[0].get("content")
    if not isinstance(value, str):
        raise SkipRow(f"{name} is neither text nor one assistant message")
    if not prompt.parse_output(value).answer:
        raise SkipRow(f"empty {name}")
    return value


@functools.lru_cache(maxsize=16)
def _prompt_is_prefix(chat: chat_template.ChatTemplate) -> bool:
    """Whether a finished assistant turn starts with the generation prompt, as TRL's conversational
    rows need (DeepSeek-R1's closed think block is in the prompt alone, not in a finished turn)."""
    head = [{"role": "user", "content": "x"}]
    return chat.render([*head, {"role": "assistant", "content": "y"}]).startswith(chat.render(head, True))


def encode_preference(tokenizer, obj: dict, method: str, max_length: int) -> tuple[dict, bool]:
    """A preference row in TRL's conversational form, its context cut so every reply fits max_length;
    as text (the served prompt, each reply closed as the template closes a turn) where TRL's rendering
    of the conversation would not begin with the prompt the model is served."""
    missing = [k for k in PREFERENCE_FIELDS[method] if k not in obj]
    if missing:
        raise SkipRow(f"missing field {', '.join(missing)}")
    names = [k for k in PREFERENCE_FIELDS[method] if k not in ("prompt", "label")]
    head, texts = defused(tokenizer, _as_head(obj["prompt"]), *(_as_reply(obj[k], k) for k in names))
    replies = dict(zip(names, texts, strict=True))
    longest = max(len(encode_turns(tokenizer, head, r)[1]) for r in replies.values())
    head, cut = fit_head(tokenizer, head, longest, max_length)
    chat = template_of(tokenizer)
    row: dict[str, object] = {}
    if _prompt_is_prefix(chat):
        row["prompt"] = head
        row |= {k: [{"role": "assistant", "content": r}] for k, r in replies.items()}
    else:  # the tokenizer writes BOS itself on text rows, and TRL adds EOS where a reply lacks it
        row["prompt"] = chat.without_bos(_render(tokenizer, head))
        row |= {k: r + chat.reply_end.rstrip() for k, r in replies.items()}
    if method == "kto":
        if not isinstance(obj["label"], bool):
            raise SkipRow("label is not true or false")
        row["label"] = obj["label"]
    return row, cut


def unpaired(obj: dict) -> tuple[dict, ...]:
    """A KTO run reads DPO rows too, as TRL's `unpair_preference_dataset` does: the chosen reply
    desirable, the rejected one not. So one file can hold every writer action (ratings and erasures
    as kto rows, edits and take choices as pairs)."""
    if "label" in obj or not {"chosen", "rejected"} <= obj.keys():
        return (obj,)
    rest = {k: v for k, v in obj.items() if k not in ("chosen", "rejected")}
    return (
        rest | {"completion": obj["chosen"], "label": True},
        rest | {"completion": obj["rejected"], "label": False},
    )


def load_preference(path: str | Path, tokenizer, method: str, max_length: int) -> tuple[list[dict], RowStats]:
    stats = RowStats(str(path))
    rows = []
    for n, obj in read_jsonl(path, stats):
        ones = unpaired(obj) if method == "kto" else (obj,)
        stats.total += len(ones) - 1  # a pair counts as the two rows it gives
        for one in ones:
            try:
                row, cut = encode_preference(tokenizer, one, method, max_length)
            except SkipRow as e:
                stats.skip(str(e), n)
                continue
            rows.append(row)
            stats.kept += 1
            stats.cut += cut
    require_rows(stats, method.upper())
    if method == "kto" and len({r["label"] for r in rows}) < 2:
        raise RowsError(f"{path}: KTO needs both desirable (true) and undesirable (false) rows")
    return rows, stats
