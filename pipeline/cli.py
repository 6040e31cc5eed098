"""`story-pipeline`: one subcommand per pipeline step. Each capability folder registers its own verbs
from a light `commands` module; heavy libraries are imported only when a verb runs."""

from __future__ import annotations

import typer

from pipeline.data import commands as data_commands
from pipeline.evaluate import commands as evaluate_commands
from pipeline.export import commands as export_commands
from pipeline.feedback import commands as feedback_commands
from pipeline.hub import commands as hub_commands
from pipeline.modelfile import commands as modelfile_commands
from pipeline.models import commands as models_commands
from pipeline.train import commands as train_commands
from plumbing import extras
from plumbing.boundary import DEBUG_HELP, boundary_group

app = typer.Typer(
    name="story-pipeline",
    help="Books and prompts to training rows, fine-tuning, GGUF export, Modelfiles, publishing, evaluation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=boundary_group("story-pipeline", extras.error_line),
)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP)) -> None:
    """Books and prompts to training rows, fine-tuning, GGUF export, Modelfiles, publishing, evaluation."""


# In the order of the pipeline: base models, data, training, export, Modelfile + publish, evaluation,
# the Hub, feedback.
_STEPS = (
    models_commands,
    data_commands,
    train_commands,
    export_commands,
    modelfile_commands,
    evaluate_commands,
    hub_commands,
    feedback_commands,
)
for module in _STEPS:
    module.register(app)


def main() -> None:
    app()
