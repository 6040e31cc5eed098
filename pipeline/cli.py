"""`story-pipeline`: one subcommand per pipeline step. Each capability folder registers its own verbs
from a light `commands` module; heavy libraries are imported only when a verb runs."""

from __future__ import annotations

import typer

from pipeline.evaluate import commands as evaluate_commands
from pipeline.modelfile import commands as modelfile_commands

app = typer.Typer(
    name="story-pipeline",
    help="Books and prompts to training rows, fine-tuning, GGUF export, Modelfiles, publishing, evaluation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

for module in (modelfile_commands, evaluate_commands):
    module.register(app)


def main() -> None:
    app()
