"""PEFT LoRA adapter -> GGUF LoRA adapter that llama.cpp and Ollama load (`story-pipeline export-gguf`).

Layout as llama.cpp's convert_lora_to_gguf.py writes it and src/llama-adapter.cpp checks it: the base's
GGUF tensor name plus `.lora_a` / `.lora_b`, A as (r, in) and B as (out, r) in numpy order (not
transposed), `general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`. llama.cpp applies
`alpha/r` with one alpha for the whole file and r read from each B; PEFT's per-module scale (rsLoRA,
alpha_pattern, rank_pattern) is matched exactly by writing the right alpha and, where one alpha cannot
serve every module, folding the remaining factor into that module's B.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np

from contract import chat_template
from pipeline.export.arch import BaseModel, Transform, load_base
from pipeline.export.gguf_write import PlannedTensor, WriteReport, choose_type, plan_notes, write_gguf
from pipeline.export.peft_adapter import MERGE_HINT, Adapter, AdapterError, LoraModule, load_adapter

# Safetensors dtypes whose bytes are already the GGML type: copied as they are, never decoded.
SAME_TYPE = {"F32": gguf.GGMLQuantizationType.F32, "F16": gguf.GGMLQuantizationType.F16}


def check_against_base(adapter: Adapter, base: BaseModel) -> None:
    """Refuse an adapter trained on another architecture or size than BASE, before writing anything."""
    for m in adapter.modules:
        layer = re.search(r"\.layers\.(\d+)\.", m.key)
        if layer and int(layer.group(1)) >= base.n_layers:
            raise AdapterError(
                f"{m.key} is in layer {layer.group(1)} but BASE has {base.n_layers} layers: "
                "the adapter was trained on another model than --base"
            )
        if base.gguf_name(m.weight) is None:
            raise AdapterError(
                f"target module {m.key} has no GGUF tensor in the {base.arch} architecture "
                f"(wrong --base, or a module llama.cpp cannot adapt); {MERGE_HINT}"
            )
        if m.key.endswith("lm_head") and base.tied:
            raise AdapterError(
                f"{m.key}: BASE ties lm_head to the embeddings, so llama.cpp has no output tensor to adapt; "
                + MERGE_HINT
            )
        expected = base.projection_shape(m.key)
        if expected and (m.out_features, m.in_features) != expected:
            raise AdapterError(
                f"{m.key} is {m.out_features}x{m.in_features} in the adapter but {expected[0]}x{expected[1]} "
                f"in BASE ({base.folder}): the adapter was trained on another model size or architecture"
            )
    declared = adapter.config.get("base_model_name_or_path")
    if declared and (Path(declared) / "config.json").is_file():
        other = load_base(declared)
        if other.model_type != base.model_type:
            raise AdapterError(
                f"the adapter was trained on {declared} ({other.model_type}) but BASE is {base.model_type}"
            )


def fold_factor(m: LoraModule, gguf_alpha: float) -> float:
    """What B must be multiplied by so llama.cpp's gguf_alpha/r equals PEFT's scale for this module."""
    return m.scale * m.rank / gguf_alpha


def plan_adapter(adapter: Adapter, base: BaseModel, outtype: str) -> tuple[list[PlannedTensor], list[str]]:
    plan, notes = [], []
    alpha = adapter.gguf_alpha
    if alpha <= 0:
        raise AdapterError("lora_alpha is 0 or negative: llama.cpp would read 0 as 'no scaling' (scale 1)")
    for m in adapter.modules:
        name = base.gguf_name(m.weight)
        assert name is not None
        factor = fold_factor(m, alpha)
        if not math.isclose(factor, 1.0, rel_tol=1e-9):
            notes.append(
                f"{m.key}: alpha {m.alpha:g} / rank {m.rank} differ from the file's; "
                f"folded x{factor:.6g} into lora_b"
            )
        for suffix, tensor, shape, transform in (
            ("lora_a", m.a, (m.rank, m.in_features), None),
            ("lora_b", m.b, (m.out_features, m.rank), _b_transform(factor, base.row_transform(m.weight))),
        ):
            full = f"{name}.{suffix}"
            qtype, _ = choose_type(full, shape, outtype)
            same_bytes = transform is None and SAME_TYPE.get(adapter.file.dtype(tensor)) == qtype
            copy = (adapter.file.path, *adapter.file.byte_range(tensor)) if same_bytes else None
            plan.append(PlannedTensor(full, shape, qtype, _loader(adapter, tensor, transform), copy))
    return plan, notes + plan_notes(plan, outtype)


def _b_transform(factor: float, rows: Transform | None) -> Transform | None:
    if factor == 1.0 and rows is None:
        return None

    def apply(b: np.ndarray) -> np.ndarray:
        if rows:
            b = rows(b)  # the base weight's rows are permuted / scaled the same way
        return b * np.float32(factor) if factor != 1.0 else b

    return apply


def _loader(adapter: Adapter, tensor: str, transform: Transform | None) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        data = adapter.file.read(tensor)
        return transform(data) if transform else data

    return load


def _trained_template(adapter_dir: Path) -> chat_template.ChatTemplate | None:
    try:
        return chat_template.of_folder(adapter_dir)
    except (ValueError, OSError):  # a training.json or tokenizer config we cannot read: nothing to carry
        return None


def export_adapter(
    adapter_dir: str | Path,
    base_dir: str | Path,
    out: str | Path,
    outtype: str = "f32",
    overwrite: bool = False,
    on_tensor: Callable[[str], None] | None = None,
) -> WriteReport:
    adapter = load_adapter(adapter_dir)
    base = load_base(base_dir)
    check_against_base(adapter, base)
    plan, notes = plan_adapter(adapter, base, outtype)
    alpha = adapter.gguf_alpha
    trained = _trained_template(Path(adapter_dir))

    def metadata(w: gguf.GGUFWriter) -> None:
        w.add_type(gguf.GGUFType.ADAPTER)
        if trained is not None:  # the chat template travels with the adapter into `modelfile`
            w.add_string(chat_template.GGUF_KEY, trained.encoded())
        w.add_string(gguf.Keys.Adapter.TYPE, "lora")
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        w.add_name(f"{Path(adapter_dir).resolve().name} (LoRA for {Path(base_dir).resolve().name})")
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    report = write_gguf(Path(out), base.arch, metadata, plan, overwrite, on_tensor)
    if adapter.rslora:
        notes.insert(
            0, f"rsLoRA: wrote alpha {alpha:g} = lora_alpha x sqrt(r) so llama.cpp's alpha/r matches"
        )
    report.notes = notes
    return report
