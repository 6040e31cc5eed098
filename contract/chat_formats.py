"""Chat formats: how a base model's chat template wraps the writer prompt.

One `ChatFormat` yields both renderings of the same turns: a Jinja chat template (what Hugging Face
tokenizers apply at training time) and an Ollama Go TEMPLATE (what the server applies at serving time).
Both are built from the same pieces here, and the tests render both and compare bytes, so a model is
served exactly the text it was trained on. A base whose own chat template matches none of these is
refused by name rather than served with a guessed format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from contract import prompt


class UnknownFormatError(ValueError):
    """A base model whose chat format we do not support."""


@dataclass(frozen=True)
class ChatFormat:
    name: str
    description: str
    system_open: str
    user_open: str
    assistant_open: str
    turn_close: str
    stop: tuple[str, ...]
    default_system: str | None = None
    bos: str = ""  # written by the Jinja template; the runtime adds it itself before an Ollama TEMPLATE
    trim_content: bool = False  # the family's template trims each message

    def _content(self, text: str) -> str:
        return text.strip() if self.trim_content else text

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        """The text the Jinja template gives for these messages (used for checks and raw prompts)."""
        out = self.bos
        system = self.default_system
        if messages and messages[0]["role"] == "system":
            system, messages = messages[0]["content"], messages[1:]
        if system is not None:
            out += self.system_open + self._content(system) + self.turn_close
        for m in messages:
            opener = self.user_open if m["role"] == "user" else self.assistant_open
            out += opener + self._content(m["content"]) + self.turn_close
        if add_generation_prompt:
            out += self.assistant_open
        return out

    def generation_prompt(self, user: str, system: str | None = None) -> str:
        """Full raw prompt for one user turn, ready for the assistant's reply (Ollama `raw` mode)."""
        messages = ([{"role": "system", "content": system}] if system is not None else []) + [
            {"role": "user", "content": user}
        ]
        return self.render(messages, add_generation_prompt=True)[len(self.bos) :]

    @property
    def jinja(self) -> str:
        """A Hugging Face chat template equivalent to `render` (no tools, no reasoning extras)."""
        content = "message['content'] | trim" if self.trim_content else "message['content']"
        first = "messages[0]['content'] | trim" if self.trim_content else "messages[0]['content']"
        default = (
            "{{- " + _jq(self.system_open + self._content(self.default_system) + self.turn_close) + " }}"
            if self.default_system is not None
            else ""
        )
        return (
            ("{{- bos_token }}" if self.bos else "")
            + "{%- if messages and messages[0]['role'] == 'system' %}"
            + "{{- "
            + _jq(self.system_open)
            + " + "
            + first
            + " + "
            + _jq(self.turn_close)
            + " }}"
            + "{%- set loop_messages = messages[1:] %}"
            + "{%- else %}"
            + default
            + "{%- set loop_messages = messages %}{%- endif %}"
            + "{%- for message in loop_messages %}"
            + "{%- if message['role'] == 'user' %}{{- "
            + _jq(self.user_open)
            + " }}"
            + "{%- else %}{{- "
            + _jq(self.assistant_open)
            + " }}{%- endif %}"
            + "{{- "
            + content
            + " + "
            + _jq(self.turn_close)
            + " }}"
            + "{%- endfor %}"
            + "{%- if add_generation_prompt %}{{- "
            + _jq(self.assistant_open)
            + " }}{%- endif %}"
        )

    @property
    def writer_jinja(self) -> str:
        """The chat template with the writer prompt applied to every user turn, for our GGUF exports.

        Whoever renders the GGUF's own chat template (llama-server for Ollama, when it prefers that
        template to the Modelfile's) then gives the model the bytes it was trained on: the user's text
        inside the writer prompt, in this format. The user turns are rewritten first, then `jinja` runs
        unchanged, so both stay the same template.
        """
        wrapped = f"{_jq(prompt.PROMPT_PREFIX)} + message['content'] + {_jq(prompt.PROMPT_SUFFIX)}"
        return (
            "{%- set ns = namespace(messages=[]) %}{%- for message in messages %}"
            "{%- if message['role'] == 'user' %}{%- set ns.messages = ns.messages + [{'role': 'user', "
            f"'content': {wrapped}}}] %}}"
            "{%- else %}{%- set ns.messages = ns.messages + [message] %}{%- endif %}{%- endfor %}"
            "{%- set messages = ns.messages %}" + self.jinja
        )

    def ollama_template(self, writer: bool = True) -> str:
        """The Go TEMPLATE: a system turn if any, then every user turn inside the writer prompt.

        It renders `.Messages` and handles `.Tools` with a whole tool round trip (calls, `eq .Role
        "tool"` results), so Ollama (v0.30 on, `server/images.go` `shouldPreferChatTemplate`) finds it
        no less capable than a base GGUF's chat template that mentions tools (Qwen2.5, Llama 3.1) and
        keeps it instead of rendering that chat template, which has no writer prompt.
        """
        prefix = prompt.PROMPT_PREFIX if writer else ""
        suffix = prompt.PROMPT_SUFFIX if writer and not self.trim_content else ""
        default = "" if self.default_system is None else self.default_system
        default_turn = "" if self.default_system is None else self.system_open + default + self.turn_close
        return (
            "{{ if or .System .Tools }}" + self.system_open
            + "{{ if .System }}{{ .System }}{{ else }}" + default + "{{ end }}"
            + "{{ if .Tools }}" + _TOOLS + "{{ end }}" + self.turn_close
            + "{{ else }}" + default_turn + "{{ end }}"
            + '{{ range .Messages }}{{ if eq .Role "user" }}'
            + self.user_open + prefix + "{{ .Content }}" + suffix + self.turn_close
            + '{{ else if eq .Role "assistant" }}' + self.assistant_open + "{{ .Content }}"
            + "{{ if .ToolCalls }}<tool_call>{{ range .ToolCalls }}\n"
            + '{"name": "{{ .Function.Name }}", "arguments": {{ json .Function.Arguments }}}'
            + "{{ end }}\n</tool_call>{{ end }}" + self.turn_close
            + '{{ else if eq .Role "tool" }}' + self.user_open
            + "<tool_response>\n{{ .Content }}\n</tool_response>" + self.turn_close
            + "{{ end }}{{ end }}" + self.assistant_open
        )  # fmt: skip


_TOOLS = (
    "\n\n# Tools\n\nYou may call functions to help with the request. Their signatures, one JSON object a "
    "line, are inside <tools></tools>:\n<tools>{{ range .Tools }}\n{{ json . }}{{ end }}\n</tools>\n\n"
    "To call one, answer with its name and arguments as a JSON object inside <tool_call></tool_call>:\n"
    '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)


def _jq(text: str) -> str:
    """A Jinja string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


_CHATML = ChatFormat(
    name="chatml",
    description="plain ChatML, no default system turn",
    system_open="<|im_start|>system\n",
    user_open="<|im_start|>user\n",
    assistant_open="<|im_start|>assistant\n",
    turn_close="<|im_end|>\n",
    stop=("<|im_start|>", "<|im_end|>"),
)

FORMATS: dict[str, ChatFormat] = {
    f.name: f
    for f in (
        replace(
            _CHATML,
            name="qwen2.5",
            description="ChatML with Qwen2.5's default system turn (Qwen2.5 instruct, CRA-v1)",
            default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
        ),
        replace(
            _CHATML,
            name="qwen2",
            description="ChatML with Qwen2's default system turn (Qwen2 instruct)",
            default_system="You are a helpful assistant.",
        ),
        _CHATML,
        ChatFormat(
            name="llama3",
            description="Llama 3 instruct headers, no default system turn",
            system_open="<|start_header_id|>system<|end_header_id|>\n\n",
            user_open="<|start_header_id|>user<|end_header_id|>\n\n",
            assistant_open="<|start_header_id|>assistant<|end_header_id|>\n\n",
            turn_close="<|eot_id|>",
            stop=("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
            bos="<|begin_of_text|>",
            trim_content=True,
        ),
    )
}

# Ollama library names (the part before ':') whose template is one of ours.
_OLLAMA_NAMES = {
    "qwen2.5": "qwen2.5",
    "molbal/cra-v1-7b": "qwen2.5",
    "molbal/cra-v1-32b": "qwen2.5",
    "qwen2": "qwen2",
    "llama3": "llama3",
    "llama3.1": "llama3",
    "llama3.2": "llama3",
    "llama3.3": "llama3",
}


def supported() -> str:
    return ", ".join(FORMATS)


def get(name: str) -> ChatFormat:
    try:
        return FORMATS[name.lower()]
    except KeyError:
        raise UnknownFormatError(
            f"unknown chat format {name!r}: supported formats are {supported()}"
        ) from None


def for_ollama_name(model: str) -> ChatFormat:
    """The chat format of a model named as Ollama names it (`qwen2.5:7b-instruct`)."""
    base = model.split(":", 1)[0].lower()
    base = base.removeprefix("registry.ollama.ai/").removeprefix("library/")
    if base in _OLLAMA_NAMES:
        return FORMATS[_OLLAMA_NAMES[base]]
    raise UnknownFormatError(
        f"cannot tell the chat format of {model!r}: known bases are {', '.join(sorted(_OLLAMA_NAMES))}; "
        f"pass --format with one of {supported()} if its chat template is one of those"
    )


# Probe conversations (messages, add_generation_prompt): without a system turn (where a default system
# turn shows), with one, a single turn, and a finished training example. Trailing whitespace in the
# contents tells a trimming template from one that keeps each message as it is.
_PROBES: list[tuple[list[dict], bool]] = [
    (
        [
            {"role": "user", "content": "PROBE-USER \n"},
            {"role": "assistant", "content": "PROBE-ANSWER"},
            {"role": "user", "content": "PROBE-NEXT"},
        ],
        True,
    ),
    (
        [
            {"role": "system", "content": "PROBE-SYSTEM \n"},
            {"role": "user", "content": "PROBE-USER"},
            {"role": "assistant", "content": "PROBE-ANSWER \n"},
            {"role": "user", "content": "PROBE-NEXT"},
        ],
        True,
    ),
    ([{"role": "user", "content": "PROBE-ONLY"}], True),
    ([{"role": "user", "content": "PROBE-ROW"}, {"role": "assistant", "content": "PROBE-TARGET"}], False),
]

# Families: formats that differ only in their default system turn (the first of each has none).
_FAMILIES = (FORMATS["chatml"], FORMATS["llama3"])
_LABELS = {"chatml": "ChatML", "llama3": "Llama 3 instruct headers"}

# Marks of chat templates we do not serve, to name what a refused template is.
_OTHER_FAMILIES = (
    ("[INST]", "Mistral / Llama 2 ([INST] ... [/INST])"),
    ("<start_of_turn>", "Gemma (<start_of_turn>)"),
    ("<|user|>", "Phi-3 / Zephyr (<|user|>)"),
    ("<|START_OF_TURN_TOKEN|>", "Command-R (<|START_OF_TURN_TOKEN|>)"),
    ("<|im_start|>", "ChatML written differently from ours (tools, reasoning blocks or other wrapping)"),
    ("<|start_header_id|>", "Llama 3 written differently from ours (e.g. Llama 3.1's dated system turn)"),
)


def family_of(fmt: ChatFormat) -> ChatFormat:
    """The format of fmt's family without a default system turn (chatml for qwen2.5, say)."""
    for family in _FAMILIES:
        if replace(fmt, name=family.name, description=family.description, default_system=None) == family:
            return family
    return fmt


def with_default_system(fmt: ChatFormat, default_system: str | None) -> ChatFormat:
    """fmt's family with this default system turn: a named format where one has it, else ChatML (or
    Llama 3) carrying the base's own default system turn."""
    family = family_of(fmt)
    for known in FORMATS.values():
        if family_of(known) == family and known.default_system == default_system:
            return known
    return replace(
        family,
        description=f"{_LABELS[family.name]} with the base's own default system turn",
        default_system=default_system,
    )


def from_record(chat_format: str, default_system: str | None = None) -> ChatFormat:
    """The format an adapter was trained with, as `training.json` records it (`record`'s keys)."""
    fmt = get(chat_format)
    return fmt if fmt.default_system == default_system else with_default_system(fmt, default_system)


def record(fmt: ChatFormat) -> dict:
    """What `from_record` takes back: stored in training.json beside the adapter."""
    return {"chat_format": fmt.name, "default_system": fmt.default_system}


def detect_from_jinja(template: str, bos_token: str = "", eos_token: str = "") -> ChatFormat:
    """Which of our formats a Hugging Face chat template renders exactly like.

    Probe conversations are rendered both ways and compared byte for byte, so any difference (a default
    system turn, trimming, newlines) that names alone would miss shows. Without a system turn the
    template's own default system turn (if any) appears: a ChatML or Llama 3 template with a default
    system turn of its own is that family with that system turn (Qwen2.5's and Qwen2's have names).
    """
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    try:
        compiled = env.from_string(template)
        rendered = [
            compiled.render(messages=m, add_generation_prompt=g, bos_token=bos_token, eos_token=eos_token)
            for m, g in _PROBES
        ]
    except (TemplateError, UnknownFormatError, TypeError, ValueError) as e:
        raise UnknownFormatError(
            f"the model's chat template cannot be rendered ({e}), so it matches none of the supported "
            f"formats ({supported()})"
        ) from None
    for family in _FAMILIES:
        fmt = with_default_system(family, _default_system(family, rendered[0]))
        expected = [fmt.render(m, add_generation_prompt=g) for m, g in _PROBES]
        if expected == rendered:
            return fmt
    kind = next((name for mark, name in _OTHER_FAMILIES if mark in template), "a format of its own")
    raise UnknownFormatError(
        f"the model's chat template is {kind} and matches none of the supported formats ({supported()}): "
        "served through our Modelfiles it would differ from training"
    )


def from_ollama_template(template: str) -> ChatFormat | None:
    """Which of our formats (with whatever default system turn) wrote this Go TEMPLATE, byte for byte."""
    template = template.strip()
    for fmt in FORMATS.values():
        if template == fmt.ollama_template().strip():
            return fmt
    for family in _FAMILIES:  # a default system turn of the base's own: read it off what the TEMPLATE renders
        from contract.modelfile import gotemplate

        try:
            got = gotemplate.execute(template, [{"role": "user", "content": "x"}])
        except gotemplate.TemplateError:
            continue
        if got.startswith(family.system_open) and family.turn_close in got:
            own = got[len(family.system_open) : got.index(family.turn_close)]
            fmt = with_default_system(family, own)
            if fmt.ollama_template().strip() == template:
                return fmt
    return None


def _default_system(family: ChatFormat, got: str) -> str | None:
    """The default system turn a template wrote before the first probe's turns, if it is of family."""
    messages, generation = _PROBES[0]
    rest = family.render(messages, add_generation_prompt=generation)[len(family.bos) :]
    head = family.bos + family.system_open
    tail = family.turn_close + rest
    if got.startswith(head) and got.endswith(tail) and len(got) >= len(head) + len(tail):
        return got[len(head) : len(got) - len(tail)]
    return None


def _raise(message: str):
    raise UnknownFormatError(message)


# --- the format an output was trained with, wherever it travels ------------------------------------
#: GGUF keys our adapter export writes, so `modelfile --adapter` needs no --format. llama.cpp reads
#: only the general.* and adapter.* keys of an adapter, and Ollama only the model layer's chat template.
GGUF_FORMAT_KEY = "writer.chat_format"
GGUF_SYSTEM_KEY = "writer.chat_format.default_system"


def folder_chat_template(folder: Path) -> tuple[str | None, str]:
    """(chat template, bos token) of a Hugging Face model, tokenizer or adapter folder."""
    config_path = Path(folder) / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    bos = config.get("bos_token") or ""
    bos = bos if isinstance(bos, str) else bos.get("content", "")
    jinja = Path(folder) / "chat_template.jinja"  # where recent transformers save it
    template = jinja.read_text(encoding="utf-8") if jinja.is_file() else config.get("chat_template")
    return (template if isinstance(template, str) else None), bos


def of_adapter(folder: Path) -> ChatFormat | None:
    """The format a PEFT adapter folder from `train` was trained with: what training.json records,
    else what its saved tokenizer's chat template renders like; None when it holds neither."""
    meta_path = Path(folder) / "training.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    if isinstance(meta.get("chat_format"), str):
        if "default_system" not in meta:  # recorded before the default system turn was
            return get(meta["chat_format"])
        return from_record(meta["chat_format"], meta["default_system"])
    template, bos = folder_chat_template(folder)
    return detect_from_jinja(template, bos) if template else None


def gguf_record(fmt: ChatFormat) -> dict[str, str]:
    """The GGUF keys that carry fmt inside an exported adapter."""
    out = {GGUF_FORMAT_KEY: fmt.name}
    if fmt.default_system is not None:
        out[GGUF_SYSTEM_KEY] = fmt.default_system
    return out


def from_gguf_fields(fields: dict) -> ChatFormat | None:
    """The format an exported adapter's GGUF keys carry, if any."""
    name = fields.get(GGUF_FORMAT_KEY)
    if not isinstance(name, str):
        return None
    system = fields.get(GGUF_SYSTEM_KEY)
    return from_record(name, system if isinstance(system, str) else None)
