"""Chat formats: how a base model's chat template wraps the writer prompt.

One `ChatFormat` yields both renderings of the same turns: a Jinja chat template (what Hugging Face
tokenizers apply at training time) and an Ollama Go TEMPLATE (what the server applies at serving time).
Both are built from the same pieces here, and the tests render both and compare bytes, so a model is
served exactly the text it was trained on. A base whose own chat template matches none of these is
refused by name rather than served with a guessed format.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline import prompt


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


_CHATML = dict(
    system_open="<|im_start|>system\n",
    user_open="<|im_start|>user\n",
    assistant_open="<|im_start|>assistant\n",
    turn_close="<|im_end|>\n",
    stop=("<|im_start|>", "<|im_end|>"),
)

FORMATS: dict[str, ChatFormat] = {
    f.name: f
    for f in (
        ChatFormat(
            name="qwen2.5",
            description="ChatML with Qwen2.5's default system turn (Qwen2.5 instruct, CRA-v1)",
            default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
            **_CHATML,
        ),
        ChatFormat(
            name="qwen2",
            description="ChatML with Qwen2's default system turn (Qwen2 instruct)",
            default_system="You are a helpful assistant.",
            **_CHATML,
        ),
        ChatFormat(name="chatml", description="plain ChatML, no default system turn", **_CHATML),
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


_PROBE = [
    {"role": "user", "content": "PROBE-USER \n"},
    {"role": "assistant", "content": "PROBE-ANSWER"},
    {"role": "user", "content": "PROBE-NEXT"},
]


def detect_from_jinja(template: str, bos_token: str = "", eos_token: str = "") -> ChatFormat:
    """Which of our formats a Hugging Face chat template renders exactly like.

    Rendering a probe conversation both ways and comparing bytes catches any difference (a default
    system turn, trimming, newlines) that names alone would miss.
    """
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    compiled = env.from_string(template)
    for probe in (_PROBE, [{"role": "system", "content": "PROBE-SYSTEM"}, *_PROBE]):
        got = compiled.render(
            messages=probe, add_generation_prompt=True, bos_token=bos_token, eos_token=eos_token
        )
        matches = [f for f in FORMATS.values() if f.render(probe, add_generation_prompt=True) == got]
        if not matches:
            break
    else:
        return matches[0]
    raise UnknownFormatError(
        "the model's chat template matches none of the supported formats "
        f"({supported()}): serving it through our Modelfiles would differ from training; "
        "set the format explicitly (it replaces the tokenizer's template at training time)"
    )


def _raise(message: str):
    raise UnknownFormatError(message)
