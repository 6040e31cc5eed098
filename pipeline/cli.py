"""`story-pipeline`: one subcommand per pipeline step. Each capability folder registers its own verbs
from a light `commands` module; heavy libraries are imported only when a verb runs."""

from __future__ import annotations

import typer

from pipeline import demo, extras
from pipeline.data import commands as data_commands
from pipeline.evaluate import commands as evaluate_commands
from pipeline.export import commands as export_commands
from pipeline.feedback import commands as feedback_commands
from pipeline.modelfile import commands as modelfile_commands
from pipeline.models import commands as models_commands
from pipeline.train import commands as train_commands

app = typer.Typer(
    name="story-pipeline",
    help="Books and prompts to training rows, fine-tuning, GGUF export, Modelfiles, publishing, evaluation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# In the order of the pipeline: base models, data, training, export, Modelfile + publish, evaluation,
# feedback.
_STEPS = (
    models_commands,
    data_commands,
    train_commands,
    export_commands,
    modelfile_commands,
    evaluate_commands,
    feedback_commands,
)
for module in _STEPS:
    module.register(app)
demo.register(app)  # the whole chain, last


def main() -> None:
    try:
        app()
    except ModuleNotFoundError as e:  # an import no verb's declared extras cover: still say what to install
        extra = extras.extra_of(e.name or "")
        if extra is None:
            raise
        extras.fail(f"{e.name} is not installed (the {extra!r} extra): {extras.install_line(extra)}")
