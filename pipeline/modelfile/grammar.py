"""Modelfile grammar: parse like Ollama does, then reject what it would reject or silently misread.

`parse` follows the state machine of Ollama's `parser/parser.go` rune by rune (instructions are
case-insensitive; values end at a newline unless quoted with `"` or `\"\"\"`; there are no escapes;
non-printable characters are dropped). `check` adds what only shows up when the model is created or
used: parameter names and types (`api.FormatParams`), FROM paths that would be taken for model names,
adapters that are not GGUF adapters or do not match the base, and values that swallowed later lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

INSTRUCTIONS = (
    "from", "license", "template", "system", "adapter", "draft", "renderer", "parser", "parameter",
    "message", "requires",
)  # fmt: skip
MESSAGE_ROLES = ("system", "user", "assistant")

# api.Options and api.Runner: json name -> kind, as FormatParams converts them.
PARAMETERS: dict[str, str] = {
    "num_ctx": "int", "num_batch": "int", "num_gpu": "int", "main_gpu": "int", "use_mmap": "bool",
    "num_thread": "int", "draft_num_predict": "int", "num_keep": "int", "seed": "int",
    "num_predict": "int", "top_k": "int", "top_p": "float", "min_p": "float", "typical_p": "float",
    "repeat_last_n": "int", "temperature": "float", "repeat_penalty": "float",
    "presence_penalty": "float", "frequency_penalty": "float", "stop": "list",
}  # fmt: skip
DEPRECATED_PARAMETERS = (
    "penalize_newline", "low_vram", "f16_kv", "logits_all", "vocab_only", "use_mlock", "mirostat",
    "mirostat_tau", "mirostat_eta",
)  # fmt: skip


class ModelfileError(ValueError):
    """What Ollama's parser would refuse, with the line it would name."""

    def __init__(self, message: str, line: int = 0):
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line


@dataclass
class Command:
    name: str  # lower case; FROM is "model" and a PARAMETER is its parameter's name, as in Ollama
    args: str
    line: int  # where the instruction starts
    raw: str = ""  # the value as written, quotes included


@dataclass
class Modelfile:
    commands: list[Command] = field(default_factory=list)

    def get(self, name: str) -> list[Command]:
        return [c for c in self.commands if c.name == name]

    def first(self, name: str) -> str | None:
        found = self.get(name)
        return found[-1].args if found else None

    @property
    def parameters(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for c in self.commands:
            if c.name not in _NAMED:
                out.setdefault(c.name, []).append(c.args)
        return out


_NAMED = {"model", "license", "template", "system", "adapter", "draft", "renderer", "parser",
          "message", "requires"}  # fmt: skip


def _is_alpha(ch: str) -> bool:
    return ("a" <= ch <= "z") or ("A" <= ch <= "Z")


def _unquote(s: str) -> tuple[str, bool]:
    if s.startswith('"""'):
        if len(s) >= 6 and s.endswith('"""'):
            return s[3:-3], True
        return "", False
    if s.startswith('"'):
        if len(s) >= 2 and s.endswith('"'):
            return s[1:-1], True
        return "", False
    return s, True


_GO_SPACE = " \t\n\v\f\r\x85\xa0"  # what Go's strings.TrimSpace removes (plus other Unicode spaces)


def _trim(s: str) -> str:
    return s.strip(_GO_SPACE + "\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
                   "\u200a\u2028\u2029\u202f\u205f\u3000")  # fmt: skip


def parse(text: str) -> Modelfile:
    """Parse Modelfile text exactly as Ollama would; raise ModelfileError where it would fail."""
    text = text.removeprefix("\ufeff")
    mf = Modelfile()
    state, buf, role, line, start_line = "nil", [], "", 1, 1
    name = ""

    for ch in text:
        if ch in "\r\n":
            line += 1
        nxt, keep = _next_state(state, ch, line)
        if nxt != state:
            value = "".join(buf)
            if state == "name":
                if value.lower() not in INSTRUCTIONS:
                    raise ModelfileError(
                        f"unknown instruction {value!r}: use one of "
                        f"{', '.join(i.upper() for i in INSTRUCTIONS)}",
                        line,
                    )
                low = value.lower()
                if low == "from":
                    name = "model"
                elif low == "parameter":
                    nxt = "parameter"
                elif low == "message":
                    nxt, name = "message", low
                else:
                    name = low
                start_line = line
            elif state == "parameter":
                name = value
            elif state == "message":
                if value not in MESSAGE_ROLES:
                    raise ModelfileError(
                        f"message role {value!r} must be one of {', '.join(MESSAGE_ROLES)}", line
                    )
                role = value
            elif state == "value":
                s, ok = _unquote(_trim(value))
                if not ok or ch in " \t":
                    buf.append(ch)
                    continue
                mf.commands.append(Command(name, f"{role}: {s}" if role else s, start_line, _trim(value)))
                role = ""
            buf, state = [], nxt
        if keep and ch.isprintable():
            buf.append(ch)

    if state == "value":
        s, ok = _unquote(_trim("".join(buf)))
        if not ok:
            raise ModelfileError(
                f"unexpected end of file: the quoted value that starts on line {start_line} is never "
                'closed; close it with the same quote (" or """) it opened with',
                start_line,
            )
        mf.commands.append(Command(name, f"{role}: {s}" if role else s, start_line, _trim("".join(buf))))
    elif state not in ("nil", "comment"):
        raise ModelfileError("unexpected end of file: an instruction has no value", line)
    if not mf.get("model"):
        raise ModelfileError("no FROM line: a Modelfile must say which model it builds on")
    return mf


def _next_state(state: str, ch: str, line: int) -> tuple[str, bool]:
    """(next state, whether ch is kept in the buffer), as parseRuneForState."""
    space, newline = ch in " \t", ch in "\r\n"
    if state == "nil":
        if ch == "#":
            return "comment", False
        if space or newline:
            return "nil", False
        return "name", True
    if state == "name":
        if _is_alpha(ch):
            return "name", True
        if space:
            return "value", False
        if newline:
            raise ModelfileError("an instruction has no value: write it as INSTRUCTION value", line - 1)
        raise ModelfileError(f"unexpected character {ch!r} in an instruction name", line)
    if state == "value":
        if newline or space:
            return "nil", True
        return "value", True
    if state == "parameter":
        if _is_alpha(ch) or ch.isdigit() or ch == "_":
            return "parameter", True
        if space:
            return "value", False
        raise ModelfileError(f"unexpected character {ch!r} in a parameter name", line)
    if state == "message":
        if _is_alpha(ch):
            return "message", True
        if space:
            return "value", False
        raise ModelfileError(f"unexpected character {ch!r} in a message role", line)
    if newline:  # comment
        return "nil", False
    return "comment", False


@dataclass
class Problem:
    severity: str  # "error" or "warning"
    line: int
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{self.severity}: {where}{self.message}"


_INSTRUCTION_LINE_RE = re.compile(r"(?im)^\s*(from|parameter|template|system|adapter|message|license)\s")
_LOCAL_PATH_RE = re.compile(r"^(\.{1,2}[/\\]|[/\\~]|[A-Za-z]:[/\\])|\.(gguf|bin|safetensors)$", re.I)


def check_text(text: str, base_dir: Path | None = None) -> list[Problem]:
    """All problems Ollama would raise or silently cause for this Modelfile text."""
    try:
        mf = parse(text)
    except ModelfileError as e:
        return [Problem("error", e.line, str(e).split(": ", 1)[1] if e.line else str(e))]
    return check(mf, base_dir or Path.cwd(), text)


def check_file(path: Path) -> list[Problem]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return [Problem("error", 0, f"cannot read {path}: {e}")]
    return check_text(text, Path(path).resolve().parent)


def check(mf: Modelfile, base_dir: Path, text: str = "") -> list[Problem]:
    problems: list[Problem] = []
    err = lambda c, msg: problems.append(Problem("error", c.line, msg))  # noqa: E731
    for name, cmds in (("FROM", mf.get("model")), ("ADAPTER", mf.get("adapter"))):
        for c in cmds[:-1]:
            err(c, f"more than one {name}: Ollama silently keeps only the last one; keep one {name} line")
    for c in mf.commands:
        _check_value(c, problems)
        if c.name in _NAMED:
            continue
        if c.name in DEPRECATED_PARAMETERS:
            problems.append(Problem("warning", c.line, f"parameter {c.name!r} is deprecated and ignored"))
        elif c.name not in PARAMETERS:
            err(c, f"unknown parameter {c.name!r}: Ollama refuses it; known: {', '.join(PARAMETERS)}")
        elif msg := type_error(PARAMETERS[c.name], c.args):
            err(c, f"parameter {c.name}: {msg}")
    for c in mf.get("requires"):
        if not re.fullmatch(r"v?\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", c.args):
            err(c, f"REQUIRES {c.args!r} is not a version like 0.14.0")
    problems += _check_paths(mf, base_dir)
    if text:
        problems += _dropped_characters(text)
    return problems


def type_error(kind: str, value: str) -> str | None:
    try:
        if kind == "int":
            int(value, 10)
        elif kind == "float":
            float(value)
        elif kind == "bool" and value.lower() not in ("1", "t", "true", "0", "f", "false"):
            return f"{value!r} is not a boolean (true or false)"
    except ValueError:
        return f"{value!r} is not {'an integer' if kind == 'int' else 'a number'}"
    return None


def _check_value(c: Command, problems: list[Problem]) -> None:
    if c.name in ("template", "system", "license", "message"):
        if '"""' in c.args:
            problems.append(
                Problem(
                    "error",
                    c.line,
                    'the value contains """, which a Modelfile cannot '
                    "quote (there are no escapes): remove it or write ''' instead",
                )
            )
    elif "\n" in c.args:
        problems.append(
            Problem(
                "error",
                c.line,
                "the value spans several lines: a quote is not closed "
                "where it should be, so later lines were swallowed into it",
            )
        )
    if c.name != "template" and _INSTRUCTION_LINE_RE.search(c.args):
        problems.append(
            Problem(
                "error",
                c.line,
                "the value contains what looks like further instructions:"
                " an earlier quote was closed too late, so they were swallowed into it",
            )
        )
    if c.raw.startswith('"') and not c.raw.startswith('"""') and '"' in c.raw[1:-1]:
        problems.append(Problem("warning", c.line, 'a "-quoted value contains " itself; use """ quotes'))


def _check_paths(mf: Modelfile, base_dir: Path) -> list[Problem]:
    from pipeline.modelfile import inspect as inspect_mod

    problems: list[Problem] = []
    base_arch = None
    for c in mf.get("model"):
        path = _expand(c.args, base_dir)
        if path.exists():
            base_arch = inspect_mod.architecture_of(path)
        elif _LOCAL_PATH_RE.search(c.args):
            problems.append(
                Problem(
                    "error",
                    c.line,
                    f"FROM {c.args}: no such file ({path}); Ollama would "
                    "silently take it for a model name and try to pull it",
                )
            )
        else:
            base_arch = inspect_mod.architecture_of_name(c.args)
    for c in mf.get("adapter"):
        path = _expand(c.args, base_dir)
        if not path.exists():
            problems.append(Problem("error", c.line, f"ADAPTER {c.args}: no such file ({path})"))
            continue
        try:
            arch = inspect_mod.adapter_architecture(path)
        except inspect_mod.NotAnAdapterError as e:
            problems.append(Problem("error", c.line, f"ADAPTER {c.args}: {e}"))
            continue
        if base_arch and arch and arch != base_arch:
            problems.append(
                Problem(
                    "error",
                    c.line,
                    f"ADAPTER {c.args} is for the {arch} architecture but "
                    f"FROM is {base_arch}: use the base the adapter was trained from",
                )
            )
    return problems


def _expand(value: str, base_dir: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base_dir / p


def _dropped_characters(text: str) -> list[Problem]:
    problems = []
    for n, line in enumerate(text.splitlines(), 1):
        bad = sorted({ch for ch in line if not ch.isprintable() and ch not in "\t"})
        if bad:
            names = ", ".join(f"U+{ord(ch):04X}" for ch in bad)
            problems.append(
                Problem(
                    "error",
                    n,
                    f"non-printable characters ({names}) that Ollama silently "
                    "drops: remove them or use plain spaces",
                )
            )
    return problems
