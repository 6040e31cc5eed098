"""A Hugging Face causal LM (optionally with a LoRA merged in) -> full GGUF model, then llama.cpp quantize.

One writer serves `export-base` (the un-merged base, which verifying an adapter needs) and
`export-merged --format gguf`. Metadata follows llama.cpp's converter for each family in arch.ARCHS:
hyper-parameters under `{arch}.` (the family's own ones from its ArchSpec), the tokenizer (gguf_vocab),
weights through the family's transform (q/k permutation, Gemma's norm offset), no output tensor when
lm_head is tied. K-quants have no numpy implementation, so quantized files come from
llama.cpp's own `llama_model_quantize` run on the F16 file, as llama-quantize and Ollama do.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import gguf
import numpy as np

from pipeline.export.arch import BaseModel, BaseModelError, Transform
from pipeline.export.gguf_vocab import add_tokenizer
from pipeline.export.gguf_write import (
    FILE_TYPES,
    PlannedTensor,
    WriteReport,
    choose_type,
    plan_notes,
    write_gguf,
)
from pipeline.export.quants import quant_type
from plumbing.atomic import atomic_path

SKIP_SUFFIXES = (".rotary_emb.inv_freq",)


class TensorSource(Protocol):
    def names(self) -> list[str]: ...
    def shape(self, name: str) -> tuple[int, ...]: ...
    def read(self, name: str) -> np.ndarray: ...


def add_hparams(w: gguf.GGUFWriter, base: BaseModel, outtype: str) -> None:
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(str(base.config.get("_name_or_path") or base.folder.resolve().name))
    w.add_block_count(base.n_layers)
    w.add_context_length(int(base.hp("max_position_embeddings")))
    w.add_embedding_length(base.hidden)
    w.add_feed_forward_length(base.n_ff)
    w.add_head_count(base.n_head)
    w.add_head_count_kv(base.n_kv_head)
    w.add_layer_norm_rms_eps(float(base.hp("rms_norm_eps")))
    add_rope(w, base)
    if "head_dim" in base.config:
        w.add_key_length(base.head_dim)
        w.add_value_length(base.head_dim)
    for key, value in arch_hparams(base).items():
        getattr(w, f"add_{key}")(value)  # keys are GGUFWriter's own add_* names: typed by gguf-py
    w.add_file_type(FILE_TYPES[outtype])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)


def add_rope(w: gguf.GGUFWriter, base: BaseModel) -> None:
    """The global layers' rope; llama3 and longrope scaling also need tensors (extra_tensors)."""
    rope = base.rope
    kind = rope["rope_type"]
    if kind not in base.spec.rope_types:
        raise BaseModelError(f"rope type {kind!r} is not written by this exporter for {base.model_type}")
    w.add_rope_freq_base(float(rope["rope_theta"]))
    if kind == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(rope["factor"]))
    elif kind == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(rope["factor"]))
        w.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))
    elif kind == "longrope":  # llama.cpp multiplies cos/sin by it, as transformers does
        w.add_rope_scaling_attn_factors(longrope_attn_factor(base))


def arch_hparams(base: BaseModel) -> dict[str, Any]:
    """Metadata beyond the common set: the family's own (ArchSpec.hparams) and its sliding window."""
    out = base.spec.hparams(base)
    sliding = base.sliding_layers()
    if base.spec.swa and any(sliding):
        out["sliding_window"] = int(base.hp("sliding_window"))
        out["sliding_window_pattern"] = swa_pattern(sliding)
        if base.local_rope_theta is not None:
            out["rope_freq_base_swa"] = base.local_rope_theta
    return out


def swa_pattern(sliding: list[bool]) -> int | list[bool]:
    """llama.cpp's period N (layer i is global when i % N == N - 1) where one gives these layers, else
    the per-layer list, which llama.cpp also reads."""
    n = len(sliding)
    for period in range(1, n + 2):
        if [i % period < period - 1 for i in range(n)] == sliding:
            return period
    return sliding


def longrope_attn_factor(base: BaseModel) -> float:
    """transformers' LongRoPE attention factor: given, or from the context extension ratio."""
    rope = base.rope
    if rope.get("attention_factor") is not None:
        return float(rope["attention_factor"])
    orig = float(rope.get("original_max_position_embeddings") or base.hp("original_max_position_embeddings"))
    factor = float(rope.get("factor") or int(base.hp("max_position_embeddings")) / orig)
    return math.sqrt(1 + math.log(factor) / math.log(orig)) if factor > 1.0 else 1.0


def llama3_rope_factors(base: BaseModel) -> np.ndarray:
    """The rope_freqs tensor llama.cpp uses for Llama 3.1-style rope scaling."""
    rope, dim = base.rope, base.head_dim
    factor, low, high = float(rope["factor"]), float(rope["low_freq_factor"]), float(rope["high_freq_factor"])
    old_ctx = float(rope["original_max_position_embeddings"])
    freqs = 1.0 / (float(rope["rope_theta"]) ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def extra_tensors(base: BaseModel) -> dict[str, np.ndarray]:
    """Tensors llama.cpp reads that transformers computes from the config: rope frequency factors."""
    rope = base.rope
    if rope["rope_type"] == "llama3":
        return {"rope_freqs.weight": llama3_rope_factors(base)}
    if rope["rope_type"] == "longrope":
        out = {}
        for which in ("long", "short"):
            factors = np.asarray(rope[f"{which}_factor"], dtype=np.float32)
            if factors.shape != (base.rope_dims // 2,):
                raise BaseModelError(
                    f"rope {which}_factor has {factors.size} values; {base.rope_dims // 2} expected"
                )
            out[f"rope_factors_{which}.weight"] = factors
        return out
    return {}


def plan_model(base: BaseModel, source: TensorSource, outtype: str) -> tuple[list[PlannedTensor], list[str]]:
    f32 = gguf.GGMLQuantizationType.F32
    extra = extra_tensors(base)
    plan = [PlannedTensor(name, data.shape, f32, _constant(data)) for name, data in extra.items()]
    notes = []
    sliding = base.sliding_layers()
    if any(sliding) and not base.spec.swa:
        window = base.hp("sliding_window")
        notes.append(
            f"sliding_window {window}: llama.cpp's {base.arch} attends to the whole context, so it computes "
            f"what transformers computes only up to {window} tokens"
        )
    for hf in source.names():
        if hf.endswith(SKIP_SUFFIXES) or (hf == "lm_head.weight" and base.tied):
            continue
        name = base.gguf_name(hf)
        if name is None:
            raise BaseModelError(f"tensor {hf} has no GGUF name in the {base.arch} architecture")
        shape = tuple(source.shape(hf))
        qtype, _ = choose_type(name, shape, outtype)
        plan.append(PlannedTensor(name, shape, qtype, _loader(source, hf, base.tensor_transform(hf))))
    return plan, notes + plan_notes(plan, outtype)


def _constant(data: np.ndarray) -> Callable[[], np.ndarray]:
    return lambda: data


def _loader(source: TensorSource, hf: str, transform: Transform | None) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        data = source.read(hf)
        return transform(data) if transform else data

    return load


def write_model(
    base: BaseModel,
    source: TensorSource,
    tokenizer_dir: Path,
    out: Path,
    outtype: str = "f16",
    overwrite: bool = False,
    on_tensor: Callable[[str], None] | None = None,
    chat_template: str | None = None,
) -> WriteReport:
    """A full GGUF model; `chat_template` (a merged adapter's) replaces the tokenizer folder's."""
    plan, notes = plan_model(base, source, outtype)

    def metadata(w: gguf.GGUFWriter) -> None:
        add_hparams(w, base, outtype)
        add_tokenizer(w, tokenizer_dir, base.vocab_size, chat_template)

    report = write_gguf(out, base.arch, metadata, plan, overwrite, on_tensor)
    report.notes = notes
    return report


def quantize(src: Path, out: Path, kind: str, overwrite: bool = False, threads: int = 0) -> WriteReport:
    """Quantize an F16/F32 GGUF model with llama.cpp's llama_model_quantize (written atomically)."""
    qtype = quant_type(kind)
    try:
        import llama_cpp
    except ImportError as exc:
        raise RuntimeError("quantizing needs llama-cpp-python: pip install 'story-assistant[llama]'") from exc
    t0 = time.perf_counter()
    with atomic_path(out, overwrite=overwrite) as tmp:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = qtype.ftype
        params.nthread = threads
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
        if rc != 0:
            raise RuntimeError(f"llama_model_quantize failed on {src} (code {rc})")
        types: dict[str, int] = {}
        for t in gguf.GGUFReader(str(tmp)).tensors:
            types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    report = WriteReport(Path(out), tensors=sum(types.values()), types=types)
    report.bytes, report.seconds = Path(out).stat().st_size, time.perf_counter() - t0
    return report
