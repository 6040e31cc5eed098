"""Modelfile grammar: parse like Ollama does, then find what `ollama create` refuses or silently misreads.

`scan` follows the state machine of Ollama's `parser/parser.go` rune by rune: a UTF-8 BOM is dropped and
UTF-16 with a BOM decoded; instructions are case-insensitive; values end at a newline unless quoted with
`"` or `\"\"\"` (a quoted value ends at the first line end where the trimmed text so far ends with the same
quote); `'` is no quote; there are no escapes; runes Go's strconv.IsPrint rejects are dropped, while the
spaces, tabs and line ends inside a value (a `\\r` included) are kept. Where Ollama stops at the first
error, `scan` notes it and reads on from the next line, so one run reports every problem.

`check` adds what the create step does (`Modelfile.CreateRequest`, `api.FormatParams`, the server's
model-name rule, `template.Parse`, semver for REQUIRES) and what makes Ollama serve something other than
the file seems to say. Each `Problem` has a line, a column, and a severity: "error" where `ollama create`
fails, "warning" where it succeeds but serves something else.
"""

from __future__ import annotations

import math
import os
import pwd
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from contract.modelfile import golang, gotemplate

INSTRUCTIONS = (
    "from",
    "license",
    "template",
    "system",
    "adapter",
    "draft",
    "renderer",
    "parser",
    "parameter",
    "message",
    "requires",
)
MESSAGE_ROLES = ("system", "user", "assistant")

# api.Options and api.Runner: json name -> kind, as FormatParams converts them (ints with ParseInt base
# 10 into 64 bits, floats with ParseFloat into 32 bits, bools with ParseBool, stop as a string list).
PARAMETERS: dict[str, str] = {
    "num_ctx": "int",
    "num_batch": "int",
    "num_gpu": "int",
    "main_gpu": "int",
    "use_mmap": "bool",
    "num_thread": "int",
    "draft_num_predict": "int",
    "num_keep": "int",
    "seed": "int",
    "num_predict": "int",
    "top_k": "int",
    "top_p": "float",
    "min_p": "float",
    "typical_p": "float",
    "repeat_last_n": "int",
    "temperature": "float",
    "repeat_penalty": "float",
    "presence_penalty": "float",
    "frequency_penalty": "float",
    "stop": "list",
}
DEPRECATED_PARAMETERS = (
    "penalize_newline",
    "low_vram",
    "f16_kv",
    "logits_all",
    "vocab_only",
    "use_mlock",
    "mirostat",
    "mirostat_tau",
    "mirostat_eta",
)

_NAMED = {
    "model",
    "license",
    "template",
    "system",
    "adapter",
    "draft",
    "renderer",
    "parser",
    "message",
    "requires",
}
_MULTILINE = ("template", "system", "license", "message")


class ModelfileError(ValueError):
    """What Ollama's parser would refuse, with the line it would name."""

    def __init__(self, message: str, line: int = 0, column: int = 0):
        super().__init__(f"line {line}: {message}" if line else message)
        self.line, self.column, self.message = line, column, message


@dataclass
class Problem:
    severity: str  # "error": `ollama create` fails; "warning": it succeeds but serves something else
    line: int  # 0: the file as a whole
    message: str
    column: int = 0

    def __str__(self) -> str:
        where = f"line {self.line}:{self.column}: " if self.line and self.column else ""
        where = where or (f"line {self.line}: " if self.line else "")
        return f"{self.severity}: {where}{self.message}"


@dataclass
class Command:
    name: str  # lower case; FROM is "model" and a PARAMETER is its parameter's name, as in Ollama
    args: str
    line: int  # where the instruction starts
    raw: str = ""  # the value as written (trimmed), quotes included
    column: int = 1
    # (line, column) of each character of the value (after the role of a MESSAGE)
    where: list[tuple[int, int]] = field(default_factory=list, repr=False)
    dropped: list[tuple[int, int, str]] = field(default_factory=list, repr=False)

    @property
    def value(self) -> str:
        """The value without a MESSAGE's `role: ` prefix."""
        return self.args.partition(": ")[2] if self.name == "message" else self.args

    def at(self, offset: int) -> tuple[int, int]:
        if self.where and 0 <= offset < len(self.where):
            return self.where[offset]
        return self.where[-1] if self.where else (self.line, self.column)


@dataclass
class Modelfile:
    commands: list[Command] = field(default_factory=list)

    def get(self, name: str) -> list[Command]:
        return [c for c in self.commands if c.name == name]

    def first(self, name: str) -> str | None:
        """The value Ollama keeps for a single-valued instruction: the last one."""
        found = self.get(name)
        return found[-1].args if found else None

    @property
    def parameters(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for c in self.commands:
            if c.name not in _NAMED:
                out.setdefault(c.name, []).append(c.args)
        return out


# --- The lexer: parser.ParseFile -----------------------------------------------------------------


def _is_alpha(ch: str) -> bool:
    return ("a" <= ch <= "z") or ("A" <= ch <= "Z")


def _unquote(s: str) -> tuple[str, bool, int]:
    """(value, ok, length of the opening quote), as parser.go's unquote."""
    if s.startswith('"""'):
        return (s[3:-3], True, 3) if len(s) >= 6 and s.endswith('"""') else ("", False, 3)
    if s.startswith('"'):
        return (s[1:-1], True, 1) if len(s) >= 2 and s.endswith('"') else ("", False, 1)
    return s, True, 0


class _Scanner:
    def __init__(self) -> None:
        self.mf = Modelfile()
        self.problems: list[Problem] = []
        self.state = "nil"
        self.buf: list[str] = []
        self.pos: list[tuple[int, int]] = []  # (line, col) of each buffered char
        self.name, self.role = "", ""
        self.start = (1, 1)  # where the current instruction starts
        self.dropped: list[tuple[int, int, str]] = []

    def fail(self, line: int, col: int, message: str) -> None:
        self.problems.append(Problem("error", line, message, col))
        self.state, self.buf, self.pos, self.role, self.dropped = "skip", [], [], "", []

    def run(self, text: str) -> None:
        line, col, prev = 1, 0, ""
        for ch in text:
            if prev == "\n" or (prev == "\r" and ch != "\n"):
                line, col = line + 1, 0
            col += 1
            prev = ch
            self.step(ch, line, col)
        self.finish()

    def step(self, ch: str, line: int, col: int) -> None:
        newline, space = ch in "\r\n", ch in " \t"
        state = self.state
        if state == "skip":  # after an error: read on from the next line
            if newline:
                self.state = "nil"
            return
        if state == "nil":
            if ch == "#":
                self.state = "comment"
            elif not (space or newline):
                self.state, self.buf, self.pos, self.start = "name", [], [], (line, col)
                self.keep(ch, line, col)
            return
        if state == "comment":
            if newline:
                self.state = "nil"
            return
        if state == "name":
            if _is_alpha(ch):
                self.keep(ch, line, col)
            elif space:
                self.end_name(line, col)
            else:
                word = "".join(self.buf)
                what = "a line end" if newline else repr(ch)
                self.fail(*self.start, _bad_name(word, what))
                if newline:
                    self.state = "nil"
            return
        if state in ("parameter", "message"):
            if _is_alpha(ch) or (state == "parameter" and (ch.isascii() and ch.isdigit() or ch == "_")):
                self.keep(ch, line, col)
            elif space:
                word = "".join(self.buf)
                if state == "parameter":
                    self.name = word
                elif word not in MESSAGE_ROLES:
                    self.fail(
                        line,
                        col - len(word),
                        f"message role {word!r} must be one of {', '.join(MESSAGE_ROLES)}",
                    )
                    return
                else:
                    self.role = word
                self.state, self.buf, self.pos, self.dropped = "value", [], [], []
            else:
                kind = "a parameter name" if state == "parameter" else "a message role"
                what = (
                    f"the line ends after {kind}, with no value"
                    if newline
                    else f"unexpected {ch!r} in {kind}"
                )
                self.fail(line, col, f"{what}: write {_usage(state)}")
                if newline:
                    self.state = "nil"
            return
        # value: only a line end where the quotes balance ends it; spaces never do
        if newline or space:
            if space or not self.closed():
                self.buf.append(ch)
                self.pos.append((line, col))
                return
            self.emit()
            self.state = "nil"
            return
        self.keep(ch, line, col)

    def closed(self) -> bool:
        """Whether the value so far, trimmed, is unquoted or closes its quote (parser.go's unquote)."""
        buf, n = self.buf, len(self.buf)
        i = 0
        while i < n and buf[i] in " \t\r\n":
            i += 1
        j = n
        while j > i and buf[j - 1] in " \t\r\n":
            j -= 1
        head = "".join(buf[i : i + 3])
        if head.startswith('"""'):
            return j - i >= 6 and "".join(buf[j - 3 : j]) == '"""'
        if head.startswith('"'):
            return j - i >= 2 and buf[j - 1] == '"'
        return True

    def keep(self, ch: str, line: int, col: int) -> None:
        if golang.is_print(ch):
            self.buf.append(ch)
            self.pos.append((line, col))
        else:  # Ollama writes only what strconv.IsPrint accepts
            self.dropped.append((line, col, ch))

    def end_name(self, line: int, col: int) -> None:
        word = "".join(self.buf)
        low = word.lower()
        if low not in INSTRUCTIONS:
            self.fail(*self.start, _bad_name(word, None))
            return
        self.name = "model" if low == "from" else low
        next_state = {"parameter": "parameter", "message": "message"}.get(low, "value")
        self.state, self.buf, self.pos = next_state, [], []
        if self.dropped:  # a dropped rune before the name: Ollama never says so
            self.warn_dropped(self.dropped, f"before {word.upper()}")
        self.dropped = []

    def emit(self) -> None:
        text = "".join(self.buf)
        trimmed = golang.trim_space(text)
        value, ok, quote = _unquote(trimmed)
        lead = len(text) - len(text.lstrip(" \t\r\n"))
        where = self.pos[lead + quote : lead + quote + len(value)]
        args = f"{self.role}: {value}" if self.role else value
        cmd = Command(self.name, args, self.start[0], trimmed, self.start[1], where, self.dropped)
        self.mf.commands.append(cmd)
        self.role, self.dropped = "", []

    def finish(self) -> None:
        if self.state == "value":
            trimmed = golang.trim_space("".join(self.buf))
            _, ok, quote = _unquote(trimmed)
            if not ok:
                lead = len(self.buf) - len("".join(self.buf).lstrip(" \t\r\n"))
                line, col = self.pos[lead] if lead < len(self.pos) else self.start
                q = '"""' if quote == 3 else '"'
                self.fail(
                    line,
                    col,
                    f"the {q} opened here is never closed, so the value runs to the end of "
                    f"the file (Ollama: unexpected EOF): end the value with {q} at the end of a line",
                )
                return
            self.emit()
        elif self.state in ("name", "parameter", "message"):
            self.fail(
                *self.start,
                f"the file ends inside an instruction that has no value yet: write {_usage(self.state)}",
            )

    def warn_dropped(self, dropped: list[tuple[int, int, str]], where: str) -> None:
        by_line: dict[int, list[tuple[int, str]]] = {}
        for line, col, ch in dropped:
            by_line.setdefault(line, []).append((col, ch))
        for line, found in by_line.items():
            names = ", ".join(dict.fromkeys(_rune_name(ch) for _, ch in found))
            self.problems.append(
                Problem(
                    "warning",
                    line,
                    f"Ollama silently drops {names} {where} (Go's strconv.IsPrint rejects "
                    "it, by Unicode " + golang.UNICODE_VERSION + "): remove it, or use a plain space",
                    found[0][0],
                )
            )


def _usage(state: str) -> str:
    return {"parameter": "PARAMETER name value", "message": "MESSAGE role text"}.get(
        state, "INSTRUCTION value"
    )


def _bad_name(word: str, after: str | None) -> str:
    known = ", ".join(i.upper() for i in INSTRUCTIONS)
    if word.lower() in INSTRUCTIONS and after:
        return f"{word} is followed by {after}, not a space and a value: write {word.upper()} value"
    shown = f"{word}{'' if after in (None, 'a line end') else after.strip(chr(39))}"
    return f"unknown instruction {shown!r}: use one of {known} (or # for a comment)"


def _rune_name(ch: str) -> str:
    import unicodedata

    name = {"\x0b": "VERTICAL TAB", "\x0c": "FORM FEED", "\x00": "NUL", "\x7f": "DELETE"}.get(ch)
    return f"U+{ord(ch):04X} ({name or unicodedata.name(ch, 'unassigned')})"


def scan(text: str) -> tuple[Modelfile, list[Problem]]:
    """Parse Modelfile text as Ollama does, going on after each error; (commands, parse problems)."""
    s = _Scanner()
    s.run(text.removeprefix("\ufeff"))  # text that still has the UTF-8 BOM Ollama's decoder drops
    for c in s.mf.commands:
        if c.dropped:
            s.warn_dropped(c.dropped, f"from the {_label(c)} value")
    if not s.mf.get("model"):
        s.problems.append(Problem("error", 0, "no FROM line: a Modelfile must say which model it builds on"))
    s.problems.sort(key=lambda p: (p.line, p.column))
    return s.mf, s.problems


def parse(text: str) -> Modelfile:
    """Parse Modelfile text exactly as Ollama would; raise ModelfileError where it would fail."""
    mf, problems = scan(text)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise ModelfileError(errors[0].message, errors[0].line, errors[0].column)
    return mf


def read(path: Path) -> str:
    """A Modelfile's text, decoded as Ollama decodes it (BOM override, U+FFFD for bad bytes)."""
    return golang.decode_modelfile(Path(path).read_bytes())


def _label(c: Command) -> str:
    return "FROM" if c.name == "model" else c.name.upper() if c.name in _NAMED else f"PARAMETER {c.name}"


# --- The create step ------------------------------------------------------------------------------


def check_text(text: str, base_dir: Path | None = None) -> list[Problem]:
    """All problems Ollama would raise or silently cause for this Modelfile text."""
    mf, problems = scan(text)
    return sorted(problems + check(mf, base_dir or Path.cwd()), key=lambda p: (p.line, p.column))


def check_file(path: Path) -> list[Problem]:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return [Problem("error", 0, f"cannot read {path}: {e.strerror or e}")]
    problems = check_text(golang.decode_modelfile(data), Path(path).resolve().parent)
    if (before := golang.first_invalid(data)) is not None:
        line = before.count("\n") + 1
        col = len(before) - (before.rfind("\n") + 1) + 1
        message = "bytes that are not valid text in the file's encoding: Ollama reads each as U+FFFD"
        problems.append(Problem("warning", line, message, col))
    return sorted(problems, key=lambda p: (p.line, p.column))


def check(mf: Modelfile, base_dir: Path) -> list[Problem]:
    """What Modelfile.CreateRequest and the server's create step do with the parsed commands."""
    problems: list[Problem] = []

    def add(severity: str, c: Command, message: str, offset: int | None = None) -> None:
        line, col = c.at(offset) if offset is not None else (c.line, c.column)
        problems.append(Problem(severity, line, message, col))

    for name, cmds in (
        ("FROM", mf.get("model")),
        ("ADAPTER", mf.get("adapter")),
        ("TEMPLATE", mf.get("template")),
        ("SYSTEM", mf.get("system")),
    ):
        for c in cmds[:-1]:
            add(
                "warning",
                c,
                f"more than one {name}: Ollama silently keeps only the last one "
                f"(line {cmds[-1].line}); keep one {name} line",
            )
    for c in mf.commands:
        _check_value_shape(c, add)
        if c.name in _NAMED:
            continue
        if c.name in DEPRECATED_PARAMETERS:
            add("warning", c, f"parameter {c.name!r} is deprecated: Ollama ignores it")
        elif c.name not in PARAMETERS:
            hint = " (PARAMETER is followed by two spaces)" if not c.name else ""
            add(
                "error",
                c,
                f"unknown parameter {c.name!r}{hint}: Ollama refuses it; known: {', '.join(PARAMETERS)}",
            )
        else:
            for severity, message in value_problems(c.name, c.args):
                add(severity, c, message, 0)
    for name, values in mf.parameters.items():
        cmds = [c for c in mf.commands if c.name == name]
        if PARAMETERS.get(name) not in (None, "list") and len(values) > 1:
            for c in cmds[:-1]:
                add("warning", c, f"parameter {name} is set more than once: Ollama keeps only the last value")
    for c in mf.get("requires"):
        version = c.args if c.args.startswith("v") else "v" + c.args
        if not golang.semver_valid(version):
            add(
                "error",
                c,
                f"REQUIRES {c.args!r} is not a semantic version: write one like 0.14.0 "
                "(Ollama: requires must be a valid semver)",
            )
    problems += _check_template(mf)
    problems += _check_paths(mf, base_dir)
    return problems


def _check_value_shape(c: Command, add) -> None:
    value = c.value
    if c.name not in _MULTILINE and ("\n" in value or "\r" in value):
        add(
            "warning",
            c,
            "the value spans several lines: its quote is not closed at the end of its line, so "
            "Ollama read the following lines into it; close the quote on the same line",
        )
    elif c.name != "template" and _INSTRUCTION_LINE_RE.search(value):
        add(
            "warning",
            c,
            "the value holds lines that look like instructions: an earlier quote was closed "
            "too late, so Ollama read them into this value",
        )
    if len(c.raw) >= 2 and c.raw[0] == c.raw[-1] == "'":  # written with ' as if it were a quote
        add(
            "warning",
            c,
            '\' is not a quote in a Modelfile: Ollama keeps both \' in the value; use " or """ to quote it',
        )
    if "\r" in value and c.name in _MULTILINE:
        add(
            "warning",
            c,
            f"the {_label(c)} keeps its \\r\\n line ends as written (Ollama does not "
            "normalise them), so the served bytes differ from the same file saved with \\n line ends",
        )


_INSTRUCTION_LINE_RE = re.compile(
    r"(?im)^\s*(from|parameter|template|system|adapter|message|license|draft|requires|renderer|parser)\s"
)


def value_problems(name: str, value: str) -> list[tuple[str, str]]:
    """(severity, message) for a parameter value, read as api.FormatParams and the create step read it."""
    kind = PARAMETERS[name]
    shown = repr(value)
    try:
        if kind == "int":
            n = golang.parse_int(value)
            if float(n) != n:
                return [
                    (
                        "warning",
                        f"parameter {name}: {n} does not survive the JSON number Ollama's "
                        f"create step passes it through; Ollama stores {int(float(n))}",
                    )
                ]
        elif kind == "float":
            x = golang.parse_float(value, 32)
            if not math.isfinite(x):
                return [
                    (
                        "error",
                        f"parameter {name}: {shown} reads as {x}, which Ollama cannot store "
                        "(json: unsupported value); write a finite number",
                    )
                ]
            if "_" in value:
                return [
                    (
                        "warning",
                        f"parameter {name}: Go reads {shown} as {golang.shortest_float32(x)}; "
                        "write the number without _",
                    )
                ]
            if x == 0 and any(d in "123456789abcdefABCDEF" for d in value.split("e")[0].split("p")[0]):
                return [
                    (
                        "warning",
                        f"parameter {name}: {shown} is below the smallest float32 and Ollama stores 0",
                    )
                ]
        elif kind == "bool":
            golang.parse_bool(value)
    except golang.GoRangeError:
        what = "a 64-bit integer" if kind == "int" else "a 32-bit float (about ±3.4e38)"
        return [("error", f"parameter {name}: {shown} is out of range for {what}, so Ollama refuses it")]
    except golang.GoSyntaxError:
        return [("error", f"parameter {name}: {shown} {_syntax_hint(kind, value)}")]
    return []


def _syntax_hint(kind: str, value: str) -> str:
    if kind == "int":
        hint = "without _ " if "_" in value else ""
        hint += "in ASCII digits " if any(not c.isascii() for c in value) else ""
        return f"is not an integer as Go's strconv.ParseInt reads it: write it {hint}like 4096".replace(
            "  ", " "
        )
    if kind == "float":
        return "is not a number as Go's strconv.ParseFloat reads it: write it like 0.7"
    return "is not a boolean as Go's strconv.ParseBool reads it: write true or false"


def type_error(kind: str, value: str) -> str | None:
    """The first problem with a value of this kind, or None (the writer's check of --param values)."""
    name = next(n for n, k in PARAMETERS.items() if k == kind)
    found = value_problems(name, value)
    return found[0][1].split(": ", 1)[1] if found else None


def typed_parameters(mf: Modelfile) -> dict[str, object]:
    """The parameters as Ollama stores them: FormatParams' types, then the JSON the create request is
    (float32 at its shortest decimal, integers through a float64); the last value wins except for stop."""
    out: dict[str, object] = {}
    for name, values in mf.parameters.items():
        kind = PARAMETERS.get(name)
        if kind is None:
            continue
        if kind == "list":
            out[name] = list(values)
        elif kind == "int":
            out[name] = int(float(golang.parse_int(values[-1])))
        elif kind == "float":
            out[name] = golang.shortest_float32(golang.parse_float(values[-1], 32))
        else:
            out[name] = golang.parse_bool(values[-1])
    return out


def request(mf: Modelfile) -> dict[str, object]:
    """What Modelfile.CreateRequest sends (paths instead of digests), for a file `check` passes."""
    out: dict[str, object] = {}
    licenses: list[str] = []  # each list enters `out` at its first entry, where Ollama's JSON has it
    messages: list[dict[str, str]] = []
    for c in mf.commands:
        if c.name in ("template", "system", "renderer", "parser", "adapter"):
            out[c.name] = c.args
        elif c.name == "model":
            out["from"] = c.args
        elif c.name == "draft":
            out["draft"] = c.args
        elif c.name == "requires":
            out["requires"] = c.args.removeprefix("v")
        elif c.name == "license":
            out.setdefault("license", licenses)
            licenses.append(c.args)
        elif c.name == "message":
            role, _, content = c.args.partition(": ")
            out.setdefault("messages", messages)
            messages.append({"role": role, "content": content})
    if params := typed_parameters(mf):
        out["parameters"] = params
    return out


def _check_template(mf: Modelfile) -> list[Problem]:
    problems: list[Problem] = []
    templates = mf.get("template")
    for c in templates:
        if c.args == "":
            problems.append(
                Problem(
                    "warning",
                    c.line,
                    "an empty TEMPLATE is ignored: Ollama keeps the template of the FROM model",
                    c.column,
                )
            )
            continue
        try:
            tree = gotemplate.parse(c.args)
            for node in tree.walk():
                if node.kind == "template" and node.value not in tree.templates:
                    line, col = c.at(node.pos)
                    message = (
                        f'TEMPLATE calls {{{{template "{node.value}"}}}}, which it never defines: Ollama '
                        "accepts it, then fails every request that renders it; define it or drop the call"
                    )
                    problems.append(Problem("warning", line, message, col))
        except gotemplate.TemplateParseError as e:
            line, col = c.at(e.offset)
            problems.append(
                Problem(
                    "error",
                    line,
                    f"TEMPLATE is not a Go template Ollama accepts: {e} (Ollama: template error)",
                    col,
                )
            )
    for c in mf.get("system"):
        if c.args == "":
            problems.append(
                Problem(
                    "warning",
                    c.line,
                    "an empty SYSTEM is ignored: Ollama keeps the system prompt of the FROM model",
                    c.column,
                )
            )
    for c in mf.get("renderer"):
        if templates:
            problems.append(
                Problem(
                    "warning",
                    c.line,
                    f"RENDERER {c.args}: Ollama renders chats with its "
                    f"built-in {c.args!r} renderer, so the TEMPLATE (line {templates[-1].line}) "
                    "is not used for them; drop one of the two",
                    c.column,
                )
            )
    for c in mf.get("parser"):
        problems.append(
            Problem(
                "warning",
                c.line,
                f"PARSER {c.args}: Ollama splits the model's output with "
                f"its built-in {c.args!r} parser and never falls back to the GGUF's chat "
                "template; Ollama does not check the name at create time",
                c.column,
            )
        )
    return problems


# --- FROM, ADAPTER, DRAFT: files or model names ---------------------------------------------------

_LOCAL_PATH_RE = re.compile(r"^(\.{1,2}[/\\]|[/\\~]|[A-Za-z]:[/\\])|\.(gguf|bin|safetensors)$", re.I)


class _PathError(Exception):
    pass


def expand_path(value: str, base_dir: Path) -> Path:
    """parser.expandPath: absolute as is, ~ and ~user to home folders, anything else joined to the
    Modelfile's folder, then cleaned (a lexical `..`, as Go's filepath.Join does)."""
    if value.startswith(("/", "\\")):
        return Path(os.path.abspath(value))
    if value.startswith("~"):
        user, _, rest = value[1:].partition("/")
        try:
            home = os.path.expanduser("~") if not user else pwd.getpwnam(user).pw_dir
        except KeyError as exc:
            raise _PathError(f"failed to find user {user!r}") from exc
        return Path(os.path.normpath(os.path.join(home, rest)))
    return Path(os.path.abspath(os.path.join(base_dir, value)))


def _check_paths(mf: Modelfile, base_dir: Path) -> list[Problem]:
    from contract.modelfile import inspect as inspect_mod

    problems: list[Problem] = []
    err = lambda c, msg: problems.append(Problem("error", c.line, msg, c.column))  # noqa: E731
    base_arch, remote, model_paths = None, False, []
    for c in mf.get("model"):
        try:
            path = expand_path(c.args, base_dir)
        except _PathError as e:
            err(c, f"FROM {c.args}: {e}")
            continue
        try:
            os.stat(path)
        except FileNotFoundError:  # Go's os.ErrNotExist: the value is a model name
            pass
        except OSError as e:
            err(c, f"FROM {c.args}: {e.strerror} ({path})")
            continue
        else:
            model_paths.append(path.resolve())
            if path.is_dir() and not _has_model_files(path):
                what = (
                    "an empty FROM stands for the Modelfile's own folder, and" if not c.args else "the folder"
                )
                err(
                    c,
                    f"FROM {c.args or '(empty)'}: {what} {path} holds no model files Ollama takes "
                    "(*.safetensors, *.gguf, *.bin, *.pth), so Ollama refuses it",
                )
            elif not c.args:
                problems.append(
                    Problem(
                        "warning",
                        c.line,
                        f"an empty FROM stands for the Modelfile's own "
                        f"folder {path}: Ollama builds the model from the files in it",
                        c.column,
                    )
                )
            else:
                base_arch = inspect_mod.architecture_of(path)
            continue
        if message := model_name_error(c.args):
            if "#" in c.args:
                message += "; a # starts a comment only at the start of a line"
            hint = (
                " (no such file either, so Ollama reads it as a model name)"
                if _LOCAL_PATH_RE.search(c.args)
                else ""
            )
            err(c, f"FROM {c.args!r}{hint}: {message}")
            continue
        if _LOCAL_PATH_RE.search(c.args):
            err(
                c,
                f"FROM {c.args}: no such file ({path}); Ollama would take it for a model name and try to "
                "pull it",
            )
            continue
        remote = _is_cloud(c.args)
        base_arch = inspect_mod.architecture_of_name(c.args)
    for c, path in _local_files(mf, "draft", base_dir, err, "; a DRAFT must be a local model file or folder"):
        if path.resolve() in model_paths:
            err(c, f"DRAFT {c.args}: the same file as FROM; a DRAFT must be another, smaller model")
        elif remote:
            err(c, f"DRAFT {c.args}: DRAFT cannot be used with a cloud model in FROM")
    for c, path in _local_files(mf, "adapter", base_dir, err):
        if remote:
            problems.append(
                Problem(
                    "warning",
                    c.line,
                    f"ADAPTER {c.args}: FROM is a cloud model, and Ollama ignores adapters for those",
                    c.column,
                )
            )
            continue
        try:
            arch = inspect_mod.adapter_architecture(path)
        except inspect_mod.NotAnAdapterError as e:
            err(c, f"ADAPTER {c.args}: {e}")
            continue
        if base_arch and arch and arch != base_arch:
            err(
                c,
                f"ADAPTER {c.args} is for the {arch} architecture but FROM is {base_arch}: use the base "
                "the adapter was trained from",
            )
    return problems


def _local_files(
    mf: Modelfile, name: str, base_dir: Path, err: Callable[[Command, str], None], hint: str = ""
) -> Iterator[tuple[Command, Path]]:
    """Each DRAFT or ADAPTER with the path it names; one that cannot be expanded or does not exist is
    reported through err and left out."""
    for c in mf.get(name):
        try:
            path = expand_path(c.args, base_dir)
        except _PathError as e:
            err(c, f"{name.upper()} {c.args}: {e}")
            continue
        if not path.exists():
            err(c, f"{name.upper()} {c.args}: no such file ({path}){hint}")
            continue
        yield c, path


def _has_model_files(path: Path) -> bool:
    patterns = (
        "model*.safetensors",
        "consolidated*.safetensors",
        "pytorch_model*.bin",
        "consolidated*.pth",
        "*.gguf",
        "*.bin",
    )
    return any(any(path.glob(p)) for p in patterns)


def _is_cloud(value: str) -> bool:
    suffix = value.rpartition(":")[2].strip().lower() if ":" in value else ""
    return suffix == "cloud" or ("/" not in suffix and suffix.endswith("-cloud"))


def model_name_error(value: str) -> str | None:
    """Why the server refuses this FROM as a model name (modelref.ParseRef, then model.ParseName and
    IsValid: host/namespace/model:tag, ASCII letters, digits, _ - and ., lengths), or None."""
    raw = golang.trim_space(value)
    if not raw:
        return "an empty FROM: name a model or a file"
    base, explicit = _strip_source(raw)
    if explicit and _strip_source(base)[1]:
        return "use either :local or :cloud, not both"
    tag = ""
    if base.rfind(":") > base.rfind("/"):
        base, tag = base.rsplit(":", 1)
        tag = tag or "!MISSING!"
    parts = base.rsplit("/", 2)
    if len(parts) > 1 and any(p == "" for p in parts):
        return "an empty part between / separators: write namespace/model:tag"
    model = parts[-1]
    namespace = parts[-2] if len(parts) >= 2 else "library"
    host = parts[-3].split("://", 1)[-1] if len(parts) == 3 else "registry.ollama.ai"
    for kind, part, limit in (
        ("host", host, 350),
        ("namespace", namespace, 80),
        ("model", model, 80),
        ("tag", tag or "latest", 80),
    ):
        if part == "!MISSING!":
            return f"the {kind} is empty"
        if not 1 <= len(part.encode()) <= limit:
            return f"the {kind} {part!r} must be 1 to {limit} bytes long"
        if not (part[0].isascii() and (part[0].isalnum() or part[0] == "_")):
            return f"the {kind} {part!r} must start with an ASCII letter, digit or _ (invalid model name)"
        allowed = "_-" + ("" if kind == "namespace" else ".") + (":" if kind == "host" else "")
        bad = [ch for ch in part if not (ch.isascii() and (ch.isalnum() or ch in allowed))]
        if bad:
            return (
                f"the {kind} {part!r} holds {bad[0]!r}; a model name takes only ASCII letters, digits and "
                f"{' '.join(allowed)} (Ollama: invalid model name)"
            )
    return None


def _strip_source(raw: str) -> tuple[str, bool]:
    """modelref's :cloud / :local / -cloud suffix: (the name without it, whether there was one)."""
    i = raw.rfind(":")
    if i < 0:
        return raw, False
    suffix_raw = raw[i + 1 :].strip()
    suffix = suffix_raw.lower()
    if suffix in ("cloud", "local"):
        return raw[:i], True
    if "/" not in suffix_raw and suffix.endswith("-cloud"):
        return raw[: i + 1] + suffix_raw[: -len("-cloud")], True
    return raw, False
