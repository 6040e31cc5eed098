"""Valid ranges of numeric options, declared in the option itself: typer checks closed bounds (min=,
max=) and shows them in --help; open bounds (a rate above 0, a share below 1) and a refused value get
the same treatment: checked at parse time, before the verb does any work, and shown in the help.

`option` declares a field of an options dataclass with its help, flags and range; it stays free of
typer here so that a run's options (TrainOptions) import cheaply where no command line is parsed."""

from __future__ import annotations

from dataclasses import MISSING, field
from typing import Any


def option(default: Any, help: str, *flags: str, hidden: bool = False, **bounds: float) -> Any:
    """A field of an options dataclass with its flag: help, the flag names (when not --field-name),
    and its valid range (min=, max= inclusive; above=, below= exclusive; not_=, a value refused), which
    the flag obeys. `MISSING` as the default makes the field required."""
    meta = {"help": help, "flags": flags, "range": bounds, "hidden": hidden}
    return field(metadata=meta) if default is MISSING else field(default=default, metadata=meta)


def out_of_range(value, min=None, max=None, above=None, below=None, not_=None) -> str | None:
    """None when value is within the bounds (or not a number); else the valid range, in words."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    ok = (min is None or value >= min) and (max is None or value <= max) and (above is None or value > above)
    if ok and (below is None or value < below) and (not_ is None or value != not_):
        return None
    return "in the valid range " + describe(min, max, above, below, not_)


def describe(min=None, max=None, above=None, below=None, not_=None) -> str:
    bounds = (("x>=", min), ("x>", above), ("x<=", max), ("x<", below), ("x!=", not_))
    return " and ".join(f"{op}{b:g}" for op, b in bounds if b is not None)


def ranged(help: str, *, min=None, max=None, above=None, below=None, not_=None, **kw: Any) -> dict:
    """typer.Option keyword arguments for a number in [min, max], above `above`, below `below`, not `not_`."""
    import typer

    out: dict[str, Any] = {"help": help, **kw}
    if min is not None:
        out["min"] = min
    if max is not None:
        out["max"] = max
    if above is None and below is None and not_ is None:
        return out
    out["help"] = f"{help} ({describe(None, None, above, below, not_)})"

    def check(value):
        if (bad := out_of_range(value, min, max, above, below, not_)) is not None:
            raise typer.BadParameter(f"{value:g} is not {bad}")
        return value

    out["callback"] = check
    return out
