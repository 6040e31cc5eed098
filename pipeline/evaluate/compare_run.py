"""`eval compare` as a run: its options (declared once; the command's flags are generated from them),
then read the contexts, have each model continue them, score the outputs, write and show the results."""

from __future__ import annotations

from dataclasses import MISSING, dataclass
from pathlib import Path

import typer

from pipeline.flags import fail, option

FILES = ("outputs.jsonl", "summary.json", "table.md", "chart.png")


@dataclass(frozen=True)
class CompareOptions:
    """What to compare (models, contexts), how each output is asked for, and where the results go."""

    models: list[str] = option(
        MISSING, "NAME=OLLAMA_MODEL, repeatable (e.g. base=qwen2.5:7b-instruct)", "--model"
    )
    contexts_file: Path = option(MISSING, "JSONL of held-out contexts", "--contexts")
    out: Path = option(MISSING, "Folder to write the results into", "-o", "--output")
    field: str = option("context", "The row field holding the context")
    reference_field: str | None = option(
        None, "A row field with the human continuation, scored as a reference column"
    )
    host: str | None = option(None, "Ollama server URL (default: OLLAMA_HOST or localhost)")
    samples: int = option(1, "Outputs per context and model (seeds SEED, SEED+1, ...)", min=1, max=1000)
    seed: int = option(0, "Seed of the first sample of every context", min=0, max=2**31 - 1)
    limit: int | None = option(None, "Use only the first N contexts", min=1)
    length: str | None = option(None, "Length to ask for where a row has none: short, medium, long or words")
    temperature: float | None = option(None, "Sampling temperature (default: the model's)", min=0, max=100)
    num_predict: int | None = option(
        None, "Most tokens per output (default: room for reasoning and the length)"
    )
    engine: str = option("ollama", "ollama, or llama.cpp: each --model NAME=FILE.gguf runs in-process")
    lora: list[str] | None = option(None, "With llama.cpp: NAME=ADAPTER.gguf applied to that model")
    n_ctx: int = option(4096, "With llama.cpp: the context each model is loaded with")
    workers: int | None = option(None, "Scoring processes (default: the cores available)", min=1, max=256)
    window: int = option(100, "Words per window for the length-independent entropy", min=1)
    force: bool = option(False, "Replace the files this writes in the output folder", "--force")

    @property
    def options(self) -> dict:
        """The Ollama options every request carries."""
        options: dict = {} if self.temperature is None else {"temperature": self.temperature}
        if self.num_predict is not None:
            options["num_predict"] = self.num_predict
        return options


def run(opts: CompareOptions) -> None:
    """The whole comparison; exit 1 when a model could not write every output."""
    from pipeline.evaluate import compare
    from pipeline.evaluate.display import console
    from plumbing.atomic import check_outputs

    check_outputs(opts.out, FILES, opts.force)
    models, ctxs = _inputs(opts)
    url, runs = _generate(opts, models, ctxs)
    _score_and_write(opts, url, models, ctxs, runs)
    incomplete = [r.label for r in runs if r.status != compare.OK]
    if incomplete:
        console.print(f"[yellow]incomplete: {', '.join(incomplete)} (see the notes under the table)[/yellow]")
        raise typer.Exit(1)


def engine_client(engine: str, models: dict[str, str], loras: list[str], n_ctx: int):
    """None for Ollama; for llama.cpp a LocalClient that knows each model by its --model label."""
    from pipeline.evaluate import compare

    if engine == "ollama":
        if loras:
            raise compare.CompareError("--lora needs --engine llama.cpp (an Ollama model has its ADAPTER)")
        return None
    if engine != "llama.cpp":
        raise compare.CompareError(f"--engine {engine!r}: use ollama or llama.cpp")
    from engines.local_client import LocalClient

    adapters = compare.parse_models(loras) if loras else {}
    unknown = set(adapters) - set(models)
    if unknown:
        raise compare.CompareError(f"--lora {', '.join(sorted(unknown))}: no --model has that name")
    return LocalClient({label: (models[label], adapters.get(label)) for label in models}, n_ctx)


def _inputs(opts: CompareOptions) -> tuple[dict[str, str], list]:
    """The models by label and the contexts, each with the length it asks for; or a clear error."""
    from dataclasses import replace

    from contract import prompt
    from pipeline.evaluate import compare, records

    try:
        models = compare.parse_models(opts.models)
        rows = records.read_jsonl(opts.contexts_file)[: opts.limit]
        ctxs = records.contexts(rows, opts.field, opts.reference_field, opts.contexts_file)
        if opts.length is not None:
            asked = int(opts.length) if opts.length.isdigit() else opts.length
            prompt.length_words(asked)
            ctxs = [c if c.length is not None else replace(c, length=asked) for c in ctxs]
    except (compare.CompareError, records.InputError, prompt.PromptError) as e:
        fail(str(e))
    return models, ctxs


def _generate(opts: CompareOptions, models: dict[str, str], ctxs: list) -> tuple[str, list]:
    """Every model's outputs (a run per model), and where they were made (a URL, or the engine)."""
    from contract.serving import resolve_host
    from pipeline.evaluate import compare
    from pipeline.evaluate.display import progress

    try:
        client = engine_client(opts.engine, models, opts.lora or [], opts.n_ctx)
    except compare.CompareError as e:
        fail(str(e))
    url = resolve_host(opts.host) if client is None else opts.engine
    try:
        with progress() as bars:
            task = bars.add_task("generating", total=len(models) * len(ctxs) * opts.samples)
            runs = compare.run_all(
                url,
                models if client is None else {label: label for label in models},
                ctxs,
                opts.samples,
                opts.seed,
                opts.options,
                on_output=lambda: bars.advance(task),
                on_model=lambda label: bars.update(task, description=f"generating: {label}"),
                client=client,
            )
    except compare.CompareError as e:
        fail(str(e))
    finally:
        if client is not None:
            client.close()
    return url, runs


def _score_and_write(opts: CompareOptions, url: str, models: dict[str, str], ctxs: list, runs: list) -> None:
    """Score every output (and the human reference), write the four files and show the table."""
    from pipeline.evaluate import compare, metrics, records, report
    from pipeline.evaluate.display import console, warn_notes
    from plumbing import atomic

    console.print("scoring…")
    scorer = metrics.Scorer(opts.window)
    scored = compare.score_runs(runs, opts.workers, scorer)
    summary = compare.summarize_runs(runs, scored)
    columns = [report.Column(label, s["metrics"], s["status"], s["note"]) for label, s in summary.items()]
    if opts.reference_field:
        ref = metrics.summarize(metrics.score_texts([c.reference or "" for c in ctxs], opts.workers, scorer))
        summary["reference"] = {"status": "reference", "field": opts.reference_field, **ref}
        note = f"human text from `{opts.reference_field}`"
        columns.append(report.Column("reference", ref["metrics"], "reference", note))
    records.write_jsonl(opts.out / "outputs.jsonl", (r for rows_ in scored.values() for r in rows_))
    records.write_json(
        opts.out / "summary.json", {"settings": _settings(opts, url, models), "columns": summary}
    )
    table = report.markdown_table(columns, opts.window, len(ctxs) * opts.samples)
    atomic.write_text(opts.out / "table.md", table)
    report.write_chart(opts.out / "chart.png", columns, opts.window)
    for label, s in summary.items():
        if label != "reference":
            warn_notes(s, label)
    from rich.console import Console

    Console().print(table)
    console.print(f"wrote {opts.out}/outputs.jsonl, summary.json, table.md, chart.png")


def _settings(opts: CompareOptions, url: str, models: dict[str, str]) -> dict:
    """How the outputs were made, as summary.json records it."""
    return {
        "host": url,
        "contexts": str(opts.contexts_file),
        "field": opts.field,
        "samples": opts.samples,
        "seed": opts.seed,
        "options": opts.options,
        "entropy_window": opts.window,
        "models": models,
        "engine": opts.engine,
        "loras": opts.lora or [],
    }
