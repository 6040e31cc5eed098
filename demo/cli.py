"""`story-demo -o DIR [--quick]`: the command line of the whole-chain demo, behind the same error
boundary as the other two tools."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from demo import chain
from plumbing import extras
from plumbing.boundary import DEBUG_HELP, boundary_group

app = typer.Typer(
    name="story-demo",
    add_completion=False,
    subcommand_metavar="",  # one command: no subcommands to name in the usage line
    pretty_exceptions_enable=False,
    cls=boundary_group("story-demo", extras.error_line),
)


@app.callback(invoke_without_command=True)
def _root(
    out: Annotated[
        Path, typer.Option("-o", "--output", help="Folder for every file of the run and report.md")
    ],
    quick: Annotated[
        bool, typer.Option("--quick", help="A tiny random student and tiny sizes: the chain in minutes")
    ] = False,
    samples: Annotated[
        int | None,
        typer.Option(
            "--samples",
            min=1,
            help="Outputs per held-out context and model that the panel judges (default: 2, --quick 1; "
            "4 tells the preference model from SFT more surely, for about 1.5 more minutes)",
        ),
    ] = None,
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """The whole chain on a CPU with the small real model, into one folder, ending with report.md."""
    from engines import smollm2

    try:
        chain.run_demo(out, quick, samples)
    except (chain.DemoError, smollm2.ModelMissing) as e:
        chain.console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from e


def main() -> None:
    app()
