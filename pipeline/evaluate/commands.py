"""`story-pipeline eval metrics | compare | judge | perplexity`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipeline.evaluate import compare_run, display
from pipeline.evaluate.compare_run import CompareOptions
from pipeline.evaluate.display import console
from pipeline.flags import fail, force_option, takes
from pipeline.ranges import ranged
from plumbing.atomic import check_outputs
from plumbing.extras import needs

app = typer.Typer(help="Readability, diversity and tone of texts and models; held-out perplexity.")

OutDir = Annotated[Path, typer.Option("-o", "--output", help="Folder to write the results into")]
Workers = Annotated[
    int | None, typer.Option(**ranged("Scoring processes (default: the cores available)", min=1, max=256))
]
Window = Annotated[int, typer.Option(**ranged("Words per window for the length-independent entropy", min=1))]
Force = Annotated[bool, force_option("Replace the files this writes in the output folder")]
METRICS_FILES = ("scores.jsonl", "summary.json")
JUDGE_FILES = ("verdicts.jsonl", "summary.json", "table.md", "chart.png")


@app.command("metrics")
@needs("eval metrics", "eval")
def metrics_command(
    file: Annotated[Path, typer.Argument(help="JSONL file, one text a row")],
    out: OutDir,
    field: Annotated[str, typer.Option(help="The row field holding the text")] = "text",
    outputs: Annotated[
        bool, typer.Option("--outputs", help="The texts are raw model outputs: score the answer part")
    ] = False,
    workers: Workers = None,
    window: Window = 100,
    force: Force = False,
) -> None:
    """Per text and in aggregate: Flesch, Fog, entropy, sentiment, distinct-n, repetition, length."""
    from contract import prompt
    from pipeline.evaluate import metrics, records

    check_outputs(out, METRICS_FILES, force)
    try:
        rows = records.read_jsonl(file)
        texts = records.field_values(rows, field, file)
        lengths = [r.get("length") for r in rows]
        if outputs:
            for n, length in enumerate(lengths, 1):
                try:
                    prompt.length_words(length)
                except prompt.PromptError as e:
                    raise records.InputError(f"{file} row {n}: {e}") from e
    except records.InputError as e:
        fail(str(e))
    scorer = metrics.Scorer(window)
    with display.progress() as bars:
        task = bars.add_task("scoring", total=len(texts))
        advance = lambda n: bars.advance(task, n)  # noqa: E731
        if outputs:
            scores = metrics.score_outputs(texts, lengths, workers, scorer, advance)
        else:
            scores = metrics.score_texts(texts, workers, scorer, advance)
    keys = ("words", *metrics.SCORE_KEYS, *(metrics.OUTPUT_KEYS if outputs else ()))
    summary = metrics.summarize(scores, keys)
    scored_texts = [s["answer"] for s in scores] if outputs else texts
    summary["distinct_1_all"] = metrics.corpus_distinct(scored_texts, 1)
    summary["distinct_2_all"] = metrics.corpus_distinct(scored_texts, 2)
    summary.update(source=str(file), field=field, outputs=outputs, entropy_window=window)
    records.write_jsonl(out / "scores.jsonl", ({"row": n, **s} for n, s in enumerate(scores, 1)))
    records.write_json(out / "summary.json", summary)
    display.warn_notes(summary, str(file))
    display.print_summary(f"{file.name} ({len(texts)} texts)", {field: summary}, window)
    console.print(f"wrote {out / 'scores.jsonl'} and {out / 'summary.json'}")


@app.command("compare")
@needs("eval compare", "eval")
@takes(CompareOptions, "opts")
def compare_command(opts: CompareOptions) -> None:
    """Each model continues the same contexts with fixed seeds; outputs scored into a table, JSON and PNG."""
    compare_run.run(opts)


@app.command("judge")
@needs("eval judge", "eval")
def judge_command(
    judge_model: Annotated[
        str,
        typer.Option(
            "--judge", help="The judge model's name on the backend (llama.cpp: a GGUF file, or smollm2)"
        ),
    ],
    out: OutDir,
    outputs: Annotated[
        list[Path] | None,
        typer.Argument(help="`eval compare` output folders (or their outputs.jsonl) holding both models"),
    ] = None,
    a: Annotated[
        str | None, typer.Option("--a", help="Label of the first model (default: the first in the outputs)")
    ] = None,
    b: Annotated[
        str | None, typer.Option("--b", help="Label of the second model (default: the other one)")
    ] = None,
    backend: Annotated[
        str,
        typer.Option(help="ollama, openai (any OpenAI-compatible endpoint) or llama.cpp (a GGUF in-process)"),
    ] = "ollama",
    base_url: Annotated[
        str | None,
        typer.Option(help="Server URL (default: OLLAMA_HOST / localhost:11434, or api.openai.com)"),
    ] = None,
    api_key_env: Annotated[
        str, typer.Option(help="Environment variable holding the API key (openai backend)")
    ] = "OPENAI_API_KEY",
    temperature: Annotated[float, typer.Option(**ranged("Judge sampling temperature", min=0, max=100))] = 0.0,
    max_tokens: Annotated[
        int, typer.Option(**ranged("Most tokens the judge may write per verdict", min=1))
    ] = 512,
    context_chars: Annotated[
        int | None, typer.Option(**ranged("Show the judge only the last N characters of each context", min=1))
    ] = None,
    limit: Annotated[int | None, typer.Option(**ranged("Judge only the first N items", min=1))] = None,
    n_ctx: Annotated[
        int, typer.Option(**ranged("With llama.cpp: the context the judge and each model load with", min=256))
    ] = 4096,
    timeout: Annotated[float, typer.Option(**ranged("Seconds to wait for one verdict", above=0))] = 300.0,
    retries: Annotated[
        int, typer.Option(**ranged("Retries per verdict on 429/5xx/timeouts", min=0, max=100))
    ] = 2,
    contexts_file: Annotated[
        Path | None,
        typer.Option("--contexts", help="Instead of OUTPUTS: contexts the two --model continue first"),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="With --contexts, twice: NAME=MODEL (an Ollama model, or a GGUF with "
            "--engine llama.cpp); the first is a",
        ),
    ] = None,
    field: Annotated[str, typer.Option(help="With --contexts: the field holding the context")] = "context",
    host: Annotated[
        str | None, typer.Option(help="With --contexts: the models' Ollama server (default: OLLAMA_HOST)")
    ] = None,
    engine: Annotated[
        str, typer.Option(help="With --contexts: ollama, or llama.cpp (each --model NAME=FILE.gguf)")
    ] = "ollama",
    samples: Annotated[
        int, typer.Option(**ranged("With --contexts: outputs per context and model", min=1, max=1000))
    ] = 1,
    seed: Annotated[
        int, typer.Option(**ranged("With --contexts: seed of the first sample", min=0, max=2**31 - 1))
    ] = 0,
    num_predict: Annotated[
        int | None, typer.Option(help="With --contexts: most tokens per output (default: as eval compare)")
    ] = None,
    force: Force = False,
) -> None:
    """A judge model compares two models' continuations of the same contexts, in both orders, on a rubric:
    win rate with its 95% interval, per criterion, and the judge's consistency; table, JSON and PNG."""
    from pipeline.data import backends
    from pipeline.evaluate import compare, judge, records

    generate = Generate(contexts_file, model or [], field, host, engine, n_ctx, samples, seed, num_predict)
    check_outputs(out, JUDGE_FILES + (("outputs.jsonl",) if contexts_file else ()), force)
    try:
        if backend not in backends.BACKENDS:  # before any model is asked to write
            raise judge.JudgeError(f"--backend {backend!r}: use one of {', '.join(backends.BACKENDS)}")
        if bool(outputs) == bool(contexts_file):
            raise judge.JudgeError(
                "give either `eval compare` outputs or --contexts with two --model, not both or neither"
            )
        settings = backends.ChatSettings(
            judge_model,
            backend,
            base_url,
            api_key_env,
            timeout,
            temperature,
            max_tokens,
            n_ctx=n_ctx,
            role="judge",
        )
        if contexts_file:
            _check_judge(
                settings
            )  # before the models write: their outputs are lost if the judge is not there
        rows = _generated_rows(generate, limit) if contexts_file else _read_outputs(outputs or [])
        a, b = judge.pick_labels(rows, a, b)
        items = judge.pair_items(rows, a, b)[:limit]
    except (records.InputError, judge.JudgeError, compare.CompareError, backends.Fatal) as e:
        fail(str(e))
    try:
        with display.progress() as bars:
            task = bars.add_task(f"judging {a} vs {b}", total=2 * len(items))
            judged = _judge_all(settings, items, context_chars, retries, lambda: bars.advance(task))
    except backends.Fatal as e:
        fail(str(e))
    shown: dict[str, object] = {
        "judge": judge_model,
        "backend": backend,
        "base_url": base_url,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "context_chars": context_chars,
        "inputs": [str(p) for p in outputs or []],
    }
    if contexts_file:  # the outputs were made here: how, as compare records it
        shown["generated"] = {**asdict(generate), "contexts": str(contexts_file)}
    _write_judged(out, judged, a, b, shown, rows if contexts_file else None)


def _write_judged(out: Path, judged: list, a: str, b: str, shown: dict, made: list[dict] | None) -> None:
    """verdicts.jsonl, summary.json, table.md and chart.png (and outputs.jsonl when `made` here)."""
    from pipeline.evaluate import judge, judge_report, records
    from plumbing import atomic

    summary = judge.summarize(judged)
    result = {
        "prompt_version": judge.PROMPT_VERSION,
        "a": a,
        "b": b,
        "settings": shown,
        **summary,
        "judge_prompt": {"system": judge.SYSTEM, "user": judge.RUBRIC},
    }
    table = judge_report.markdown(summary, a, b, shown)
    if made is not None:
        records.write_jsonl(out / "outputs.jsonl", made)
    records.write_jsonl(out / "verdicts.jsonl", judge.verdict_rows(judged, a, b))
    records.write_json(out / "summary.json", result)
    atomic.write_text(out / "table.md", table)
    judge_report.write_chart(out / "chart.png", summary, a, b)
    display.print_judged(summary, a, b)
    console.print(f"wrote {out}/verdicts.jsonl, summary.json, table.md, chart.png")


def _check_judge(settings) -> None:
    """Fatal unless the judge answers: a one-token request to a server, the file for llama.cpp (loading
    a large GGUF twice would cost more than it saves)."""
    import asyncio
    from dataclasses import replace

    from engines import local_engine
    from pipeline.data import backends

    if settings.backend == "llama.cpp":
        try:
            local_engine.resolve_gguf(settings.model)
        except local_engine.ModelNotLoadable as e:
            raise backends.Fatal(f"the judge {settings.model!r}: {e}") from e
        return

    async def ask() -> None:
        client = backends.make_backend(replace(settings, max_tokens=1))
        try:
            await client.complete([{"role": "user", "content": "Answer with the letter A."}])
        except backends.Transient as e:
            raise backends.Fatal(f"the judge {settings.model!r} does not answer: {e}") from e
        finally:
            await client.aclose()

    asyncio.run(ask())


def _read_outputs(paths: list[Path]) -> list[dict]:
    """The rows of `eval compare` outputs: a folder stands for its outputs.jsonl."""
    from pipeline.evaluate import records

    files = [path / "outputs.jsonl" if path.is_dir() else path for path in paths]
    return [row for file in files for row in records.read_jsonl(file)]


@dataclass(frozen=True)
class Generate:
    """What `eval judge --contexts` needs to have the two models continue the contexts first."""

    contexts: Path | None
    models: list[str]
    field: str
    host: str | None
    engine: str
    n_ctx: int
    samples: int
    seed: int
    num_predict: int | None


def _generated_rows(g: Generate, limit: int | None) -> list[dict]:
    """The two models' outputs, as `eval compare` makes them (same requests and seeds), unscored."""
    from contract.serving import resolve_host
    from pipeline.evaluate import compare, judge, metrics, records

    models = compare.parse_models(g.models)
    if len(models) != 2:
        raise judge.JudgeError(f"--contexts needs two --model NAME=MODEL to compare, not {len(models)}")
    assert g.contexts is not None
    contexts = records.contexts(records.read_jsonl(g.contexts)[:limit], g.field, None, g.contexts)
    client = compare_run.engine_client(g.engine, models, [], g.n_ctx)
    options = {} if g.num_predict is None else {"num_predict": g.num_predict}
    try:
        with display.progress() as bars:
            task = bars.add_task("generating", total=2 * len(contexts) * g.samples)
            names = models if client is None else {label: label for label in models}
            runs = compare.run_all(
                resolve_host(g.host),
                names,
                contexts,
                g.samples,
                g.seed,
                options,
                on_output=lambda: bars.advance(task),
                on_model=lambda label: bars.update(task, description=f"generating: {label}"),
                client=client,
            )
    finally:
        if client is not None:
            client.close()
    for run in runs:
        if run.status != compare.OK:
            raise judge.JudgeError(f"{run.label}: {run.note}")
    return [
        {"model": run.label, **o, **metrics.split_output(o["output"], o["length"])}
        for run in runs
        for o in run.outputs
    ]


def _judge_all(settings, items, context_chars, retries, advance) -> list:
    """Each item judged twice (a shown first, then b), one request at a time."""
    import asyncio

    from pipeline.data import backends
    from pipeline.evaluate import judge

    async def ask(client, messages: list[dict]) -> str:
        for attempt in range(retries + 1):
            try:
                return (await client.complete(messages)).text
            except backends.Transient as e:
                if attempt == retries:
                    raise backends.Fatal(
                        f"{e} ({retries + 1} tries): check the judge's server, then rerun"
                    ) from e
                await asyncio.sleep(e.retry_after or 2.0**attempt)
        raise AssertionError("unreachable")

    async def go() -> list:
        client = backends.make_backend(settings)
        try:
            judged = []
            for item in items:
                replies = []
                for first, second in ((item.a, item.b), (item.b, item.a)):
                    replies.append(
                        await ask(client, judge.messages(item.context, first, second, context_chars))
                    )
                    advance()
                verdicts = (judge.parse_verdict(replies[0]), judge.parse_verdict(replies[1]))
                judged.append(judge.Judged(item, (replies[0], replies[1]), verdicts))
            return judged
        finally:
            await client.aclose()

    return asyncio.run(go())


@app.command("perplexity")
@needs("eval perplexity", "train")
def perplexity_command(
    base: Annotated[str, typer.Option(help="Base model: a local Hugging Face folder")],
    data: Annotated[Path, typer.Option(help="Held-out rows in the training format (messages)")],
    adapter: Annotated[
        Path | None, typer.Option(help="A PEFT adapter folder: compared with the base")
    ] = None,
    batch_size: Annotated[int, typer.Option(**ranged("Rows per forward pass", min=1, max=4096))] = 4,
    max_tokens: Annotated[
        int, typer.Option(**ranged("Skip rows longer than this many tokens", min=1))
    ] = 4096,
    out: Annotated[Path | None, typer.Option("-o", "--output", help="Folder for perplexity.json")] = None,
    force: Force = False,
) -> None:
    """Held-out loss and perplexity on the continuation (the answer), base against fine-tuned."""
    from pipeline.evaluate import perplexity, records

    if out is not None:
        check_outputs(out, ("perplexity.json",), force)
    try:
        rows = records.read_jsonl(data)
        with display.progress() as bars:
            task = bars.add_task("scoring rows", total=len(rows) * (2 if adapter else 1))
            result = perplexity.run(
                base, adapter, rows, batch_size, max_tokens, lambda n: bars.advance(task, n)
            )
    except (records.InputError, perplexity.PerplexityError) as e:
        fail(str(e))
    result.update(base_model=base, adapter_path=str(adapter) if adapter else None, data=str(data))
    table = Table(title=f"{data.name}: {result['rows']} rows")
    for col in ("model", "answer loss", "answer perplexity", "answer tokens", "assistant perplexity"):
        table.add_column(col, justify="right")
    for name in ("base", "adapter"):
        if name in result:
            a, t = result[name]["answer"], result[name]["assistant"]
            table.add_row(
                name, f"{a['loss']:.4f}", f"{a['perplexity']:.3f}", str(a["tokens"]), f"{t['perplexity']:.3f}"
            )
    Console().print(table)
    if result["skipped_too_long"]:
        console.print(
            f"[yellow]skipped {result['skipped_too_long']} rows longer than {max_tokens} tokens[/yellow]"
        )
    if out:
        records.write_json(out / "perplexity.json", result)
        console.print(f"wrote {out / 'perplexity.json'}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="eval")
