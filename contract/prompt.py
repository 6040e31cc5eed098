"""The writer prompt: the contract between training data, Modelfiles and the bot.

Every byte here is what a model is trained on and served with. Training rows, Modelfile TEMPLATEs, the
bot and the feedback export all call this module; none of them spells the prompt out again. Changing a
byte here means retraining. Importing this module is cheap (standard library only).

The base prompt is byte for byte the one the published CRA-v1 models were trained on (note the U+2019
apostrophe and the trailing newline after the context). Optional sections (guidance, length) come after
the context, where a standing direction weighs most, and are absent from the base prompt.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

SYSTEM_LINE = "### System: You are a writer\u2019s assistant."
TASK_LINE = (
    "### Task: Understand how the story flows, what motivations the characters have and how they will "
    "interact with each other and the world as a step by step thought process before continuing the story."
)
CONTEXT_HEADER = "### Context:"
GUIDANCE_HEADER = "### Guidance:"
LENGTH_HEADER = "### Length:"

#: Everything before the context; a Modelfile TEMPLATE puts the user's text right after it.
PROMPT_PREFIX = f"{SYSTEM_LINE}\n\n{TASK_LINE}\n\n{CONTEXT_HEADER}\n"
#: What follows the context in the base prompt.
PROMPT_SUFFIX = "\n"

#: A context longer than this is refused: no model we serve has a window that holds it, so it is
#: a caller's bug (the bot and the data step fit the context to the window before rendering).
MAX_CONTEXT_CHARS = 400_000
MAX_GUIDANCE_CHARS = 1_000

REASONING_OPEN, REASONING_CLOSE = "<reasoning>", "</reasoning>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"


class PromptError(ValueError):
    """Input that cannot become a prompt or a training target; the message says what to change."""


class Length(StrEnum):
    """How long a continuation the writer asks for."""

    SHORT = "short"
    MEDIUM = "medium"
    LONG = "long"

    @property
    def words(self) -> int:
        return _LENGTH_WORDS[self]


_LENGTH_WORDS = {Length.SHORT: 100, Length.MEDIUM: 250, Length.LONG: 500}

# Section headers and output tags that user text must not be able to forge. A header at a line start
# loses one '#'; a tag gets square brackets. Both stay readable and the change is deterministic, so
# training and serving neutralise the same text the same way.
_HEADER_RE = re.compile(r"(?im)^([ \t]*)###([ \t]*(?:system|task|context|guidance|length)[ \t]*:)")
_TAG_RE = re.compile(r"(?i)<(/?)(reasoning|answer|think|response)>")

#: Written after the first character of a control token found in text. U+2060 WORD JOINER is invisible
#: (the text reads the same), opens no line break (unlike U+200B, so message splitting and wrapping are
#: unchanged), and is an ordinary character to every tokenizer we serve: llama.cpp (and so Ollama) and
#: Hugging Face tokenizers take a special token only where its exact text stands in the prompt
#: (llama.cpp's `tokenizer_st_partition` searches the raw text for each special token's bytes), and a
#: byte-level BPE does not normalise the joiner away. `<\u2060|im_end|>` is therefore plain text.
DEFUSE_MARK = "\u2060"
#: Control tokens of the `<|name|>` shape (ChatML, Llama 3, Phi-3 and many more; every family's are
#: tested to be defused, `tests/test_chat_template.py`).
CONTROL_TOKENS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|python_tag|>",
)
# Any `<|name|>`: besides the tokens above, Qwen's and Llama 3's other added tokens (<|fim_prefix|>,
# <|reserved_special_token_3|>, ...) all have this shape; then the other families' own.
_CONTROL_RE = re.compile(
    r"<\|[^\s<>|]{1,64}\|>"
    # DeepSeek's full-width bars, Gemma's turns, SentencePiece BOS/EOS, Mistral's bracketed tokens
    r"|<\uff5c[^\s<>\uff5c]{1,64}\uff5c>|<(?:start|end)_of_turn>|</?s>|<(?:bos|eos)>"
    r"|\[/?(?:INST|SYSTEM_PROMPT|AVAILABLE_TOOLS|TOOL_CALLS|TOOL_RESULTS|THINK)\]"
)
_OUR_TAGS = frozenset(f"<{c}{t}>" for c in ("", "/") for t in ("reasoning", "answer", "think", "response"))


def _break(m: re.Match) -> str:
    return m.group(0)[0] + DEFUSE_MARK + m.group(0)[1:]


def defuse_control(text: str, special_tokens: Iterable[str] = ()) -> str:
    """Text with every chat-template control token made plain text (see DEFUSE_MARK), deterministically.

    Defused are all `<|...|>` tokens (every supported format's) and, where a tokenizer is at hand (the
    training rows), its own added special tokens given as `special_tokens` (SmolLM2's `<filename>`, say).
    Applying it again changes nothing, so text defused once (stored member text) and defused again in
    the prompt gives the same bytes at training and at serving.
    """
    text = _CONTROL_RE.sub(_break, text)
    extra = sorted({t for t in special_tokens if len(t) > 1 and t in text and t not in _OUR_TAGS}, key=len)
    if extra:
        text = re.compile("|".join(map(re.escape, reversed(extra)))).sub(_break, text)
    return text


def special_tokens_of(tokenizer) -> list[str]:
    """A Hugging Face tokenizer's added special tokens (the ones it reads as control tokens)."""
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    return [t.content for t in decoder.values() if getattr(t, "special", False)]


def neutralize(text: str, special_tokens: Iterable[str] = ()) -> str:
    """Defuse prompt section headers, output tags and control tokens inside user-supplied text."""
    text = _HEADER_RE.sub(r"\1##\2", text)
    text = _TAG_RE.sub(lambda m: f"[{m.group(1)}{m.group(2)}]", text)
    return defuse_control(text, special_tokens)


def clean_context(context: str) -> str:
    """The context as it stands in the prompt: line ends normalised, forged markers defused, stripped."""
    context = neutralize(context.replace("\r\n", "\n").replace("\r", "\n")).strip()
    if not context:
        raise PromptError("the context is empty: give the story so far (at least one sentence)")
    if len(context) > MAX_CONTEXT_CHARS:
        raise PromptError(
            f"the context has {len(context):,} characters, over the limit of {MAX_CONTEXT_CHARS:,}: "
            "keep only the newest part of the story that fits the model's window"
        )
    return context


def _clean_guidance(guidance: str | None) -> str | None:
    if guidance is None:
        return None
    guidance = " ".join(neutralize(guidance).split())  # one line: a direction is a sentence or two
    if not guidance:
        return None
    if len(guidance) > MAX_GUIDANCE_CHARS:
        raise PromptError(
            f"the direction has {len(guidance):,} characters, over the limit of {MAX_GUIDANCE_CHARS:,}: "
            "say in a sentence or two where the story should go"
        )
    return guidance


def length_words(length: Length | str | int | None) -> int | None:
    if length is None:
        return None
    if isinstance(length, int) and not isinstance(length, bool):
        if length <= 0:
            raise PromptError(f"the length must be a positive number of words, not {length}")
        return length
    if isinstance(length, str) and length.strip().isdigit():  # a number of words, as the bot stores it
        return length_words(int(length))
    try:
        return Length(str(length).lower()).words
    except ValueError as exc:
        choices = ", ".join(m.value for m in Length)
        raise PromptError(f"unknown length {length!r}: use one of {choices} or a number of words") from exc


def length_phrase(length: Length | str | int) -> str:
    return f"about {length_words(length)} words"


def render_prompt(context: str, guidance: str | None = None, length: Length | str | int | None = None) -> str:
    """The user text of the writer prompt for a story context.

    Without guidance and length this is exactly the reference prompt. The context is stripped, its
    line ends normalised and forged headers or tags neutralised (see :func:`neutralize`).
    """
    text = PROMPT_PREFIX + clean_context(context) + PROMPT_SUFFIX
    guidance = _clean_guidance(guidance)
    if guidance:
        text += f"\n{GUIDANCE_HEADER} {guidance}\n"
    words = length_words(length)
    if words:
        text += f"\n{LENGTH_HEADER} {length_phrase(words)}\n"
    return text


_SECTIONS_RE = re.compile(
    r"(?s)(?P<context>.*?)"
    + re.escape(PROMPT_SUFFIX)
    + rf"(?:\n{re.escape(GUIDANCE_HEADER)} (?P<guidance>[^\n]*)\n)?"
    + rf"(?:\n{re.escape(LENGTH_HEADER)} about (?P<words>\d+) words\n)?"
)


def split_prompt(text: str) -> tuple[str, str | None, int | None] | None:
    """(context, guidance, length in words) of a rendered writer prompt, or None for any other text.

    The parts are trusted only if rendering them again gives the same bytes, so this never misreads.
    """
    if not text.startswith(PROMPT_PREFIX):
        return None
    m = _SECTIONS_RE.fullmatch(text, len(PROMPT_PREFIX))
    if not m:
        return None
    parts = (m["context"], m["guidance"], int(m["words"]) if m["words"] else None)
    try:
        return parts if render_prompt(*parts) == text else None
    except PromptError:
        return None


def render_target(reasoning: str, answer: str) -> str:
    """The assistant text a model is trained to write: reasoning, then the continuation."""
    reasoning, answer = neutralize(reasoning).strip(), neutralize(answer).strip()
    if not answer:
        raise PromptError("the answer (the continuation) is empty: a training target needs story text")
    if not reasoning:
        raise PromptError("the reasoning is empty: a training target needs the thought process first")
    return f"{REASONING_OPEN}{reasoning}{REASONING_CLOSE}{ANSWER_OPEN}{answer}{ANSWER_CLOSE}"


def training_row(
    context: str,
    reasoning: str,
    answer: str,
    guidance: str | None = None,
    length: Length | str | int | None = None,
) -> dict:
    """One training row in the conversational format TRL and `datasets` take."""
    return {
        "messages": [
            {"role": "user", "content": render_prompt(context, guidance, length)},
            {"role": "assistant", "content": render_target(reasoning, answer)},
        ]
    }


class Issue(StrEnum):
    """What a model's output lacked or had too much of; parsing still recovers what it can."""

    NO_TAGS = "no_tags"  # neither reasoning nor answer tags: the whole text is taken as the answer
    MISSING_REASONING = "missing_reasoning"
    UNCLOSED_REASONING = "unclosed_reasoning"
    MISSING_ANSWER_TAG = "missing_answer_tag"  # text after </reasoning> taken as the answer
    UNCLOSED_ANSWER = "unclosed_answer"  # cut off, usually by num_predict
    THINK_BLOCK = "think_block"  # an R1-style <think> block, used as reasoning when there is no other
    TEXT_OUTSIDE_TAGS = "text_outside_tags"
    STRAY_TAG = "stray_tag"  # one of our tags (<answer>, </reasoning>, <response>...) inside the answer
    DEFUSED_TAG = "defused_tag"  # a tag's defused form ([answer], copied from the context) in the answer
    EMPTY_ANSWER = "empty_answer"  # no answer, or one that was only markup


@dataclass
class ParsedOutput:
    reasoning: str
    answer: str
    issues: list[Issue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Both parts present and properly tagged (stray whitespace is fine)."""
        return not self.issues


_OPEN_RE = {
    "think": re.compile(r"(?i)<think>"),
    "reasoning": re.compile(r"(?i)<reasoning>"),
    "answer": re.compile(r"(?i)<answer>"),
}
_CLOSE_RE = {
    "think": re.compile(r"(?i)</think>"),
    "reasoning": re.compile(r"(?i)</reasoning>"),
    "answer": re.compile(r"(?i)</answer>"),
}
_PARTIAL_TAG_RE = re.compile(r"(?:<(/?[a-zA-Z]{0,9})?|\[/?[a-zA-Z]{0,9})$")
_MARKUP = "reasoning|answer|think|response"
_STRAY_TAG_RE = re.compile(rf"(?i)<\s*/?\s*(?:{_MARKUP})\s*>")
_DEFUSED_TAG_RE = re.compile(rf"(?i)\[/?(?:{_MARKUP})\]")


def _strip_markup(answer: str, issues: list[Issue]) -> str:
    """The answer without our tags or their defused forms (each kind found is reported), control
    tokens defused: what is left is story text only. A tag between two words leaves one space."""
    for pattern, issue in ((_STRAY_TAG_RE, Issue.STRAY_TAG), (_DEFUSED_TAG_RE, Issue.DEFUSED_TAG)):
        answer, n = pattern.subn(_gap, answer)
        if n:
            issues.append(issue)
            answer = re.sub(r"(?<=\S)[ \t]{2,}(?=\S)", " ", answer)  # the tag's own spacing
    return defuse_control(answer).strip()


def has_markup(text: str) -> bool:
    """Whether text holds one of our tags or its defused form (what never enters a story)."""
    return bool(_STRAY_TAG_RE.search(text) or _DEFUSED_TAG_RE.search(text))


def _gap(m: re.Match) -> str:
    before, after = m.string[m.start() - 1 : m.start()], m.string[m.end() : m.end() + 1]
    return " " if before and not before.isspace() and after.isalnum() else ""


def _take_block(text: str, tag: str, stop_at: re.Pattern | None = None) -> tuple[str | None, str, bool]:
    """Cut the first <tag>…</tag> out of text: (inner or None, rest, closed)."""
    start = _OPEN_RE[tag].search(text)
    if not start:
        return None, text, False
    end = _CLOSE_RE[tag].search(text, start.end())
    if end:
        return text[start.end() : end.start()], text[: start.start()] + text[end.end() :], True
    # Unclosed: the block runs to the next opening tag we know (if given) or to the end.
    nxt = stop_at.search(text, start.end()) if stop_at else None
    stop = nxt.start() if nxt else len(text)
    return text[start.end() : stop], text[: start.start()] + text[stop:], False


def parse_output(text: str, *, partial: bool = False) -> ParsedOutput:
    """Split a model's output into reasoning and answer, leniently, and say what was off.

    `partial=True` parses a stream still in progress: a half-written tag at the end is ignored and
    untagged text is not yet taken for the answer while reasoning may still be coming.
    """
    if partial:
        text = _PARTIAL_TAG_RE.sub("", text)
    issues: list[Issue] = []
    think, text, _ = _take_block(text, "think", _OPEN_RE["reasoning"])
    if think is not None:
        issues.append(Issue.THINK_BLOCK)
    reasoning, text, r_closed = _take_block(text, "reasoning", _OPEN_RE["answer"])
    answer, rest, a_closed = _take_block(text, "answer")

    if reasoning is None and answer is None:
        if partial and think is None and not text.strip():
            return ParsedOutput("", "", [])
        issues.append(Issue.NO_TAGS)
        return _finish((think or "").strip(), text.strip(), issues, partial)

    if reasoning is None:
        reasoning = think or ""
        issues.append(Issue.MISSING_REASONING)
    elif not r_closed and answer is None:
        issues.append(Issue.UNCLOSED_REASONING)
    if answer is None:
        if r_closed and rest.strip():
            issues.append(Issue.MISSING_ANSWER_TAG)
            answer, rest = rest, ""
        else:
            answer = ""
    elif not a_closed:
        issues.append(Issue.UNCLOSED_ANSWER)
    if rest.strip():
        issues.append(Issue.TEXT_OUTSIDE_TAGS)
    return _finish(reasoning.strip(), answer.strip(), issues, partial)


def restore_stop(output: str) -> str:
    """A finished generation's output with `</answer>` put back where the answer was left open.

    Ollama strips a stop string from what it returns, and `</answer>` is one of ours: an output that
    ended (done_reason "stop", not "length") inside an open answer ended at that stop, or at the
    model's end-of-turn, which closes the answer as well. Call it only for such outputs.
    """
    lower = output.lower()
    opened = lower.rfind(ANSWER_OPEN)
    if opened >= 0 and ANSWER_CLOSE not in lower[opened:]:
        return output + ANSWER_CLOSE
    return output


def cut_at_answer_close(output: str) -> str | None:
    """The output up to and with its first `</answer>` (where generation stops), or None before it."""
    at = output.find(ANSWER_CLOSE)
    return None if at < 0 else output[: at + len(ANSWER_CLOSE)]


def _finish(reasoning: str, answer: str, issues: list[Issue], partial: bool) -> ParsedOutput:
    answer = _strip_markup(answer, issues)
    if partial:  # still streaming: what has not arrived yet is not a fault
        unfinished = (Issue.UNCLOSED_ANSWER, Issue.UNCLOSED_REASONING)
        return ParsedOutput(reasoning, answer, [i for i in issues if i not in unfinished])
    if not answer and Issue.UNCLOSED_REASONING not in issues:
        issues.append(Issue.EMPTY_ANSWER)
    return ParsedOutput(reasoning, answer, issues)
