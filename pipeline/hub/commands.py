"""`story-pipeline hub card` and `hub push`: a finished run to a Hugging Face Hub repository."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from pipeline.flags import fail
from plumbing.atomic import check_output
from plumbing.extras import needs

console = Console(stderr=True, soft_wrap=True)
app = typer.Typer(help="Publish a run to the Hugging Face Hub: the adapter, GGUF files and a model card.")

Run = Annotated[Path, typer.Argument(help="The run folder (-o of `story-pipeline train`)", file_okay=False)]
Repo = Annotated[str, typer.Option("--repo", help="The Hub repository: you/model-name")]
BaseModel = Annotated[
    str | None, typer.Option(help="The base's Hub id (needed when the run trained on a local folder)")
]
License = Annotated[str | None, typer.Option(help="License id (default: the one the base's card declares)")]
Books = Annotated[
    list[str] | None,
    typer.Option("--book", help="A Gutenberg book trained on: its title or .txt (repeatable)"),
]
WritingPrompts = Annotated[
    str | None,
    typer.Option(help="The Writing Prompts dataset used, as a Hub id (e.g. euclaise/writingprompts)"),
]
Teacher = Annotated[
    str | None, typer.Option(help="The teacher that wrote the reasoning (e.g. deepseek-r1:14b)")
]
Evals = Annotated[
    list[Path] | None,
    typer.Option(
        "--eval", help="An evaluation output folder or file to put in the card (repeatable)", exists=True
    ),
]
OllamaName = Annotated[str | None, typer.Option(help="Its name on an Ollama registry, for `ollama run`")]


def _inputs(repo, base_model, license, book, writing_prompts, teacher, evals, ollama_name):
    from pipeline.hub.card import CardInputs

    return CardInputs(
        repo, base_model, license, book or [], writing_prompts, teacher, evals or [], ollama_name
    )


@app.command("card")
@needs("hub card", "hub")
def card_command(
    run: Run,
    repo: Repo,
    out: Annotated[Path, typer.Option("-o", "--output", help="Where to write the card (README.md)")],
    base_model: BaseModel = None,
    license: License = None,
    book: Books = None,
    writing_prompts: WritingPrompts = None,
    teacher: Teacher = None,
    evals: Evals = None,
    ollama_name: OllamaName = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the output file")] = False,
) -> None:
    """Write the model card `hub push` would upload, to read it first."""
    from pipeline.hub import card
    from plumbing.atomic import write_text

    check_output(out, force)
    try:
        text = str(
            card.render(
                run, _inputs(repo, base_model, license, book, writing_prompts, teacher, evals, ollama_name)
            )
        )
    except card.CardError as e:
        fail(str(e))
    write_text(out, text)
    console.print(f"wrote {out}")


@app.command("push")
@needs("hub push", "hub")
def push_command(
    run: Run,
    repo: Repo,
    gguf: Annotated[
        list[Path] | None,
        typer.Option(
            help="A GGUF file to upload: the adapter, a merged or quantized model (repeatable)",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    modelfile: Annotated[
        Path | None, typer.Option(help="The Modelfile to upload (as Modelfile)", exists=True, dir_okay=False)
    ] = None,
    base_model: BaseModel = None,
    license: License = None,
    book: Books = None,
    writing_prompts: WritingPrompts = None,
    teacher: Teacher = None,
    evals: Evals = None,
    ollama_name: OllamaName = None,
    private: Annotated[bool, typer.Option("--private", help="Create the repository private")] = False,
    token: Annotated[
        str | None, typer.Option(help="A Hub write token (default: HF_TOKEN or the `hf auth login` one)")
    ] = None,
    endpoint: Annotated[
        str | None, typer.Option(help="The Hub's URL (default: HF_ENDPOINT or huggingface.co)")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace files of the repository that hold other content")
    ] = False,
) -> None:
    """Upload a run to a Hub repository in one commit: the PEFT adapter folder, the GGUF files and Modelfile
    given, and a model card; the repository's other files are left as they are."""
    from pipeline.hub import card, upload

    inputs = _inputs(repo, base_model, license, book, writing_prompts, teacher, evals, ollama_name)
    try:
        plan = upload.prepare(run, inputs, gguf or [], modelfile)
        hub = upload.Publisher(token, endpoint)
        console.print(f"signed in to {hub.api.endpoint} as {hub.whoami()}")
        url = hub.push(plan, private, force, say=lambda s: console.print(escape(s)))
    except (card.CardError, upload.HubError) as e:
        fail(str(e))
    console.print(f"[green]pushed[/green] {len(plan.files) + 1} files to {repo}: {url}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="hub")
