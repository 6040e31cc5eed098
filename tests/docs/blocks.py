"""The documentation's command blocks, read as a shell reads them, and checked against the code.

A block is a fenced ```bash, ```console or ```sh block of a page in docs/ (or of README.md and
CONTRIBUTING.md). A line `<!-- tested -->` right before the fence marks a block the tests run as written
(docs/getting-started.md); every block's `story-pipeline`, `story-bot` and `story-demo` lines are checked
against the typer apps (every verb and every flag they name exists), its `make` lines against the
Makefile's targets, and its `python benchmarks/NAME.py` (and scripts/) lines against the script's own flags.
"""

from __future__ import annotations

import importlib
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHELL = ("bash", "console", "sh", "shell")
TESTED = "<!-- tested -->"
TOOLS = {"story-pipeline": "pipeline.cli", "story-bot": "bot.cli", "story-demo": "demo.cli"}
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
_OPERATORS = {"&&", "||", "|", ";", "&", "(", ")"}
_REDIRECTS = {">", ">>", "<", ">&", "&>", "2>", "2>&"}


def pages() -> list[Path]:
    return sorted((REPO / "docs").rglob("*.md")) + [REPO / "README.md", REPO / "CONTRIBUTING.md"]


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    tested: bool

    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"

    def commands(self) -> list[str]:
        """The block's commands: continuation lines joined, comment and blank lines left out."""
        out: list[str] = []
        pending = ""
        for raw in self.text.splitlines():
            line = pending + raw.strip()
            if line.endswith("\\"):
                pending = line[:-1].rstrip() + " "
                continue
            pending = ""
            if line and not line.startswith("#"):
                out.append(line.removeprefix("$ "))
        return out


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    found = []
    for m in _FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        line = text.count("\n", 0, m.start()) + 1
        found.append(Block(page, line, m.group(1), m.group(2), before == TESTED))
    return found


def shell_blocks() -> list[Block]:
    return [b for page in pages() for b in blocks(page) if b.lang in SHELL]


def simple_commands(command: str) -> Iterator[list[str]]:
    """Each simple command of a line (split at &&, |, ;, &), without its redirections and leading
    VAR=value assignments, as argv."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    argv: list[str] = []
    tokens = iter(lexer)
    for token in tokens:
        if token in _OPERATORS:
            if argv:
                yield argv
            argv = []
        elif token in _REDIRECTS:
            if argv and argv[-1].isdigit():
                argv.pop()  # the file descriptor of `2>&1`
            next(tokens, None)  # the redirection's target
        elif not argv and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", token):
            continue  # an environment assignment before the command
        else:
            argv.append(token)
    if argv:
        yield argv


# --- checks against the code ---------------------------------------------------------------------
@cache
def _root(tool: str):
    import typer

    return typer.main.get_command(importlib.import_module(TOOLS[tool]).app)


def _option(command, name: str):
    for param in command.params:
        if param.param_type_name == "option" and name in (*param.opts, *param.secondary_opts):
            return param
    return None


def cli_problems(argv: list[str]) -> list[str]:
    """What in `argv` (a story-* command line) does not exist in its typer app: verbs and flags."""
    tool, args = argv[0], argv[1:]
    command, path, problems = _root(tool), [tool], []
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if token == "--":
            break
        if token.startswith("-") and token != "-":
            name = token.split("=", 1)[0]
            if name == "--help":
                continue
            option = _option(command, name)
            if option is None:
                problems.append(f"`{' '.join(path)}` has no option {name}")
            elif not (option.is_flag or option.count) and "=" not in token:
                i += option.nargs  # its value
            continue
        subcommands = getattr(command, "commands", None)
        if subcommands is not None and token in subcommands:
            command = subcommands[token]
            path.append(token)
        elif subcommands is not None and not getattr(command, "invoke_without_command", False):
            problems.append(f"`{' '.join(path)}` has no verb {token!r} (it has {', '.join(subcommands)})")
            break
        # else: a positional argument
    return problems


@cache
def make_targets() -> frozenset[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return frozenset(re.findall(r"^([A-Za-z][\w-]*):", text, re.M))


def script_problems(argv: list[str]) -> list[str]:
    """`python benchmarks/NAME.py --flag ...` (or scripts/): the script exists and declares each flag."""
    script = next(a for a in argv if a.endswith(".py"))
    path = REPO / script
    if not path.is_file():
        return [f"no script {script}"]
    source = path.read_text(encoding="utf-8")
    flags = {a.split("=", 1)[0] for a in argv[argv.index(script) + 1 :] if a.startswith("--")}
    return [f"{script} has no option {f}" for f in sorted(flags) if f'"{f}"' not in source]


def problems(argv: list[str]) -> list[str] | None:
    """The problems of one simple command, or None when it is none of the kinds checked here."""
    if argv[0] in TOOLS:
        return cli_problems(argv)
    if argv[0] == "make":
        return [
            f"the Makefile has no target {t!r}" for t in argv[1:] if "=" not in t and t not in make_targets()
        ]
    if (
        argv[0].endswith(("python", "python3"))
        and len(argv) > 1
        and argv[1].startswith(("benchmarks/", "scripts/"))
    ):
        return script_problems(argv)
    return None
