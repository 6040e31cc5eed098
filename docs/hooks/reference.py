"""MkDocs hook: the reference pages' tables, generated at build time from the code's own definitions.

A page asks for a table with a marker line: `<!-- generated: settings -->` puts there every bot setting
(bot/config.py's `Settings` fields, those it takes from the core's declarations included: name,
environment variables, type and range, default, help from the field's description);
`<!-- generated: cli story-pipeline -->` (or story-bot, story-demo) every command of that tool with its
usage, help and options, read from the typer app. Nothing here restates a default or a help text:
change the code and the site follows.
"""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

MARKER = re.compile(r"^<!-- generated: (settings|cli [a-z-]+) -->$", re.M)
APPS = {"story-pipeline": "pipeline.cli", "story-bot": "bot.cli", "story-demo": "demo.cli"}


def on_page_markdown(markdown: str, page, config, files) -> str:
    # The code documented is this checkout's; put here, not at import: mkdocs restores sys.path after
    # loading a hook, and an installed copy of the packages would be documented instead.
    if sys.path[:1] != [str(ROOT)]:
        sys.path.insert(0, str(ROOT))
    return MARKER.sub(lambda m: _generate(m.group(1)), markdown)


def _generate(what: str) -> str:
    if what == "settings":
        return settings_table()
    tool = what.split(" ", 1)[1]
    if tool not in APPS:
        raise ValueError(f"no command-line tool {tool!r}: one of {', '.join(APPS)}")
    return cli_reference(tool)


def _text(value: str) -> str:
    """Help text for a Markdown table cell: HTML escaped outside `code`, pipes escaped everywhere."""
    parts = value.split("`")
    parts = [p if i % 2 else html.escape(p, quote=False) for i, p in enumerate(parts)]
    return "`".join(parts).replace("|", "\\|").replace("\n", " ")


# --- the bot's settings ----------------------------------------------------------------------------
def settings_table(settings: type | None = None) -> str:
    """The table of `settings` (default: the bot's `Settings`)."""
    from pydantic import AliasChoices
    from pydantic_core import PydanticUndefined

    from bot.config import Settings

    table = settings or Settings
    prefix = table.model_config.get("env_prefix", "")
    rows = ["| setting | environment | type | default | what it does |", "|---|---|---|---|---|"]
    for name, field in table.model_fields.items():
        if not field.description:
            raise ValueError(f"bot/config.py: the setting {name!r} has no description (its help)")
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            env = [str(a) for a in alias.choices if a != name]
        else:
            env = [f"{prefix}{name}".upper()]
        if field.default_factory is not None:
            default = field.default_factory()  # type: ignore[call-arg]
        else:
            default = None if field.default is PydanticUndefined else field.default
        shown = "unset" if default in (None, [], {}) else f"`{default}`"
        names = "<br>".join(f"`{e}`" for e in env)
        cells = (f"`{name}`", names, _type(field), shown, _text(field.description))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def _type(field) -> str:
    text = re.sub(r"\b(typing|pathlib|pydantic(\.types)?)\.", "", str(field.annotation))
    text = text.replace("<class '", "").replace("'>", "").replace("Literal", "one of ")
    text = text.replace("SecretStr", "secret").replace(" | None", "")
    ranges = []
    for rule in field.metadata:
        for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            if getattr(rule, attr, None) is not None:
                ranges.append(f"{sign} {getattr(rule, attr)}")
    return _text(text) + ("" if not ranges else f" ({', '.join(ranges)})")


# --- the command-line tools ------------------------------------------------------------------------
def cli_reference(tool: str) -> str:
    import importlib

    import typer
    from typer import _click as click

    root = typer.main.get_command(importlib.import_module(APPS[tool]).app)
    out: list[str] = []

    def walk(command, ctx, path: str) -> None:
        subcommands = getattr(command, "commands", {})
        if not subcommands or getattr(command, "invoke_without_command", False):
            out.extend(_command(command, ctx, path))
        for name, sub in subcommands.items():
            if not sub.hidden:
                walk(sub, click.Context(sub, info_name=name, parent=ctx), f"{path} {name}")

    walk(root, click.Context(root, info_name=tool), tool)
    return "\n".join(out)


def _command(command, ctx, path: str) -> list[str]:
    lines = [f"### `{path}`", ""]
    usage = command.get_usage(ctx).removeprefix("Usage: ")
    lines += ["```text", usage, "```", ""]
    if command.help:
        lines += [_text(" ".join(command.help.split())), ""]
    params = [p.get_help_record(ctx) for p in command.get_params(ctx)]
    params = [p for p in params if p and p[0] != "--help"]
    if params:
        lines += ["| option | what it does |", "|---|---|"]
        lines += [f"| `{opts}` | {_text(help_)} |" for opts, help_ in params]
        lines.append("")
    return lines
