"""Which template Ollama renders a model with: the Modelfile TEMPLATE or the GGUF's own chat template.

Since about v0.30 Ollama (`server/images.go`: `GetModel`, `shouldPreferChatTemplate`,
`chatTemplateCapabilities`, `goTemplateCapabilities`; `server/routes.go`: `shouldUseGoTemplate`) marks a
model PreferChatTemplate when its model layer's GGUF carries a `tokenizer.chat_template` that looks more
capable than the Go TEMPLATE; llama-server then renders that Jinja template for /api/chat and non-raw
/api/generate, and the TEMPLATE (with our writer prompt in it) is not used. The rule, as read there:

- chat template capabilities: `tools` if it contains "tools" or "tool_call"; `thinking` if it holds both
  "<think>" and "</think>" (or splits content at "</think>" without "reasoning_content");
- TEMPLATE capabilities: `tools` if it mentions `.Tools`, `insert` if `.Suffix`, `thinking` if a
  `.Thinking` inside `range .Messages` has text tags around it;
- the chat template is preferred when it has more capabilities (by count), unless only the TEMPLATE has
  a tool round trip; with the same capabilities, both including tools, only when the chat template
  alone has a round trip (calls and tool results);
- never when OLLAMA_GO_TEMPLATE is set (non-empty: true forces the TEMPLATE, false the chat template), nor
  with a RENDERER/PARSER, nor without a TEMPLATE or a chat template.

`raw` generate requests skip both templates. `modelfile check` uses this to say by name when a
Modelfile's TEMPLATE would be set aside; the stand-in Ollama server uses it to pick what it renders.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from contract.chat_template import decode as decode_template
from contract.chat_template import thinks
from contract.modelfile import gotemplate, inspect
from contract.modelfile.grammar import Modelfile, Problem

TOOLS, THINKING, INSERT = "tools", "thinking", "insert"
# Library families Ollama renders with built-in code (model/renderers; server/create.go sets RENDERER for
# gemma4, laguna and nemotron-3-nano itself): `FROM` one of them inherits its RENDERER and PARSER.
RENDERER_BASES = frozenset(
    {
        "gemma4",
        "laguna",
        "nemotron-3-nano",
        "qwen3-coder",
        "qwen3-vl",
        "qwen3.5",
        "deepseek-v3.1",
        "glm-4.6",
        "glm-4.7",
        "cogito-2.1",
        "olmo-3",
        "lfm2",
    }
)
_TOOL_CHAT = "{# tools, tool_calls and tool_response: a chat template with a tool round trip #}"
_GO_TEMPLATE_FIX = (
    "recreate the Modelfile with `story-pipeline modelfile` (its TEMPLATE handles tools, so Ollama keeps "
    "it), or set OLLAMA_GO_TEMPLATE=1 on the Ollama server"
)


def chat_template_capabilities(chat_template: str) -> set[str]:
    caps = set()
    if "tools" in chat_template or "tool_call" in chat_template:
        caps.add(TOOLS)
    if thinks(chat_template):
        caps.add(THINKING)
    return caps


_TOOL_ROLE = (
    "role'] == 'tool'",
    'role\'] == "tool"',
    "role\"] == 'tool'",
    'role"] == "tool"',
    "message.role == 'tool'",
    'message.role == "tool"',
)


def chat_template_round_trip(chat_template: str) -> bool:
    """Tool calls and their results both rendered (Ollama's `chatTemplateHasToolRoundTrip`)."""
    if TOOLS not in chat_template_capabilities(chat_template):
        return False
    calls = "tool_calls" in chat_template or "assistant_tool_call" in chat_template
    results = ("tool_response", "tool_results", *_TOOL_ROLE, "ipython")
    return calls and any(r in chat_template for r in results)


def _variables(template: str) -> set[str]:
    """Ollama's `Template.Vars`; a TEMPLATE beyond our renderer's subset is read for field names."""
    try:
        return gotemplate.variables(template)
    except gotemplate.TemplateError:
        actions = " ".join(re.findall(r"\{\{(.*?)\}\}", template, re.S))
        return {name.lower() for name in re.findall(r"\.([A-Za-z_]\w*)", actions)}


def go_template_capabilities(template: str) -> set[str]:
    names = _variables(template)
    caps = {cap for cap, var in ((TOOLS, "tools"), (INSERT, "suffix")) if var in names}
    if "thinking" in names and re.search(r"\{\{-?\s*range\b[^}]*\.Messages", template):
        caps.add(THINKING)  # Ollama infers the thinking tags from the text around .Thinking
    return caps


def go_template_round_trip(template: str) -> bool:
    names = _variables(template)
    marks = ('eq .Role "tool"', "tool_response", "TOOL_RESULTS")
    return "tools" in names and "toolcalls" in names and any(m in template for m in marks)


def prefers_chat_template(chat_template: str, template: str) -> bool:
    """Ollama's `shouldPreferChatTemplate` for a GGUF chat template and a Modelfile TEMPLATE."""
    chat, go = chat_template_capabilities(chat_template), go_template_capabilities(template)
    chat_rt, go_rt = chat_template_round_trip(chat_template), go_template_round_trip(template)
    if len(chat) > len(go):
        return not go_rt or chat_rt
    if chat != go or TOOLS not in chat:
        return False
    return chat_rt and not go_rt


def go_template_env(environ: Mapping[str, str] | None = None) -> bool | None:
    """OLLAMA_GO_TEMPLATE as Ollama reads it: None when unset; a value that is not a bool counts as true."""
    value = (environ if environ is not None else os.environ).get("OLLAMA_GO_TEMPLATE", "")
    value = value.strip().strip("\"'")
    if not value:
        return None
    return value not in ("0", "f", "F", "false", "FALSE", "False")


def uses_chat_template(
    template: str | None,
    chat_template: str | None,
    environ: Mapping[str, str] | None = None,
    renderer: bool = False,
) -> bool:
    """Whether Ollama renders non-raw requests with the GGUF chat template (llama-server's Jinja)
    rather than the TEMPLATE (`shouldUseGoTemplate`, `chatModeForModel`)."""
    if renderer:
        return False  # a RENDERER/PARSER model is rendered by Ollama's own code
    if not template:
        return bool(chat_template)
    env = go_template_env(environ)
    if env is not None:
        return not env and bool(chat_template)
    if not chat_template:
        return False
    return prefers_chat_template(chat_template, template)


def base_chat_template(value: str, base_dir: Path) -> tuple[str, str | None] | None:
    """(what FROM names, its chat template) for a local GGUF file or Hugging Face folder, else None."""
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.exists():
        return None
    kind = "Hugging Face folder" if path.is_dir() else "GGUF"
    try:
        template = inspect.local_chat_template(path)[0]
    except (ValueError, OSError):
        return None
    return f"{kind} {value}", template


def check(mf: Modelfile, base_dir: Path, environ: Mapping[str, str] | None = None) -> list[Problem]:
    """A TEMPLATE Ollama would set aside for the base's chat template, named with the fix.

    `environ` is the server's environment; by default one without OLLAMA_GO_TEMPLATE, as Ollama ships.
    """
    environ = {} if environ is None else environ
    template_cmd = next(iter(mf.get("template")), None)
    from_cmd = next(iter(mf.get("model")[-1:]), None)
    if template_cmd is None or from_cmd is None or mf.get("renderer") or mf.get("parser"):
        return []
    template = template_cmd.args
    base = base_chat_template(from_cmd.args, base_dir)
    library = from_cmd.args.split(":", 1)[0].lower().rsplit("/", 1)[-1]
    if base is None and library in RENDERER_BASES:
        return [
            Problem(
                "error",
                from_cmd.line,
                f"FROM {from_cmd.args}: Ollama renders this family with its built-in RENDERER, which "
                "a model made FROM it inherits (server/create.go), so the TEMPLATE is never used: "
                "build FROM the base's GGUF file (story-pipeline export-base)",
            )
        ]
    trained = decode_template(template)
    if base is None and trained is not None:  # our TEMPLATE names the chat template the base was trained with
        base = (f"library model {from_cmd.args} (with the chat template training used)", trained.source)
    if base is None:
        # a library model: its GGUF is not here to read, so ask whether a tool round-trip chat template
        # (what Qwen2.5's and Llama 3.1's GGUFs carry) would win
        if go_template_env(environ) is not None or not prefers_chat_template(_TOOL_CHAT, template):
            return []
        return [
            Problem(
                "warning",
                template_cmd.line,
                f"the TEMPLATE has no .Tools: if the GGUF of {from_cmd.args} carries a chat template "
                "that mentions tools (Qwen2.5, Llama 3.1 and later do), Ollama v0.30+ renders that "
                f"instead and never uses this TEMPLATE: {_GO_TEMPLATE_FIX}",
            )
        ]
    name, chat_template = base
    if not chat_template or not uses_chat_template(template, chat_template, environ):
        return []
    chat = ", ".join(sorted(chat_template_capabilities(chat_template))) or "none"
    go = ", ".join(sorted(go_template_capabilities(template))) or "none"
    return [
        Problem(
            "error",
            template_cmd.line,
            f"Ollama would set this TEMPLATE aside: the chat template of the {name} (FROM) is more "
            f"capable (capabilities {chat}; the TEMPLATE's: {go}), so Ollama renders that one and "
            f"the model never sees what this TEMPLATE holds: {_GO_TEMPLATE_FIX}",
        )
    ]


def check_file(path: Path) -> list[Problem]:
    """`check` for a Modelfile on disk (nothing to say if it cannot be read or parsed: grammar says why)."""
    from contract.modelfile import grammar

    try:
        mf = grammar.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, grammar.ModelfileError):
        return []
    return check(mf, Path(path).resolve().parent)
