"""A PEFT LoRA adapter folder read without torch: its config, its A/B pairs and each module's scale.

PEFT computes `W·x + s·B(A·x)` with `s = alpha/r` (rsLoRA: `alpha/sqrt(r)`), where alpha and r can differ
per module through `alpha_pattern` / `rank_pattern`. Everything that is not a plain A/B pair (DoRA
magnitudes, bias tensors, full copies from `modules_to_save`, embedding LoRA) is refused by name here,
because a llama.cpp adapter cannot carry it: merging it into the base is the way to keep it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.export.safetensors_io import SafetensorsFile

PREFIX = "base_model.model."
MERGE_HINT = "merge it into the base instead: story-pipeline export-merged ADAPTER_DIR --base BASE_DIR -o OUT"


class AdapterError(ValueError):
    pass


@dataclass(frozen=True)
class LoraModule:
    key: str  # module path in the base model, e.g. model.layers.0.self_attn.q_proj
    a: str  # tensor names in adapter_model.safetensors
    b: str
    rank: int
    in_features: int
    out_features: int
    alpha: float
    scale: float  # PEFT's scaling for this module

    @property
    def weight(self) -> str:
        return f"{self.key}.weight"


@dataclass
class Adapter:
    folder: Path
    config: dict
    file: SafetensorsFile
    modules: list[LoraModule]

    @property
    def rslora(self) -> bool:
        return bool(self.config.get("use_rslora"))

    @property
    def gguf_alpha(self) -> float:
        """The alpha llama.cpp needs so that its alpha/r equals PEFT's scale at the configured rank."""
        alpha, r = float(self.config["lora_alpha"]), int(self.config["r"])
        return alpha * math.sqrt(r) if self.rslora else alpha


def pattern_value(patterns: dict, key: str, default):
    """PEFT's get_pattern_key: the first pattern that matches the end of the module path."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", key):
            return value
    return default


def _refuse_config(cfg: dict, where: Path) -> None:
    if cfg.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"{where}: peft_type is {cfg.get('peft_type')!r}; only LoRA adapters are exported")
    if cfg.get("use_dora"):
        raise AdapterError(f"{where}: DoRA adapters (use_dora) have no llama.cpp form; {MERGE_HINT}")
    if cfg.get("modules_to_save"):
        raise AdapterError(
            f"{where}: modules_to_save {cfg['modules_to_save']} are full weight copies a GGUF adapter cannot "
            f"carry; {MERGE_HINT}"
        )
    if cfg.get("bias", "none") != "none" or cfg.get("lora_bias"):
        raise AdapterError(
            f"{where}: trained biases (bias={cfg.get('bias')!r}) are lost in a GGUF adapter; {MERGE_HINT}"
        )
    if cfg.get("fan_in_fan_out"):
        raise AdapterError(f"{where}: fan_in_fan_out (GPT-2 style Conv1D) adapters are not supported")
    if cfg.get("target_parameters"):
        raise AdapterError(
            f"{where}: LoRA on raw parameters (target_parameters) is not supported; {MERGE_HINT}"
        )
    if "lora_alpha" not in cfg or "r" not in cfg:
        raise AdapterError(f"{where}: adapter_config.json lacks lora_alpha or r")


def _classify_extra(name: str, where: Path) -> AdapterError:
    if "lora_magnitude_vector" in name:
        return AdapterError(f"{where}: {name} is a DoRA magnitude; {MERGE_HINT}")
    if "lora_embedding_" in name:
        return AdapterError(f"{where}: {name} is LoRA on the token embeddings, not exported; {MERGE_HINT}")
    if name.endswith(".bias"):
        return AdapterError(
            f"{where}: {name} is a trained bias, which a GGUF adapter cannot carry; {MERGE_HINT}"
        )
    return AdapterError(
        f"{where}: {name} is a full weight (modules_to_save, e.g. resized embeddings), not a LoRA pair; "
        f"{MERGE_HINT}"
    )


def load_adapter(folder: str | Path, strict: bool = True) -> Adapter:
    """Read and check an adapter folder; strict=False keeps what only a merge can use (DoRA, biases...)."""
    folder = Path(folder)
    cfg_path, st_path = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    if not folder.is_dir() or not cfg_path.is_file():
        raise AdapterError(
            f"{folder} is not a PEFT adapter folder (no adapter_config.json): give the folder that "
            "save_pretrained() wrote, with adapter_config.json and adapter_model.safetensors"
        )
    if not st_path.is_file():
        pickle = (folder / "adapter_model.bin").exists()
        hint = " (adapter_model.bin is a pickle: re-save with safe_serialization=True)" if pickle else ""
        raise AdapterError(f"{folder} has no adapter_model.safetensors{hint}")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AdapterError(f"{cfg_path} is not valid JSON ({e})") from e
    if strict:
        _refuse_config(cfg, folder)
    file = SafetensorsFile(st_path)
    return Adapter(folder, cfg, file, _pair_modules(cfg, file, folder, strict))


def _pair_modules(cfg: dict, file: SafetensorsFile, where: Path, strict: bool) -> list[LoraModule]:
    halves: dict[str, dict[str, str]] = {}
    for name in file.entries:
        m = re.fullmatch(r"(.+)\.lora_([AB])(?:\.[^.]+)?\.weight", name)
        if not m:
            if strict:
                raise _classify_extra(name, where)
            continue
        key = m.group(1).removeprefix(PREFIX)
        halves.setdefault(key, {})[m.group(2)] = name
    if not halves:
        raise AdapterError(f"{where}/adapter_model.safetensors holds no LoRA tensors")
    r0, alpha0 = int(cfg["r"]), float(cfg["lora_alpha"])
    modules = []
    for key, pair in halves.items():
        if set(pair) != {"A", "B"}:
            raise AdapterError(f"{where}: {key} has lora_{''.join(pair)} but not its pair (corrupt adapter?)")
        (rank, n_in), (n_out, rank_b) = file.shape(pair["A"]), file.shape(pair["B"])
        if rank != rank_b:
            raise AdapterError(f"{where}: {key} has lora_A rank {rank} but lora_B rank {rank_b}")
        expected_r = int(pattern_value(cfg.get("rank_pattern") or {}, key, r0))
        if rank != expected_r:
            raise AdapterError(f"{where}: {key} has rank {rank} but the config says {expected_r}")
        alpha = float(pattern_value(cfg.get("alpha_pattern") or {}, key, alpha0))
        scale = alpha / math.sqrt(rank) if cfg.get("use_rslora") else alpha / rank
        modules.append(LoraModule(key, pair["A"], pair["B"], rank, n_in, n_out, alpha, scale))
    return sorted(modules, key=_module_order)


def _module_order(m: LoraModule):
    layer = re.search(r"\.(\d+)\.", m.key)
    return (int(layer.group(1)) if layer else -1, m.key)
