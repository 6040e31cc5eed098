"""Write a Modelfile that serves the writer prompt on a base model, optionally with a GGUF adapter."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from contract import chat_template, go_chat, prompt
from contract import target as targets
from contract.chat_template import ChatTemplate, UnknownFamilyError
from contract.modelfile import golang, grammar, inspect
from pipeline.modelfile import selection
from plumbing import atomic

#: Fits a 7B model at Q4 plus its KV cache in 8 GB of GPU memory with room to spare.
DEFAULT_NUM_CTX = 8192
# llama.cpp (which Ollama runs) holds n_ctx in 32 bits and needs a few tokens; beyond 2^20 no model
# trains, and the KV cache alone would not fit in memory.
MIN_NUM_CTX, MAX_NUM_CTX = 4, 1 << 20
DEFAULT_PARAMETERS = {"temperature": ["0.7"], "top_p": ["0.9"], "num_predict": ["2048"]}


class ModelfileRenderError(ValueError):
    pass


@dataclass
class WriterModelfile:
    base: str
    template: ChatTemplate
    adapter: str | None = None
    system: str | None = None
    num_ctx: int = DEFAULT_NUM_CTX
    parameters: dict[str, list[str]] = field(default_factory=dict)
    path: str = "<this file>"

    def render(self) -> str:
        if self.system is not None:
            _check_text_value("--system", self.system)
        if self.num_ctx <= 0:
            raise ModelfileRenderError(f"--num-ctx must be a positive number of tokens, not {self.num_ctx}")
        params = {**DEFAULT_PARAMETERS, **self.parameters, "num_ctx": [str(self.num_ctx)]}
        # </answer> first: the passage is complete there, and what a model writes after it is not used.
        stops = [prompt.ANSWER_CLOSE, *self.template.stops, *params.get("stop", [])]
        params["stop"] = list(dict.fromkeys(stops))
        lines = [
            f"# The writer's assistant on {self.base} ({self.template.family} chat template, its dates"
            f" pinned to {self.template.date}).",
            f"# Use it:  ollama create writer -f {self.path} && ollama run writer",
            *_USE[self.template.target == targets.Target.ANSWER],
            "# story inside <answer>. The TEMPLATE renders, byte for byte, what training rendered with",
            "# the base's own chat template around the writer prompt (contract/prompt.py); the comment",
            "# at its start carries that chat template, which the bot renders raw prompts with. It also",
            "# handles tools (and thinking, where the base does), so Ollama keeps it rather than the",
            "# base GGUF's own chat template. Edit it only together with a retrain.",
            f"FROM {self.base}",
        ]
        if self.adapter:
            lines.append(f"ADAPTER {self.adapter}")
        lines.append(f'TEMPLATE """{go_chat.writer_template(self.template)}"""')
        if self.system is not None:
            lines.append(f'SYSTEM """{self.system}"""')
        for key in sorted(params):
            lines += [f"PARAMETER {key} {_quote(v)}" for v in params[key]]
        return "\n".join(lines) + "\n"


_USE = {
    False: ["# Type or paste the story so far: the model reasons inside <reasoning> and continues the"],
    True: ["# Type or paste the story so far: the model (--target answer: no reasoning) continues the"],
}


def _quote(value: str) -> str:
    return f'"{value}"' if any(ch in value for ch in " \t\"<#'") or not value else value


def _check_text_value(option: str, value: str) -> None:
    """Refuse text Ollama would store otherwise than given: runes it drops, or quotes it cannot hold."""
    dropped = sorted({ch for ch in value if not golang.is_print(ch) and ch not in " \t\r\n"})
    if dropped:
        names = ", ".join(f"U+{ord(ch):04X}" for ch in dropped)
        raise ModelfileRenderError(
            f"{option}: holds non-printable characters ({names}) that Ollama silently drops; "
            "remove them or use plain spaces"
        )
    mf, problems = grammar.scan(f'FROM x\nSYSTEM """{value}"""\n')
    if problems or mf.first("system") != value:
        raise ModelfileRenderError(
            f'{option}: holds """ where Ollama would end the quoted value (a Modelfile has no escapes); '
            "remove it or write ''' instead"
        )


def parse_params(pairs: list[str]) -> dict[str, list[str]]:
    """`key=value` pairs from the command line; repeated keys (stop) accumulate."""
    out: dict[str, list[str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ModelfileRenderError(f"--param {pair!r}: write it as key=value, e.g. temperature=0.8")
        if key not in grammar.PARAMETERS:
            raise ModelfileRenderError(
                f"--param {key}: Ollama has no such parameter; known: {', '.join(grammar.PARAMETERS)}"
            )
        for _, message in grammar.value_problems(key, value):  # errors and misreads alike
            raise ModelfileRenderError(f"--param {key}={value}: {message.split(': ', 1)[1]}")
        if key == "stop":
            _check_text_value(f"--param stop={value}", value)
            mf, problems = grammar.scan(f"FROM x\nPARAMETER stop {_quote(value)}\n")
            if problems or mf.parameters.get("stop") != [value]:
                raise ModelfileRenderError(
                    f"--param stop={value!r}: a Modelfile cannot hold this stop sequence as it is (a line "
                    "end, or quotes Ollama would read as the end of the value); change it"
                )
        out.setdefault(key, []).append(value)
    return out


def base_template(base: str, base_dir: Path) -> ChatTemplate | None:
    """The chat template of FROM when it is a local GGUF file or Hugging Face folder (the one our
    exports carry, else the model's own); None for an Ollama model name."""
    path = Path(base).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.exists():
        return None
    source, bos, eos = inspect.local_chat_template(path)
    if source is None:
        raise ModelfileRenderError(
            f"{base} has no chat template: give the one the model was trained with (--chat-template)"
        )
    return chat_template.from_source(source, bos, eos)


def template_file(path: Path, bos: str = "", eos: str = "", date: str | None = None) -> ChatTemplate:
    """--chat-template: a Hugging Face folder, its tokenizer_config.json, or a .jinja file (tokens given)."""
    try:
        found = chat_template.from_path(path, bos, eos)
    except ValueError as e:
        raise ModelfileRenderError(f"--chat-template {e}") from e
    return replace(found, date=date) if date else found


def adapter_template(adapter: Path) -> ChatTemplate | None:
    """The chat template an adapter from our export was trained with (it carries it), if it says."""
    try:
        fields = inspect.gguf_fields(adapter)
    except ValueError:  # not a GGUF: the grammar check says so by name
        return None
    carried = fields.get(chat_template.GGUF_KEY)
    return chat_template.decode(carried) if isinstance(carried, str) else None


def choose_template(base: str, adapter: Path | None, given: ChatTemplate | None) -> ChatTemplate:
    """The template to serve: the one given, else the one the adapter was trained with, else FROM's own."""
    if given is not None:
        return given
    trained = adapter_template(Path(adapter)) if adapter is not None and Path(adapter).is_file() else None
    found = trained or base_template(base, Path.cwd())
    if found is None:
        raise ModelfileRenderError(
            f"cannot tell the chat template of {base!r}: give the adapter our export-gguf wrote (it carries "
            "the template it was trained with), a local GGUF or Hugging Face folder as --from, or "
            "--chat-template (the base's Hugging Face folder, tokenizer_config.json or .jinja file)"
        )
    return found


def write(
    out: Path,
    base: str,
    adapter: Path | None = None,
    system: str | None = None,
    params: list[str] | None = None,
    num_ctx: int = DEFAULT_NUM_CTX,
    template: ChatTemplate | None = None,
) -> tuple[Path, list[grammar.Problem]]:
    """Render, check and atomically write a writer Modelfile; refuse if the check finds an error."""
    out = Path(out)
    out_dir = out.resolve().parent
    for _, message in grammar.value_problems("num_ctx", str(num_ctx)):
        raise ModelfileRenderError(f"--num-ctx {num_ctx}: {message.split(': ', 1)[1]}")
    wanted_params = parse_params(params or [])  # the flags first: quick to say, before any file is read
    fmt = choose_template(base, adapter, template)
    try:  # a model trained on plain text (--target text) has never seen the writer prompt
        targets.of(fmt.target).check_servable()
    except targets.TargetError as e:
        raise ModelfileRenderError(f"{adapter or base}: {e}") from e
    try:
        go_chat.check(fmt)
    except UnknownFamilyError as e:
        raise ModelfileRenderError(f"{e}: this base cannot be served the bytes it is trained on") from e
    from_value = _relative(Path(base).expanduser(), out_dir) if Path(base).expanduser().exists() else base
    adapter_value = None
    if adapter is not None:
        if not Path(adapter).exists():
            raise ModelfileRenderError(f"--adapter {adapter}: no such file")
        adapter_value = _relative(Path(adapter), out_dir)
    wanted = WriterModelfile(from_value, fmt, adapter_value, system, num_ctx, wanted_params, str(out))
    text = wanted.render()
    # Refuse anything `modelfile check` finds, warnings too: the writer never writes a file that Ollama
    # refuses or serves otherwise than asked.
    problems = grammar.check_text(text, out_dir)
    if problems:
        raise ModelfileRenderError("the Modelfile would not work:\n" + "\n".join(map(str, problems)))
    parsed = grammar.parse(text)  # the writer's own round trip through Ollama's parser
    if parsed.first("template") != go_chat.writer_template(fmt) or parsed.first("system") != system:
        raise ModelfileRenderError("the TEMPLATE or SYSTEM did not survive Ollama's parser unchanged")
    for key, values in wanted.parameters.items():
        if parsed.parameters.get(key, [])[-len(values) :] != values:
            raise ModelfileRenderError(f"--param {key}: the value did not survive Ollama's parser unchanged")
    # A base whose chat template Ollama would prefer: written all the same (OLLAMA_GO_TEMPLATE=1 on the
    # server keeps the TEMPLATE), and said.
    problems = [grammar.Problem("warning", p.line, p.message) for p in selection.check(parsed, out_dir)]
    return atomic.write_text(out, text), problems


def _relative(path: Path, start: Path) -> str:
    rel = os.path.relpath(path.resolve(), start)
    return rel if rel.startswith("..") else f"./{rel}"
