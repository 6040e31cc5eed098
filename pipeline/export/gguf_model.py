"""A Hugging Face causal LM (optionally with a LoRA merged in) -> full GGUF model, then llama.cpp quantize.

One writer serves `export-base` (the un-merged base, which verifying an adapter needs) and
`export-merged --format gguf`. Metadata follows llama.cpp's converter for Qwen2 and Llama/Mistral:
hyper-parameters under `{arch}.`, the tokenizer (gguf_vocab), q/k rows permuted for Llama, no output
tensor when lm_head is tied. K-quants have no numpy implementation, so quantized files come from
llama.cpp's own `llama_model_quantize` run on the F16 file, as llama-quantize and Ollama do.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import gguf
import numpy as np

from contract.atomic import atomic_path
from pipeline.export.arch import BaseModel, BaseModelError, permute_rows
from pipeline.export.gguf_vocab import add_tokenizer
from pipeline.export.gguf_write import (
    FILE_TYPES,
    PlannedTensor,
    WriteReport,
    choose_type,
    plan_notes,
    write_gguf,
)

QUANTIZE_FTYPES = {"q8_0": 7, "q4_0": 2, "q4_k_m": 15}  # llama_ftype values (llama.h)
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
    w.add_feed_forward_length(int(base.hp("intermediate_size")))
    w.add_head_count(base.n_head)
    w.add_head_count_kv(base.n_kv_head)
    w.add_layer_norm_rms_eps(float(base.hp("rms_norm_eps")))
    rope = base.rope
    w.add_rope_freq_base(float(rope["rope_theta"]))
    if rope["rope_type"] == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(rope["factor"]))
    elif rope["rope_type"] == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(rope["factor"]))
        w.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))
    elif rope["rope_type"] not in ("default", "llama3"):
        raise BaseModelError(f"rope type {rope['rope_type']!r} is not written by this exporter")
    if "head_dim" in base.config:
        w.add_key_length(base.head_dim)
        w.add_value_length(base.head_dim)
    if base.arch == "llama":
        w.add_vocab_size(base.vocab_size)
        w.add_rope_dimension_count(base.head_dim)
    w.add_file_type(FILE_TYPES[outtype])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)


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


def plan_model(base: BaseModel, source: TensorSource, outtype: str) -> tuple[list[PlannedTensor], list[str]]:
    plan: list[PlannedTensor] = []
    notes: list[str] = []
    if base.rope["rope_type"] == "llama3":
        factors = llama3_rope_factors(base)
        plan.append(
            PlannedTensor("rope_freqs.weight", factors.shape, gguf.GGMLQuantizationType.F32, lambda: factors)
        )
    for hf in source.names():
        if hf.endswith(SKIP_SUFFIXES) or (hf == "lm_head.weight" and base.tied):
            continue
        name = base.gguf_name(hf)
        if name is None:
            raise BaseModelError(f"tensor {hf} has no GGUF name in the {base.arch} architecture")
        shape = tuple(source.shape(hf))
        qtype, _ = choose_type(name, shape, outtype)
        plan.append(PlannedTensor(name, shape, qtype, _loader(source, hf, base.permute_heads(hf))))
    return plan, notes + plan_notes(plan, outtype)


def _loader(source: TensorSource, hf: str, heads: int | None) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        data = source.read(hf)
        return permute_rows(data, heads) if heads else data

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
    if kind not in QUANTIZE_FTYPES:
        raise ValueError(f"unknown quantization {kind!r}: use one of {', '.join(QUANTIZE_FTYPES)}")
    try:
        import llama_cpp
    except ImportError:
        raise RuntimeError(
            "quantizing needs llama-cpp-python: pip install 'story-assistant[llama]'"
        ) from None
    t0 = time.perf_counter()
    with atomic_path(out, overwrite=overwrite) as tmp:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = QUANTIZE_FTYPES[kind]
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
