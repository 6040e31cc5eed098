"""The base model's own chat template: the one source of the bytes a model is trained and served with.

A `ChatTemplate` is the Hugging Face Jinja chat template of the base (Qwen2.5, DeepSeek-R1 distills,
Qwen3, Llama 3.x, Mistral, Gemma, Phi, ...) with what a render depends on pinned at training time: the
BOS/EOS tokens, the date `strftime_now` returns (Llama 3.2, Mistral Small 3.x write today's date) and
the thinking switch. Training, the bot's raw prompts and our GGUF exports all render it here, in the
environment transformers renders in, so serving on another day gives what training saw.

`ollama run` cannot render Jinja: for it, `contract.go_chat` derives a Go TEMPLATE from what the Jinja
template renders for probe conversations (the text between the turns), and checks it byte for byte
against the Jinja for conversations with and without a system turn, one to three user turns. A template
that places turns in a way no Go TEMPLATE can follow is refused by name before any work.

Thinking families (DeepSeek-R1 distills, Qwen3, QwQ): the family's think block is closed and empty in
the prompt, as the template renders it with thinking off (`enable_thinking=False`); a template that
always leaves `<think>` open gets `</think>` after it, as llama.cpp's copy of the R1 template writes
with thinking off. The writer's reasoning goes in our `<reasoning>` block of the reply, so one parser,
the `</answer>` stop and Ollama's `think` option (nothing to parse: the reply holds no `<think>`) agree.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import re
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from contract import prompt

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
#: The GGUF key our adapter export writes the record in (`encoded`), so `modelfile --adapter` needs no
#: more: llama.cpp reads only an adapter's general.* and adapter.* keys, and Ollama none of them.
GGUF_KEY = "writer.chat_template"
_RECORD_TAG = "story-writer-template"
_RECORD_RE = re.compile(_RECORD_TAG + r" v1 ([A-Za-z0-9+/=]+)")
#: Contents of the probe conversations, found again in what a template renders around them.
SYSTEM_MARK, USER_MARK, ANSWER_MARK = "@@SYSTEM@@", "@@USER{}@@", "@@ANSWER{}@@"


class UnknownFamilyError(ValueError):
    """A chat template whose turns cannot be served byte for byte (named, with what to do)."""


# --- Rendering as transformers does ---------------------------------------------------------------


def _raise(message: str):
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@functools.cache
def _generation_extension():
    """`{% generation %}...{% endgeneration %}`, which transformers' AssistantTracker adds to mark the
    reply for assistant-only masks; for rendering it is the text between the tags."""
    from jinja2 import nodes
    from jinja2.ext import Extension

    class Generation(Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    return Generation


@functools.lru_cache(maxsize=32)
def _compiled(source: str):
    """The template compiled as transformers compiles it (`_compile_jinja_template`): a sandbox with
    trim_blocks, lstrip_blocks and loop controls, `tojson` as json.dumps, `raise_exception`."""
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_generation_extension(), loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    return env.from_string(source)


def render_jinja(
    source: str, messages: Sequence[dict], add_generation_prompt: bool, date: str, **extra
) -> str:
    """A Jinja chat template rendered as transformers renders it, `strftime_now` pinned to `date`
    (unless `extra` gives one)."""
    day = dt.date.fromisoformat(date)
    # transformers passes tools and documents, None when unused
    values = {"tools": None, "documents": None, "strftime_now": lambda fmt: day.strftime(fmt), **extra}
    return _compiled(source).render(
        messages=list(messages), add_generation_prompt=add_generation_prompt, **values
    )


# --- The trained template -------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatTemplate:
    """A base's chat template with what its renders depend on, as training pinned it."""

    source: str
    bos_token: str = ""
    eos_token: str = ""
    date: str = field(default_factory=lambda: dt.date.today().isoformat())
    thinking: bool = False  # the family's own thinking switch; the writer reasons in <reasoning>
    target: str = "reasoning+answer"  # what the model was trained to write (contract.target), carried along

    def render(self, messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
        """The text the template gives (BOS included), as transformers renders it on `date`."""
        if messages and messages[0]["role"] == "system" and not self.system_role:
            messages = _fold_system(messages)
        try:
            text = self._jinja(messages, add_generation_prompt)
        except Exception as e:  # jinja2 errors, and what a template's own raise_exception says
            raise UnknownFamilyError(
                f"{_label(self)}: the chat template cannot render a plain conversation ({e})"
            ) from e
        if add_generation_prompt and not self.thinking and _opens_think(text):
            text += THINK_CLOSE  # the block closed at once, as templates with a thinking switch do
        return text

    def _jinja(self, messages: Sequence[dict], add_generation_prompt: bool, **over) -> str:
        """The source rendered as is (no folding, no closing), with this template's tokens and pins."""
        values = {"bos_token": self.bos_token, "eos_token": self.eos_token, "enable_thinking": self.thinking}
        return render_jinja(self.source, messages, add_generation_prompt, self.date, **{**values, **over})

    def without_bos(self, text: str) -> str:
        """What is sent raw: the runtime writes BOS itself (llama.cpp adds it, as Ollama does) where the
        template writes `bos_token` (SmolLM2's BOS is `<|im_start|>`, which its template writes as a
        turn opener, not as BOS)."""
        if self.writes_bos and text.startswith(self.bos_token):
            return text[len(self.bos_token) :]
        return text

    @functools.cached_property
    def writes_bos(self) -> bool:
        """Whether the template writes `bos_token` itself at the start."""
        if not self.bos_token:
            return False
        probe = [{"role": "user", "content": USER_MARK.format(1)}]
        return self._jinja(probe, True, bos_token=SYSTEM_MARK).startswith(SYSTEM_MARK)

    def prompt(self, user: str, system: str | None = None) -> str:
        """The raw prompt for one user turn, ready for the reply (Ollama `raw` mode, no BOS)."""
        turns = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user}
        ]
        return self.without_bos(self.render(turns, add_generation_prompt=True))

    @functools.cached_property
    def reply_end(self) -> str:
        """What the template writes after an assistant reply (`<|im_end|>\\n`, `<｜end▁of▁sentence｜>`)."""
        answer = ANSWER_MARK.format(1)
        text = self.render(
            [{"role": "user", "content": USER_MARK.format(1)}, {"role": "assistant", "content": answer}]
        )
        if text.count(answer) != 1:
            raise UnknownFamilyError(
                f"the chat template does not write the assistant's reply as given ({_label(self)})"
            )
        return text.split(answer, 1)[1]

    @functools.cached_property
    def system_role(self) -> bool:
        """Whether the template takes a system turn (Gemma 2's raises on one)."""
        try:
            self._jinja([{"role": "system", "content": SYSTEM_MARK}, {"role": "user", "content": "x"}], True)
        except Exception:  # noqa: BLE001 - raise_exception("System role not supported") and the like
            return False
        return True

    @property
    def stops(self) -> tuple[str, ...]:
        """Where generation must stop: the token that ends the reply's turn, and the EOS token."""
        end = self.reply_end.strip()
        token = _TOKEN_RE.match(end)
        first = token.group(0) if token else end.split("\n", 1)[0]
        return tuple(dict.fromkeys(t for t in (first, self.eos_token) if t))

    @property
    def thinks(self) -> bool:
        """Whether Ollama counts the base's template thinking-capable."""
        return thinks(self.source)

    @property
    def family(self) -> str:
        return _label(self)

    # --- carried with the model ---

    def record(self) -> dict:
        """What `from_record` takes back: kept in training.json, our GGUF exports and TEMPLATEs (the
        default target left out, so models and Modelfiles made before targets carry the same bytes)."""
        record = asdict(self)
        if record["target"] == ChatTemplate.target:
            del record["target"]
        return record

    def encoded(self) -> str:
        """The record as one line of base64 (zlib JSON), to ride inside a template comment."""
        raw = json.dumps(self.record(), ensure_ascii=False, sort_keys=True).encode()
        return f"{_RECORD_TAG} v1 " + base64.b64encode(zlib.compress(raw, 9)).decode()

    def pinned_jinja(self, writer: bool = False) -> str:
        """This template as one Jinja text that renders what `render` does wherever it is rendered
        (transformers, TRL, llama-server): the record in a comment, the thinking switch and the dates
        pinned, the think block closed; with `writer`, the writer prompt around each user turn (our GGUF
        exports: whoever renders their chat template gives the model the bytes it was trained on)."""
        dates = ", ".join(f"{_jq(f)}: {_jq(v)}" for f, v in sorted(self._dates().items()))
        head = (
            "{# " + self.encoded() + " #}"
            f"{{%- set enable_thinking = {str(self.thinking).lower()} %}}"
            "{%- macro strftime_now(format) %}{{ {" + dates + "}[format] }}{%- endmacro %}"
        )
        if writer:
            wrapped = f"{_jq(prompt.PROMPT_PREFIX)} + message['content'] + {_jq(prompt.PROMPT_SUFFIX)}"
            head += (
                "{%- set ns = namespace(messages=[]) %}{%- for message in messages %}"
                "{%- if message['role'] == 'user' %}{%- set ns.messages = ns.messages + [{'role': 'user', "
                f"'content': {wrapped}}}] %}}"
                "{%- else %}{%- set ns.messages = ns.messages + [message] %}{%- endif %}{%- endfor %}"
                "{%- set messages = ns.messages %}"
            )
        if not self.system_role:  # as `render` folds it: the system text opens the first user turn
            head += (
                "{%- if messages and messages[0]['role'] == 'system' %}"
                "{%- set fold = namespace(messages=[], system=messages[0]['content']) %}"
                "{%- for message in messages[1:] %}{%- if message['role'] == 'user' and fold.system %}"
                "{%- set fold.messages = fold.messages + [{'role': 'user', "
                "'content': fold.system + '\\n\\n' + message['content']}] %}{%- set fold.system = '' %}"
                "{%- else %}{%- set fold.messages = fold.messages + [message] %}{%- endif %}{%- endfor %}"
                "{%- set messages = fold.messages %}{%- endif %}"
            )
        close = (
            "{%- if add_generation_prompt %}" + THINK_CLOSE + "{%- endif %}" if self._closes_think() else ""
        )
        return head + self.source + close

    def _dates(self) -> dict[str, str]:
        """Every strftime_now format the template asks for in the probe conversations, on `date`."""
        day, asked = dt.date.fromisoformat(self.date), set()

        def record(fmt: str) -> str:
            asked.add(fmt)
            return day.strftime(fmt)

        for messages in probe_conversations():
            for generation in (True, False):
                try:
                    self._jinja(messages, generation, strftime_now=record)
                except Exception:  # noqa: BLE001 - a conversation the template refuses asks nothing
                    continue
        return {f: day.strftime(f) for f in asked}

    def _closes_think(self) -> bool:
        """Whether `render` closes a think block the source leaves open."""
        return not self.thinking and _opens_think(self._jinja([{"role": "user", "content": "x"}], True))


def thinks(chat_template: str) -> bool:
    """Ollama's `chatTemplateHasThinkingSupport` (server/images.go): both think tags, or prior reasoning
    split off at `</think>` by a template without reasoning_content."""
    if THINK_OPEN in chat_template and THINK_CLOSE in chat_template:
        return True
    splits = any(f"content.split({q}</think>{q})" in chat_template for q in "'\"")
    return splits and "reasoning_content" not in chat_template and "<SPECIAL_12>" not in chat_template


_TOKEN_RE = re.compile(r"<[^<>\s]{1,40}>|\[[A-Z_/]{2,30}\]")


def _fold_system(messages: Sequence[dict]) -> list[dict]:
    """A system turn for a template without one: its text opens the first user turn, a blank line
    after it (what Gemma 3's own template does with a system turn)."""
    system, rest = messages[0]["content"], list(messages[1:])
    first = next((i for i, m in enumerate(rest) if m["role"] == "user"), None)
    if first is None:
        return rest
    rest[first] = {**rest[first], "content": f"{system}\n\n{rest[first]['content']}"}
    return rest


def _opens_think(text: str) -> bool:
    """Whether a generation prompt ends inside an open think block."""
    at = text.rfind(THINK_OPEN)
    return at >= 0 and THINK_CLOSE not in text[at:]


def _jq(text: str) -> str:
    """A Jinja string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def probe_conversations() -> list[list[dict]]:
    """Probe conversations: with and without a system turn, one to three user turns."""
    out = []
    for system in (False, True):
        for turns in (1, 2, 3):
            messages = [{"role": "system", "content": SYSTEM_MARK}] if system else []
            for k in range(1, turns + 1):
                messages.append({"role": "user", "content": USER_MARK.format(k)})
                if k < turns:
                    messages.append({"role": "assistant", "content": ANSWER_MARK.format(k)})
            out.append(messages)
    return out


# --- Where a record travels -----------------------------------------------------------------------


def from_record(record: dict) -> ChatTemplate:
    names = ("source", "bos_token", "eos_token", "date", "thinking", "target")
    fields = {k: record[k] for k in names if k in record}
    if not isinstance(fields.get("source"), str):
        raise ValueError("the chat template record has no template source")
    return ChatTemplate(**fields)


@functools.lru_cache(maxsize=64)
def decode(text: str) -> ChatTemplate | None:
    """The trained template a TEMPLATE, chat template or GGUF key carries (`encoded`), if any."""
    m = _RECORD_RE.search(text or "")
    if not m:
        return None
    try:
        return from_record(json.loads(zlib.decompress(base64.b64decode(m.group(1)))))
    except (ValueError, zlib.error, TypeError, KeyError):
        return None


def from_source(source: str, bos_token: str = "", eos_token: str = "") -> ChatTemplate:
    """The template a chat template text stands for: the one it carries (our pinned and writer
    templates), else itself with these tokens, pinned today."""
    return decode(source) or ChatTemplate(source, bos_token, eos_token)


def of_tokenizer(tokenizer) -> ChatTemplate | None:
    """The template of a loaded Hugging Face tokenizer (None when it has none)."""
    if not isinstance(tokenizer.chat_template, str):
        return None
    return from_source(tokenizer.chat_template, tokenizer.bos_token or "", tokenizer.eos_token or "")


def folder_chat_template(folder: Path) -> tuple[str | None, str, str]:
    """(chat template, bos token, eos token) of a Hugging Face model, tokenizer or adapter folder."""
    config_path = Path(folder) / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}

    def token(name: str) -> str:
        value = config.get(name) or ""
        return value if isinstance(value, str) else value.get("content", "")

    jinja = Path(folder) / "chat_template.jinja"  # where recent transformers save it
    template = jinja.read_text(encoding="utf-8") if jinja.is_file() else config.get("chat_template")
    return (template if isinstance(template, str) else None), token("bos_token"), token("eos_token")


def of_folder(folder: Path) -> ChatTemplate | None:
    """The trained template of an adapter folder from `train` (training.json), else its tokenizer's."""
    meta_path = Path(folder) / "training.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    if isinstance(meta.get("chat_template"), dict):
        return from_record(meta["chat_template"])
    source, bos, eos = folder_chat_template(folder)
    return from_source(source, bos, eos) if source is not None else None


def from_path(path: Path, bos_token: str = "", eos_token: str = "") -> ChatTemplate:
    """A chat template given by hand: a Hugging Face folder, its tokenizer_config.json, or a .jinja file
    (whose BOS and EOS tokens are given, none by default)."""
    path = Path(path)
    if path.is_dir() or path.name.endswith(".json"):
        source, bos_token, eos_token = folder_chat_template(path if path.is_dir() else path.parent)
    elif path.is_file():
        source = path.read_text(encoding="utf-8")
    else:
        raise ValueError(f"{path}: no such chat template file or folder")
    if not source:
        raise ValueError(f"{path} holds no chat template")
    return from_source(source, bos_token, eos_token)


# --- Naming a family ------------------------------------------------------------------------------

_MARKS = (
    ("<｜User｜>", "DeepSeek (<｜User｜>/<｜Assistant｜>)"),
    ("<|im_start|>", "ChatML (<|im_start|>)"),
    ("<|start_header_id|>", "Llama 3 headers (<|start_header_id|>)"),
    ("[SYSTEM_PROMPT]", "Mistral with [SYSTEM_PROMPT]"),
    ("[INST]", "Mistral / Llama 2 ([INST] ... [/INST])"),
    ("<start_of_turn>", "Gemma (<start_of_turn>)"),
    ("<|turn>", "Gemma 4 (<|turn>)"),
    ("<|user|>", "Phi-3 / Zephyr (<|user|>)"),
    ("<|start_of_role|>", "Granite (<|start_of_role|>)"),
    ("<|START_OF_TURN_TOKEN|>", "Command-R (<|START_OF_TURN_TOKEN|>)"),
    ("<|channel|>", "gpt-oss harmony (<|channel|>)"),
)


def _label(t: ChatTemplate) -> str:
    return next((name for mark, name in _MARKS if mark in t.source), "a chat format of its own")
