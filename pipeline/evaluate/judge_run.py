"""`eval judge` as a run: its options (declared once; the command's flags are generated from them), then
pair the two models' outputs (read from `eval compare`, or made here from --contexts), have the judge
compare each pair in both orders, write and show the results."""

from __future__ import annotations

from dataclasses import MISSING, dataclass
from pathlib import Path

from pipeline.data import backends
from pipeline.evaluate import compare_run, display
from pipeline.evaluate.display import console
from pipeline.flags import fail, option

FILES = ("verdicts.jsonl", "summary.json", "table.md", "chart.png")


@dataclass(frozen=True)
class JudgeOptions:
    """The judge and its backend, which outputs it compares (or how --contexts has them made), and where
    the results go."""

    judge_model: str = option(
        MISSING, "The judge model's name on the backend (llama.cpp: a GGUF file, or smollm2)", "--judge"
    )
    out: Path = option(MISSING, "Folder to write the results into", "-o", "--output")
    a: str | None = option(None, "Label of the first model (default: the first in the outputs)", "--a")
    b: str | None = option(None, "Label of the second model (default: the other one)", "--b")
    backend: str = backends.backend_option()
    base_url: str | None = backends.base_url_option()
    api_key_env: str = backends.api_key_env_option()
    temperature: float = option(0.0, "Judge sampling temperature", min=0, max=100)
    max_tokens: int = option(512, "Most tokens the judge may write per verdict", min=1)
    context_chars: int | None = option(
        None, "Show the judge only the last N characters of each context", min=1
    )
    limit: int | None = option(None, "Judge only the first N items", min=1)
    n_ctx: int = option(4096, "With llama.cpp: the context the judge and each model load with", min=256)
    timeout: float = option(300.0, "Seconds to wait for one verdict", above=0)
    retries: int = option(2, "Retries per verdict on 429/5xx/timeouts", min=0, max=100)
    contexts_file: Path | None = option(
        None, "Instead of OUTPUTS: contexts the two --model continue first", "--contexts"
    )
    models: list[str] | None = option(
        None,
        "With --contexts, twice: NAME=MODEL (an Ollama model, or a GGUF with --engine llama.cpp); "
        "the first is model a (see --a), the second b",
        "--model",
    )
    field: str = option("context", "With --contexts: the field holding the context")
    host: str | None = option(None, "With --contexts: the models' Ollama server (default: OLLAMA_HOST)")
    engine: str = option("ollama", "With --contexts: ollama, or llama.cpp (each --model NAME=FILE.gguf)")
    samples: int = option(1, "With --contexts: outputs per context and model", min=1, max=1000)
    seed: int = option(0, "With --contexts: seed of the first sample", min=0, max=2**31 - 1)
    num_predict: int | None = option(
        None, "With --contexts: most tokens per output (default: as eval compare)"
    )
    force: bool = option(False, "Replace the files this writes in the output folder", "--force")

    @property
    def settings(self) -> backends.ChatSettings:
        """How the judge is asked."""
        return backends.ChatSettings(
            self.judge_model,
            self.backend,
            self.base_url,
            self.api_key_env,
            self.timeout,
            self.temperature,
            self.max_tokens,
            n_ctx=self.n_ctx,
            role="judge",
        )


def run(opts: JudgeOptions, outputs: list[Path]) -> None:
    """Judge every pair of the two models' outputs in both orders; write verdicts, summary, table, chart."""
    from plumbing.atomic import check_outputs

    made_here = opts.contexts_file is not None
    check_outputs(opts.out, FILES + (("outputs.jsonl",) if made_here else ()), opts.force)
    rows, a, b, items = _pairs(opts, outputs)
    try:
        with display.progress() as bars:
            task = bars.add_task(f"judging {a} vs {b}", total=2 * len(items))
            judged = _judge_all(opts, items, lambda: bars.advance(task))
    except backends.Fatal as e:
        fail(str(e))
    _write_judged(opts.out, judged, a, b, _shown(opts, outputs), rows if made_here else None)


def _pairs(opts: JudgeOptions, outputs: list[Path]) -> tuple[list[dict], str, str, list]:
    """The outputs' rows, the two labels and the items to judge; or a clear error before any judging."""
    from pipeline.evaluate import compare, judge, records

    try:
        if opts.backend not in backends.BACKENDS:  # before any model is asked to write
            raise judge.JudgeError(f"--backend {opts.backend!r}: use one of {', '.join(backends.BACKENDS)}")
        if bool(outputs) == bool(opts.contexts_file):
            raise judge.JudgeError(
                "give either `eval compare` outputs or --contexts with two --model, not both or neither"
            )
        if opts.contexts_file:
            _check_judge(
                opts.settings
            )  # before the models write: their outputs are lost if the judge is not there
        rows = _generated_rows(opts) if opts.contexts_file else _read_outputs(outputs)
        a, b = judge.pick_labels(rows, opts.a, opts.b)
        items = judge.pair_items(rows, a, b)[: opts.limit]
    except (records.InputError, judge.JudgeError, compare.CompareError, backends.Fatal) as e:
        fail(str(e))
    return rows, a, b, items


def _shown(opts: JudgeOptions, outputs: list[Path]) -> dict[str, object]:
    """The settings summary.json and table.md record."""
    shown: dict[str, object] = {
        "judge": opts.judge_model,
        "backend": opts.backend,
        "base_url": opts.base_url,
        "temperature": opts.temperature,
        "max_tokens": opts.max_tokens,
        "context_chars": opts.context_chars,
        "inputs": [str(p) for p in outputs],
    }
    if opts.contexts_file:  # the outputs were made here: how, as compare records it
        shown["generated"] = {
            "contexts": str(opts.contexts_file),
            "models": opts.models or [],
            "field": opts.field,
            "host": opts.host,
            "engine": opts.engine,
            "n_ctx": opts.n_ctx,
            "samples": opts.samples,
            "seed": opts.seed,
            "num_predict": opts.num_predict,
        }
    return shown


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


def _check_judge(settings: backends.ChatSettings) -> None:
    """Fatal unless the judge answers: a one-token request to a server, the file for llama.cpp (loading
    a large GGUF twice would cost more than it saves)."""
    import asyncio
    from dataclasses import replace

    from engines import local_engine

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


def _generated_rows(opts: JudgeOptions) -> list[dict]:
    """The two models' outputs, as `eval compare` makes them (same requests and seeds), unscored."""
    from contract.serving import resolve_host
    from pipeline.evaluate import compare, judge, metrics, records

    models = compare.parse_models(opts.models or [])
    if len(models) != 2:
        raise judge.JudgeError(f"--contexts needs two --model NAME=MODEL to compare, not {len(models)}")
    assert opts.contexts_file is not None
    rows = records.read_jsonl(opts.contexts_file)[: opts.limit]
    contexts = records.contexts(rows, opts.field, None, opts.contexts_file)
    client = compare_run.engine_client(opts.engine, models, [], opts.n_ctx)
    options = {} if opts.num_predict is None else {"num_predict": opts.num_predict}
    try:
        with display.progress() as bars:
            task = bars.add_task("generating", total=2 * len(contexts) * opts.samples)
            names = models if client is None else {label: label for label in models}
            runs = compare.run_all(
                resolve_host(opts.host),
                names,
                contexts,
                opts.samples,
                opts.seed,
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


def _judge_all(opts: JudgeOptions, items: list, advance) -> list:
    """Each item judged twice (a shown first, then b), one request at a time."""
    import asyncio

    from pipeline.evaluate import judge

    retries = opts.retries

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
        client = backends.make_backend(opts.settings)
        try:
            judged = []
            for item in items:
                replies = []
                for first, second in ((item.a, item.b), (item.b, item.a)):
                    messages = judge.messages(item.context, first, second, opts.context_chars)
                    replies.append(await ask(client, messages))
                    advance()
                verdicts = (judge.parse_verdict(replies[0]), judge.parse_verdict(replies[1]))
                judged.append(judge.Judged(item, (replies[0], replies[1]), verdicts))
            return judged
        finally:
            await client.aclose()

    return asyncio.run(go())
