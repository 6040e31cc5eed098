"""What every `story-pipeline` verb shares on the command line: the `--force` and `-o/--output` flags,
`fail` (one error line and an exit code), and flags generated from a typed options dataclass, so a
command's options, their defaults, help and ranges are declared once, in the dataclass (with `option`,
which lives in the typer-free pipeline.ranges).

A verb is then a thin command: it takes the options object and calls the module's `run(opts)`."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from pipeline.ranges import option as option
from pipeline.ranges import ranged
from plumbing.extras import error_line

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


def flag_parameters(cls: type, defaults: dict[str, Any], elsewhere: str = "") -> list[inspect.Parameter]:
    """One keyword parameter per field of `cls`, annotated with its typer.Option; `defaults` replace
    the dataclass's defaults for one command. A tuple field is one comma-separated string flag (split
    back into a tuple when parsed). `elsewhere` (e.g. "here or in --config") says where a field
    without a default may be given instead: its flag is then optional (None), its help says so."""
    hints = typing.get_type_hints(cls)
    return [_flag(f, hints[f.name], defaults.get(f.name, f.default), elsewhere) for f in fields(cls)]


def _flag(f: Field, hint: Any, default: Any, elsewhere: str) -> inspect.Parameter:
    meta, text = f.metadata, f.metadata["help"]
    extra: dict[str, Any] = {"hidden": True} if meta["hidden"] else {}
    if typing.get_origin(hint) is tuple:
        hint, extra["callback"] = str, _split_commas
        default = ",".join(default) if isinstance(default, tuple) else default
    if default is MISSING and elsewhere:
        hint, default, text = hint | None, None, f"{text} (required: {elsewhere})"
    opt = typer.Option(*meta["flags"], **ranged(text, **meta["range"], **extra))
    default = inspect.Parameter.empty if default is MISSING else default
    return inspect.Parameter(
        f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[hint, opt]
    )


def _split_commas(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


def signed(fn: F, params: list[inspect.Parameter]) -> F:
    """`fn` as typer sees it: a command taking `params` (typer reads the signature and annotations)."""
    fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    fn.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    return fn


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

        return signed(command, params)  # type: ignore[return-value]

    return wrap
