"""Many requests to one local model decoded together, as Ollama's runner batches parallel requests.

`eval compare` asks one model for every context and sample before the next model loads; one sequence at
a time leaves most of a CPU's arithmetic idle (a decode step is a few matrix-vector products). Here the
jobs share each decode step: `parallel` slots in one llama.cpp context, one KV stream per slot, and a job
takes the next free slot as another finishes (continuous batching, as llama.cpp's server does it).

Each job keeps its own sampler, made and seeded as `LocalModel.stream` makes it, and its own stops and
token budget, so its output does not depend on its neighbours beyond the float rounding of batched matrix
products. Jobs with the same prompt (a context's samples) admitted together read it once: the KV cells are
copied and each samples its first token from the same logits.
"""

from __future__ import annotations

import ctypes
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from contract.serving import GenerateRequest
from engines.local_engine import EngineError, Figures, LocalModel, figures
from engines.text_stream import StreamText

if TYPE_CHECKING:
    from llama_cpp._internals import LlamaContext, LlamaSampler

#: Tokens per llama_decode call while a prompt is read (llama-cpp-python's own n_batch).
PROMPT_BATCH = 512


@dataclass
class _Job:
    index: int
    prompt: list[int]
    budget: int
    text: StreamText
    sampler: LlamaSampler
    started: int = 0
    first: int | None = None
    count: int = 0
    pieces: list[str] = field(default_factory=list)
    token: int = -1  # the sampled token the next step reads


def complete_many(
    model: LocalModel,
    jobs: Sequence[tuple[GenerateRequest, Mapping]],
    parallel: int = 16,
    on_done: Callable[[int], None] | None = None,
) -> list[tuple[str, Figures]]:
    """Each job's output and figures, in order; `on_done(i)` as job i finishes. Bad input (a prompt
    longer than the model's context) is raised before anything is decoded."""
    if parallel < 1:
        raise ValueError(f"parallel must be at least 1, not {parallel}")
    queue = [_prepare(model, i, request, options) for i, (request, options) in enumerate(jobs)]
    if not queue:
        return []
    slots = min(parallel, len(queue))
    most = max(len(j.prompt) + j.budget for j in queue)  # the most cells one job can fill
    width = -(-most // 256) * 256  # llama.cpp pads a context to 256 cells, then splits it among the slots
    with _Batch(model, slots, width) as batch:
        done = batch.run(queue, on_done)
    return [done[i] for i in range(len(queue))]


def _prepare(model: LocalModel, index: int, request: GenerateRequest, options: Mapping) -> _Job:
    prompt = model.prompt_tokens(request)
    sampler = model.llm._init_sampler(**model.sampling(options))
    stops = StreamText(model.stops(request, options))
    return _Job(index, prompt, model.token_budget(len(prompt), options), stops, sampler)


def _twins(queue: list[_Job], most: int) -> list[list[_Job]]:
    """The jobs in runs of one prompt (a context's samples), each run at most `most` long."""
    groups: list[list[_Job]] = []
    for job in queue:
        if groups and groups[-1][0].prompt == job.prompt and len(groups[-1]) < most:
            groups[-1].append(job)
        else:
            groups.append([job])
    return groups


class _Batch:
    """A llama.cpp context of `slots` sequences, each with room for `width` cells, and its decode loop."""

    def __init__(self, model: LocalModel, slots: int, width: int):
        import llama_cpp
        from llama_cpp._internals import LlamaContext

        self.model, self.lib = model, llama_cpp
        llm = model.llm
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)  # threads, attention
        params.n_seq_max, params.kv_unified = slots, False  # one KV stream per slot
        params.n_ctx = slots * width
        params.n_batch = params.n_ubatch = max(PROMPT_BATCH, slots)
        self.ctx: LlamaContext = LlamaContext(model=llm._model, params=params, verbose=False)
        if llm._lora_adapter is not None:  # a context applies the adapters set on it, not the Llama's
            # as llama-cpp-python's Llama sets it, whose binding types the pointer loosely
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(llm._lora_adapter)  # type: ignore[misc]
            scales = (ctypes.c_float * 1)(llm.lora_scale)
            if llama_cpp.llama_set_adapters_lora(self.ctx.ctx, adapters, 1, scales):
                raise EngineError(f"llama.cpp could not apply the adapter {model.lora} to a batch context")
        self.batch = llama_cpp.llama_batch_init(params.n_batch, 0, 1)
        self.slots: list[_Job | None] = [None] * slots
        self.done: dict[int, tuple[str, Figures]] = {}
        self.last_read: tuple[int, int] | None = None  # the slot whose prompt the last decode read, its row

    def __enter__(self) -> _Batch:
        return self

    def __exit__(self, *_exc) -> None:
        self.lib.llama_batch_free(self.batch)
        self.ctx.close()

    def run(self, queue: list[_Job], on_done: Callable[[int], None] | None) -> dict[int, tuple[str, Figures]]:
        groups = deque(_twins(queue, len(self.slots)))
        while True:
            free = [slot for slot, job in enumerate(self.slots) if job is None]
            while groups and len(groups[0]) <= len(free):  # twins wait for room to be admitted together
                for job in groups.popleft():
                    self._admit(free.pop(0), job, on_done)
                free = [slot for slot, job in enumerate(self.slots) if job is None]
            live = [(slot, job) for slot, job in enumerate(self.slots) if job is not None]
            if not live:  # with every slot free, the loop above admitted all that was left
                return self.done
            self._clear()
            for slot, job in live:
                self._add(job.token, len(job.prompt) + job.count - 1, slot, True)
            self._decode()
            for row, (slot, job) in enumerate(live):
                self._take(slot, job, job.sampler.sample(self.ctx, row), on_done)

    def _admit(self, slot: int, job: _Job, on_done) -> None:
        """Read the job's prompt into the slot (or copy its twin's) and sample its first token."""
        job.started = time.monotonic_ns()
        self.slots[slot] = job
        last = self.last_read
        source = self.slots[last[0]] if last else None
        if last and source and source.prompt == job.prompt:
            # the prompt read just before: copy its cells (llama.cpp copies between KV streams only
            # whole, llama-kv-cache.cpp seq_cp) and sample from the very logits the first job had
            self.lib.llama_memory_seq_cp(self.ctx.memory, last[0], slot, -1, -1)
            row = last[1]
        else:
            for at in range(0, len(job.prompt), PROMPT_BATCH):
                self._clear()
                chunk = job.prompt[at : at + PROMPT_BATCH]
                for k, token in enumerate(chunk):
                    self._add(token, at + k, slot, at + k == len(job.prompt) - 1)
                self._decode()
            row = self.batch.n_tokens - 1
            self.last_read = (slot, row)
        self._take(slot, job, job.sampler.sample(self.ctx, row), on_done)

    def _take(self, slot: int, job: _Job, token: int, on_done) -> None:
        """One sampled token: kept for the next step, or the end of the job (as `LocalModel.stream` ends)."""
        job.first = job.first or time.monotonic_ns()
        job.count += 1
        reason = None
        if self.model.ends(token):
            reason = "stop"
        else:
            job.pieces.append(job.text.add(self.model.llm.detokenize([token])))
            if job.text.stopped or job.count >= job.budget:
                reason = "stop" if job.text.stopped else "length"
        if reason is None:
            job.token = token
            return
        job.pieces.append(job.text.add(b"", final=True))
        shown = "".join(job.pieces)
        self.done[job.index] = (shown, figures(len(job.prompt), job.count, reason, job.started, job.first))
        self.slots[slot] = None
        self.lib.llama_memory_seq_rm(self.ctx.memory, slot, -1, -1)
        if on_done:
            on_done(job.index)

    def _clear(self) -> None:
        self.batch.n_tokens = 0

    def _add(self, token: int, pos: int, seq: int, logits: bool) -> None:
        n = self.batch.n_tokens
        self.batch.token[n], self.batch.pos[n], self.batch.logits[n] = token, pos, logits
        self.batch.n_seq_id[n], self.batch.seq_id[n][0] = 1, seq
        self.batch.n_tokens = n + 1

    def _decode(self) -> None:
        self.last_read = None  # the logits a prompt left are overwritten
        if (code := self.lib.llama_decode(self.ctx.ctx, self.batch)) != 0:
            raise EngineError(
                f"llama_decode returned {code} for a batch of {self.batch.n_tokens} tokens: the machine may "
                "lack the memory for this many sequences at once (lower engines.local_engine.PARALLEL)"
            )
