"""What every `story-pipeline` verb shares on the command line: the `--force` and `-o/--output` flags,
`fail` (one error line and an exit code), and flags generated from a typed options dataclass, so a
command's options, their defaults, help and ranges are declared once, in the dataclass.

A verb is then a thin command: it takes the options object and calls the module's `run(opts)`."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import MISSING, field, fields
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from contract.extras import error_line
from pipeline.ranges import ranged

F = TypeVar("F", bound=Callable[..., Any])


def force_option(help: str) -> Any:
    """The `--force` flag of a verb that refuses to replace its output without it:
    `Force = Annotated[bool, force_option("Replace ...")]`."""
    return typer.Option("--force", help=help)


def output_option(help: str) -> Any:
    """The `-o/--output` flag naming what a verb writes: `Output = Annotated[Path, output_option(...)]`."""
    return typer.Option("-o", "--output", help=help)


def fail(message: str, code: int = 2) -> NoReturn:
    """Stop the verb: `error: message` on stderr and exit `code` (2: the input or a flag is wrong)."""
    error_line(message)
    raise typer.Exit(code)


def option(default: Any, help: str, *flags: str, hidden: bool = False, **bounds: float) -> Any:
    """A field of an options dataclass with its flag: help, the flag names (when not --field-name),
    and its valid range (min=, max= inclusive; above=, below= exclusive), which the flag obeys."""
    meta = {"help": help, "flags": flags, "range": bounds, "hidden": hidden}
    return field(metadata=meta) if default is MISSING else field(default=default, metadata=meta)


def flag_parameters(cls: type, defaults: dict[str, Any]) -> list[inspect.Parameter]:
    """One keyword parameter per field of `cls`, annotated with its typer.Option; `defaults` replace
    the dataclass's defaults for one command."""
    hints = typing.get_type_hints(cls)
    params = []
    for f in fields(cls):
        default = defaults.get(f.name, f.default)
        meta = f.metadata
        extra = {"hidden": True} if meta["hidden"] else {}
        opt = typer.Option(*meta["flags"], **ranged(meta["help"], **meta["range"], **extra))
        params.append(
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=inspect.Parameter.empty if default is MISSING else default,
                annotation=Annotated[hints[f.name], opt],
            )
        )
    return params


def takes(cls: type, name: str, **defaults: Any) -> Callable[[F], F]:
    """Decorate a typer command whose parameter `name` is an options dataclass `cls`: typer sees one
    flag per field of `cls` in its place, and the command is called with `cls(**those values)`."""
    names = [f.name for f in fields(cls)]

    def wrap(fn: F) -> F:
        hints = typing.get_type_hints(fn, include_extras=True)
        params: list[inspect.Parameter] = []
        for p in inspect.signature(fn).parameters.values():
            if p.name == name:
                params += flag_parameters(cls, defaults)
            else:
                params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints[p.name]))

        @functools.wraps(fn)
        def command(**values: Any) -> Any:
            opts = cls(**{n: values.pop(n) for n in names})
            return fn(**values, **{name: opts})

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
        return command  # type: ignore[return-value]

    return wrap
