"""`story-bot`: run the Discord bot, the terminal console, or sync slash commands."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="story-bot",
    help="Collaborative story continuation on Discord and in a terminal.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.command()
def prompt(context: str = typer.Argument(..., help="The story so far")) -> None:
    """Print the writer prompt the model receives for a context (the shared contract)."""
    from pipeline.prompt import render_prompt

    typer.echo(render_prompt(context), nl=False)


def main() -> None:
    app()
