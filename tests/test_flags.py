"""Flags made from an options dataclass (pipeline/flags.py): what `takes` gives a verb, and the hook
`train` uses for options that may come from a --config file instead of their flag."""

from __future__ import annotations

from dataclasses import MISSING, dataclass

import typer
from typer.testing import CliRunner

from pipeline.flags import flag_parameters, signed, takes
from pipeline.ranges import option


@dataclass
class Opts:
    name: str = option(MISSING, "Who", "-n", "--name")
    modules: tuple[str, ...] = option(("a", "b"), "Modules, comma-separated")
    steps: int = option(-1, "Steps (-1: all)", min=-1, not_=0)


def _app(command) -> typer.Typer:
    app = typer.Typer()
    app.command()(command)
    app.command("other")(lambda: None)  # two commands: typer then wants the command's name
    return app


def test_takes_builds_the_options_from_the_flags_a_tuple_from_one_comma_string():
    seen = []

    @takes(Opts, "opts", steps=3)
    def verb(opts: Opts) -> None:
        seen.append(opts)

    app = _app(verb)
    result = CliRunner().invoke(app, ["verb", "-n", "x", "--modules", " c, d,,e"])
    assert result.exit_code == 0, result.output
    assert seen == [Opts("x", ("c", "d", "e"), 3)]  # the command's default replaced the dataclass's
    assert CliRunner().invoke(app, ["verb", "-n", "x"]).exit_code == 0 and seen[-1].modules == ("a", "b")

    refused = CliRunner().invoke(app, ["verb", "-n", "x", "--steps", "0"])
    assert refused.exit_code == 2 and "x!=0" in refused.output and len(seen) == 2
    missing = CliRunner().invoke(app, ["verb"])
    assert missing.exit_code == 2 and "--name" in missing.output and len(seen) == 2


def test_a_field_without_default_given_elsewhere_is_an_optional_flag_that_says_so():
    seen = []

    def verb(**values) -> None:
        seen.append(values)

    signed(verb, flag_parameters(Opts, {}, elsewhere="here or in --config"))
    app = _app(verb)
    assert CliRunner().invoke(app, ["verb"]).exit_code == 0
    assert seen == [{"name": None, "modules": ("a", "b"), "steps": -1}]
    help_text = " ".join(CliRunner().invoke(app, ["verb", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "Who (required: here or in --config)" in help_text and "[default: a,b]" in help_text
