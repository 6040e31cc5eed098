"""Fields an operator may set, declared once where they are used. Pure: no pydantic here.

A frozen dataclass of the core (Limits, the backends' Timeouts) marks a field with :func:`setting`: its
default stays the field's default, and its help and range ride along as the field's metadata.
bot/config.py makes each such field a bot setting (environment variable, TOML key, range check) and
builds the dataclass back from the settings by name; docs/configuration.md is generated from those
settings. So a new setting is one field here, and nothing else restates its default or help.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import MISSING, dataclass
from typing import Any

_KEY = "setting"


@dataclass(frozen=True)
class Setting:
    """How a field is offered as a bot setting."""

    help: str  # the setting's help: docs/configuration.md shows it
    name: str = ""  # the setting's name where it is not the field's (kept: operators' files use it)
    gt: float | None = None  # the range a value must be in (the core trusts what it is given)
    ge: float | None = None


def setting(
    default: Any = MISSING,
    *,
    help: str,
    name: str = "",
    gt: float | None = None,
    ge: float | None = None,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A dataclass field with `default` (or `factory`) that the operator may set as the setting `name`
    (default: the field's name), within `gt`/`ge`."""
    meta = {_KEY: Setting(help, name, gt, ge)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def declared(kind: type) -> Iterator[tuple[str, dataclasses.Field, Setting]]:
    """The fields of the dataclass `kind` that are settings: each setting's name, field and declaration."""
    for field in dataclasses.fields(kind):
        if (declaration := field.metadata.get(_KEY)) is not None:
            yield declaration.name or field.name, field, declaration
