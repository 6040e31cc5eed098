"""`story-pipeline modelfile`, `modelfile check`, `publish` and `push`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TransferSpeedColumn

from contract.chat_template import UnknownFamilyError
from contract.modelfile import grammar
from pipeline.flags import fail
from pipeline.modelfile import render, selection
from plumbing.atomic import check_output

console = Console(stderr=True, soft_wrap=True)
app = typer.Typer(help="Write a writer Modelfile, or check Modelfiles against Ollama's grammar.")


@app.callback(invoke_without_command=True)
def modelfile(
    ctx: typer.Context,
    base: Annotated[
        str | None, typer.Option("--from", help="Base: an Ollama model name or a local GGUF/HF folder")
    ] = None,
    adapter: Annotated[Path | None, typer.Option(help="A GGUF LoRA adapter (from export-gguf)")] = None,
    system: Annotated[
        str | None, typer.Option(help="Text of the chat system turn (default: the base's own)")
    ] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="key=value, repeatable")] = None,
    num_ctx: Annotated[
        int, typer.Option(min=render.MIN_NUM_CTX, max=render.MAX_NUM_CTX, help="Context window in tokens")
    ] = render.DEFAULT_NUM_CTX,
    chat_template: Annotated[
        Path | None,
        typer.Option(
            help="The chat template the model was trained with, where neither the adapter nor FROM carries "
            "it: the base's Hugging Face folder, its tokenizer_config.json, or a .jinja file"
        ),
    ] = None,
    bos_token: Annotated[str, typer.Option(help="With a .jinja --chat-template: its BOS token")] = "",
    eos_token: Annotated[str, typer.Option(help="With a .jinja --chat-template: its EOS token")] = "",
    date: Annotated[
        str | None,
        typer.Option(help="With --chat-template: the date training pinned (YYYY-MM-DD; default today)"),
    ] = None,
    out: Annotated[Path | None, typer.Option("-o", "--output", help="Modelfile to write")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the Modelfile if it exists")] = False,
) -> None:
    """Write a Modelfile whose TEMPLATE wraps what the user types in the writer prompt."""
    if ctx.invoked_subcommand is not None:
        return
    if not base or not out:
        raise typer.BadParameter("give --from BASE and -o FILE (or use `modelfile check FILE...`)")
    check_output(out, force)
    try:
        given = render.template_file(chat_template, bos_token, eos_token, date) if chat_template else None
        path, problems = render.write(out, base, adapter, system, param, num_ctx, given)
    except (render.ModelfileRenderError, UnknownFamilyError, ValueError) as e:
        fail(str(e))
    for p in problems:
        console.print(f"[yellow]{escape(str(p))}[/yellow]")
    console.print(f"wrote {path}: ollama create writer -f {path} && ollama run writer")


@app.command("check")
def check(files: Annotated[list[Path], typer.Argument(help="Modelfiles to check")]) -> None:
    """Parse Modelfiles as Ollama does; exit 1 if `ollama create` would refuse any of them, or Ollama
    would set its TEMPLATE aside for the base's own chat template.

    Errors make `ollama create` fail (or the TEMPLATE go unused); warnings are what it accepts but serves
    otherwise than written.
    """
    failed = False
    for f in files:
        problems = grammar.check_file(f)
        problems += selection.check_file(f)  # would Ollama use this TEMPLATE at all?
        errors = sum(p.severity == "error" for p in problems)
        warnings = len(problems) - errors
        failed |= bool(errors)
        status = "[red]FAIL[/red]" if errors else "[yellow]ok[/yellow]" if warnings else "[green]ok[/green]"
        summary = f"{errors} error(s): ollama create fails" if errors else "ollama create accepts it"
        if warnings:
            summary += f"; {warnings} warning(s): Ollama serves something other than the file says"
        console.print(f"{status} {escape(str(f))}: {summary}", highlight=False, soft_wrap=True)
        for p in problems:
            where = f"{f}:{p.line}" + (f":{p.column}" if p.column else "") if p.line else str(f)
            colour = "red" if p.severity == "error" else "yellow"
            line = f"  {escape(where)}: [{colour}]{p.severity}[/{colour}]: {escape(p.message)}"
            console.print(line, highlight=False, soft_wrap=True)
    raise typer.Exit(1 if failed else 0)


def _model_name(value: str) -> str:
    """--name as Ollama's create takes it (the rule its FROM check follows), refused before any upload."""
    if value is not None and (problem := grammar.model_name_error(value)) is not None:
        raise typer.BadParameter(f"{value!r} is not a model name Ollama takes: {problem}")
    return value


Host = Annotated[str | None, typer.Option(help="Ollama server URL (default: OLLAMA_HOST or localhost)")]
Insecure = Annotated[
    bool, typer.Option("--insecure", help="With a push: allow a registry reached over plain http")
]


def publish(
    modelfile: Annotated[Path, typer.Option(help="The Modelfile to publish", exists=True, dir_okay=False)],
    name: Annotated[
        str, typer.Option(help="Model name on the server, e.g. writer:latest", callback=_model_name)
    ],
    host: Host = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a model of this name on the server")
    ] = False,
    push: Annotated[
        bool,
        typer.Option("--push", help="Then push it to its registry (the name needs a namespace: you/writer)"),
    ] = False,
    insecure: Insecure = False,
    quantize: Annotated[
        str | None,
        typer.Option(
            help="Quantize the model layer as the server creates it (Ollama's `create --quantize`: q8_0, "
            "q4_K_M, q4_K_S), from an F16, BF16 or F32 model such as an export-merged safetensors folder"
        ),
    ] = None,
) -> None:
    """Register the Modelfile's model with an Ollama server: upload local files as blobs, then create;
    with --push, the server then pushes it to the registry its name points to (ollama.com by default)."""
    from pipeline.modelfile import publish as pub

    try:
        if push and (problem := pub.push_name_error(name)) is not None:
            raise pub.PublishError(f"{name!r} cannot be pushed: {problem}")  # before anything is sent
        plan = pub.plan(modelfile, name, quantize)
        publisher = pub.Publisher(host)
        if not force and publisher.has_model(name):
            raise pub.PublishError(
                f"the server at {publisher.host} already has a model named {name!r}: pass --force to "
                "replace it, or choose another --name"
            )
        with _bars() as bars:

            def factory(path: Path):
                task = bars.add_task(f"hashing {path.name}", total=path.stat().st_size)
                return lambda n: bars.advance(task, n)

            publisher.publish(plan, on_status=lambda s: console.print(s), progress_factory=factory)
        console.print(f"[green]published[/green] {name} on {publisher.host}: ollama run {name}")
        if push:
            _push(publisher, name, insecure)
    except pub.PublishError as e:
        fail(str(e))


def push(
    name: Annotated[str, typer.Argument(help="A model the server holds, under your namespace: you/writer")],
    host: Host = None,
    insecure: Insecure = False,
) -> None:
    """Push a model from an Ollama server to its registry (the server's /api/push, as `ollama push`)."""
    from pipeline.modelfile import publish as pub

    try:
        _push(pub.Publisher(host), name, insecure)
    except pub.PublishError as e:
        fail(str(e))


def _bars() -> Progress:
    columns = (*Progress.get_default_columns()[:1], BarColumn(), DownloadColumn(), TransferSpeedColumn())
    return Progress(*columns, console=console)


def _push(publisher, name: str, insecure: bool) -> None:
    """Push with a bar per layer and a line per other status; says "pushed" only after "success"."""
    from pipeline.modelfile import publish as pub

    with _bars() as bars:
        tasks: dict[str, TaskID] = {}

        def show(update) -> None:
            if not update.digest:
                console.print(update.status or "")
                return
            if update.digest not in tasks:
                tasks[update.digest] = bars.add_task(update.status or update.digest[7:19], total=update.total)
            bars.update(tasks[update.digest], completed=update.completed or 0)

        where = pub.Pusher(publisher).push(name, insecure, on_progress=show)
    console.print(f"[green]pushed[/green] {name}: {where} (ollama pull {name} anywhere)")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="modelfile")
    root.command("publish")(publish)
    root.command("push")(push)
