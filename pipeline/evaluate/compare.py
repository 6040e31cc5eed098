"""Models continue the same held-out contexts through Ollama (or the local engine, a GGUF in-process) with
fixed seeds; outputs kept, then scored.

Each context reaches each model with the writer prompt applied exactly once, through the bot's own
request builder (contract/serving.py: the whole chat text, raw, for models made from our Modelfiles; the
writer prompt as the user turn for plain instruct models). Sample k of every context uses seed
`seed + k` for every model, so a rerun asks the same questions with the same dice. A model that is not
on the server, or that fails part-way, keeps the outputs it produced and says what went wrong; the other
models are still run and reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from contract import prompt, serving
from pipeline.evaluate import metrics
from pipeline.evaluate.records import Context

OK, FAILED = "ok", "failed"
#: One output's request and its options (seed, stops, num_predict).
Ask = tuple[serving.GenerateRequest, dict]


class CompareError(RuntimeError):
    """The comparison cannot run at all (server unreachable, a model it lacks, nothing to compare)."""


@dataclass
class ModelRun:
    label: str
    model: str
    expected: int
    outputs: list[dict] = field(default_factory=list)
    status: str = OK
    error: str | None = None

    @property
    def note(self) -> str:
        if self.status == FAILED:
            return f"`{self.model}` failed after {len(self.outputs)} of {self.expected} outputs: {self.error}"
        return ""


def parse_models(specs: list[str]) -> dict[str, str]:
    """`NAME=OLLAMA_MODEL` pairs (a bare model name labels itself), labels unique."""
    models: dict[str, str] = {}
    for spec in specs:
        label, sep, model = spec.partition("=")
        label, model = (label.strip(), model.strip()) if sep else (spec.strip(), spec.strip())
        if not label or not model:
            raise CompareError(f"--model {spec!r}: write NAME=OLLAMA_MODEL, e.g. base=qwen2.5:7b-instruct")
        if label in models:
            raise CompareError(f"--model {label!r} is given twice: give each model its own name")
        models[label] = model
    if not models:
        raise CompareError("give at least one --model NAME=OLLAMA_MODEL")
    return models


def check_contexts(contexts: list[Context]) -> None:
    """Every context must render into a prompt; a bad one is named before any model runs."""
    for n, c in enumerate(contexts, 1):
        try:
            prompt.render_prompt(c.text, c.guidance, c.length)
        except prompt.PromptError as e:
            raise CompareError(f"context {n}: {e}") from e


def generate(
    client,
    label: str,
    model: str,
    shown: tuple[str, str] | str,
    contexts: list[Context],
    samples: int,
    seed: int,
    options: dict | None = None,
    on_output: Callable[[], None] | None = None,
) -> ModelRun:
    """All outputs of one model; stops at its first error and records it. `shown`: the model's template
    and system (`show_models`), or why the server could not say."""
    import httpx
    import ollama

    from engines.local_engine import EngineError

    run = ModelRun(label, model, expected=len(contexts) * samples)
    if isinstance(shown, str):
        run.status, run.error = FAILED, shown
        return run
    slots = [(i, ctx, k) for i, ctx in enumerate(contexts) for k in range(samples)]
    asks = [_ask(shown, ctx, seed + k, options or {}) for _, ctx, k in slots]
    try:
        if hasattr(client, "generate_many"):  # the local engine decodes a model's outputs together
            done = client.generate_many(model, asks, on_done=lambda _: on_output and on_output())
            made = zip(slots, asks, done, strict=True)
            run.outputs = [_record(i, ctx, k, ask, *d) for (i, ctx, k), ask, d in made]
            return run
        for (i, ctx, k), ask in zip(slots, asks, strict=True):
            run.outputs.append(_record(i, ctx, k, ask, *_stream(client, model, ask)))
            if on_output:
                on_output()
    except (ollama.ResponseError, serving.ServingError, EngineError) as e:
        run.status, run.error = FAILED, getattr(e, "error", None) or str(e)
    except (ConnectionError, OSError, httpx.HTTPError) as e:  # refused, dropped mid-stream, timed out
        run.status, run.error = FAILED, f"connection lost: {e or type(e).__name__}"
    return run


def _ask(shown: tuple[str, str], ctx: Context, seed: int, options: dict) -> Ask:
    """One output's request and options."""
    request = serving.build_request(ctx.text, shown[0], ctx.guidance, ctx.length, shown[1])
    # Stopped where the bot stops (at `</answer>` and the template's turn ends), and the stripped stop put
    # back as the bot puts it back: a model is measured on the outputs writers are shown.
    stop = serving.stop_sequences((), options.get("stop"), shown[0])
    return request, {"num_predict": serving.num_predict(ctx.length), **options, "stop": stop, "seed": seed}


def _stream(client, model: str, ask: Ask) -> tuple[str, str | None, int | None]:
    """One output through the client's stream: the text, done_reason and eval_count."""
    request, opts = ask
    pieces, final = [], None
    for chunk in client.generate(model=model, **request.fields(), stream=True, options=opts):
        pieces.append(chunk.response or "")
        if chunk.done:
            final = chunk
    return "".join(pieces), getattr(final, "done_reason", None), getattr(final, "eval_count", None)


def _record(
    i: int, ctx: Context, k: int, ask: Ask, output: str, reason: str | None, count: int | None
) -> dict:
    if reason == "stop":
        output = prompt.restore_stop(output)
    return {
        "context_index": i,
        "sample": k,
        "seed": ask[1]["seed"],
        "length": ctx.length,
        "prompt": ask[0].user_text,
        "output": output,
        "done_reason": reason,
        "eval_count": count,
    }


def run_all(
    host: str,
    models: dict[str, str],
    contexts: list[Context],
    samples: int = 1,
    seed: int = 0,
    options: dict | None = None,
    on_output: Callable[[], None] | None = None,
    on_model: Callable[[str], None] | None = None,
    client=None,
) -> list[ModelRun]:
    """`client`: an `ollama.Client` for `host` by default, or the local engine's LocalClient."""
    import ollama

    if samples < 1:
        raise CompareError(f"--samples must be at least 1, not {samples}")
    check_contexts(contexts)
    if client is None:
        client = ollama.Client(host=host)
        try:
            client.list()
        except (ConnectionError, OSError) as e:
            raise CompareError(f"cannot reach Ollama at {host} ({e}): start it or pass --host URL") from e
    shown = show_models(client, models)
    runs = []
    for label, model in models.items():
        if on_model:
            on_model(label)
        runs.append(generate(client, label, model, shown[label], contexts, samples, seed, options, on_output))
    return runs


def show_models(client, models: dict[str, str]) -> dict[str, tuple[str, str] | str]:
    """Each model's template and system, asked of the server (or its GGUF loaded) before any writes: a
    model it lacks is bad input, named with the fix, and the comparison leaves nothing; another error
    is kept, to be reported in the model's column."""
    import ollama

    from engines.local_engine import ModelNotLoadable

    shown: dict[str, tuple[str, str] | str] = {}
    missing = []
    for label, model in models.items():
        try:
            info = client.show(model)
            shown[label] = (info.template or "", serving.system_of(info.modelfile or ""))
        except ollama.ResponseError as e:
            if e.status_code == 404:
                missing.append(f"{label}={model} ({e.error})")
            shown[label] = e.error
        except ModelNotLoadable as e:  # the local engine: a GGUF that is not there or does not load
            missing.append(f"{label}={model} ({e})")
    if missing:
        raise CompareError(
            f"not on the server: {'; '.join(missing)}: pull or publish it (or fix its --model), then rerun"
        )
    return shown


def score_runs(runs: list[ModelRun], workers: int | None = None, scorer=None) -> dict[str, list[dict]]:
    """Per model, each output's scores (its answer scored, parse and length fields added)."""
    scorer = scorer or metrics.Scorer()
    scored = {}
    for run in runs:
        rows = metrics.score_outputs(
            [o["output"] for o in run.outputs], [o["length"] for o in run.outputs], workers, scorer
        )
        scored[run.label] = [{"model": run.label, **o, **r} for o, r in zip(run.outputs, rows, strict=True)]
    return scored


def summarize_runs(runs: list[ModelRun], scored: dict[str, list[dict]]) -> dict:
    keys = ("words", *metrics.SCORE_KEYS, *metrics.OUTPUT_KEYS)
    return {
        run.label: {
            "model": run.model,
            "status": run.status,
            "error": run.error,
            "note": run.note,
            "outputs": len(run.outputs),
            "expected": run.expected,
            **metrics.summarize(scored[run.label], keys),
        }
        for run in runs
    }
