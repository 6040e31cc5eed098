"""The part of `ollama.Client` that `eval compare` uses (list, show, generate), answered by GGUFs run
in-process by the local engine, so the comparison runs with no server; and `generate_many`, which it
uses instead of one generate after another where a client has it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from contract.serving import GenerateRequest
from engines.local_batch import complete_many
from engines.local_engine import LocalModel

#: Sequences one model decodes together in `generate_many`: 48 outputs of the demo's merged SmolLM2-135M Q4
#: on 2 cores took 24.0 s 8 at a time, 20.9 s 16, 20.7 s 48 (benchmarks/bench_generate.py).
PARALLEL = 16


@dataclass
class Shown:
    """What `ollama.Client.show` gives, for code written against it."""

    template: str
    modelfile: str = ""
    parameters: str = ""


@dataclass
class GenerateChunk:
    """One streamed line of `ollama.Client.generate`, for code written against it."""

    response: str
    done: bool = False
    done_reason: str | None = None
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    total_duration: int | None = None
    eval_duration: int | None = None


class LocalClient:
    """The part of `ollama.Client` that `eval compare` uses, answered by local models (name -> GGUF)."""

    def __init__(self, models: Mapping[str, tuple[str | Path, str | Path | None]], n_ctx: int = 4096):
        self.specs = dict(models)
        self.n_ctx = n_ctx
        self.loaded: dict[str, LocalModel] = {}

    def _model(self, name: str) -> LocalModel:
        if name not in self.loaded:
            for other in list(self.loaded):  # one model in memory at a time, as Ollama on a small box
                self.loaded.pop(other).close()
            gguf, lora = self.specs[name]
            self.loaded[name] = LocalModel(gguf, lora, self.n_ctx, name=name)
        return self.loaded[name]

    def list(self) -> list[str]:
        return list(self.specs)

    def show(self, model: str) -> Shown:
        return Shown(self._model(model).template)

    def generate(
        self,
        model: str,
        prompt: str,
        raw: bool = False,
        system: str | None = None,
        stream: bool = True,
        options: Mapping | None = None,
    ) -> Iterator[GenerateChunk]:
        request = GenerateRequest(prompt, raw, prompt, system)
        for c in self._model(model).stream(request, options):
            if (s := c.stats) is None:
                yield GenerateChunk(c.text)
                continue
            counts = s["prompt_eval_count"], s["eval_count"], s["total_duration"], s["eval_duration"]
            yield GenerateChunk(c.text, True, s["done_reason"], *counts)

    def generate_many(
        self, model: str, asks: Sequence[tuple[GenerateRequest, Mapping]], on_done=None
    ) -> Sequence[tuple[str, str, int]]:
        """Every (request, options) of one model decoded together (`PARALLEL` at a time, as Ollama's
        runner batches parallel requests): each output's text, done_reason and eval_count, in order."""
        done = complete_many(self._model(model), asks, PARALLEL, on_done)
        return [(text, f["done_reason"], f["eval_count"]) for text, f in done]

    def close(self) -> None:
        for m in self.loaded.values():
            m.close()
        self.loaded.clear()
