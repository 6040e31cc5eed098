"""Commands stay thin: every verb of `story-pipeline` and `story-bot` parses its flags and hands the work
on (to a `run(opts)`, or to helpers named for what they do), so its body fits on one screen.

MAX_BODY is 40 lines: a terminal or editor pane shows about 50, which leaves room for the signature and
the docstring above the body; the verbs were cut to at most 36 lines when this check came in. Counted:
the statements after the docstring, blank and comment lines between them included (what a reader
scrolls through); not the signature, whose flags are declarations rather than work."""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
from collections.abc import Callable, Iterator

import typer

from bot.cli import app as bot_app
from pipeline.cli import app as pipeline_app

MAX_BODY = 40


def commands(app: typer.Typer, prefix: str) -> Iterator[tuple[str, Callable]]:
    """(verb, function) for every command and callback of a typer app, its sub-apps included."""
    if app.registered_callback is not None and app.registered_callback.callback is not None:
        yield f"{prefix} (callback)", app.registered_callback.callback
    for command in app.registered_commands:
        assert command.callback is not None
        yield f"{prefix} {command.name or command.callback.__name__}", command.callback
    for group in app.registered_groups:
        assert group.typer_instance is not None
        yield from commands(group.typer_instance, f"{prefix} {group.name}")


def body_lines(fn: Callable) -> int:
    """Lines from the first statement after the docstring to the last, of the function as written
    (under the decorators that check extras or generate flags)."""
    source = textwrap.dedent(inspect.getsource(inspect.unwrap(fn)))
    node = ast.parse(source).body[0]
    assert isinstance(node, ast.FunctionDef), node
    body = node.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return 0 if not body else (body[-1].end_lineno or 0) - body[0].lineno + 1


def test_the_walk_finds_every_verb():
    verbs = {name for name, _ in commands(pipeline_app, "story-pipeline")}
    expected = ("reason", "distill", "train", "eval compare", "eval judge", "data gutenberg", "hub push")
    assert {f"story-pipeline {v}" for v in expected} <= verbs
    assert "story-bot run" in {name for name, _ in commands(bot_app, "story-bot")}


def test_the_count_skips_the_docstring_and_sees_through_decorators():
    def verb(x: int) -> int:
        """Help text, not work."""
        y = x + 1
        # a comment between statements counts: a reader scrolls through it

        return y

    @functools.wraps(verb)
    def checked(x: int) -> int:  # as plumbing.extras.needs wraps a verb
        return verb(x)

    assert body_lines(checked) == 4


def test_no_command_body_exceeds_a_screen():
    long = [
        f"{name}: {n} lines"
        for app, tool in ((pipeline_app, "story-pipeline"), (bot_app, "story-bot"))
        for name, fn in commands(app, tool)
        if (n := body_lines(fn)) > MAX_BODY
    ]
    assert not long, (
        f"command bodies over {MAX_BODY} lines (move the work into a run(opts) or named helpers): "
        + "; ".join(long)
    )
