"""What a base model is, read from its Hugging Face config.json: GGUF architecture, sizes, tensor names.

Both exports need the same facts: the GGUF tensor name of each Hugging Face weight (from gguf-py's own
name map), the shape each projection must have, and whether the architecture stores q/k rows permuted
(llama.cpp's Llama converter reorders the rows of q_proj/k_proj for its RoPE layout; Qwen2's does not).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from contract.modelfile.inspect import HF_TO_GGUF_ARCH

# Architectures whose llama.cpp converter permutes q/k rows (LlamaModel.undo_permute in convert_hf_to_gguf).
PERMUTED_ARCHS = {"llama"}


class BaseModelError(ValueError):
    pass


@dataclass(frozen=True)
class BaseModel:
    folder: Path
    config: dict

    @property
    def model_type(self) -> str:
        return self.config.get("model_type", "")

    @property
    def arch(self) -> str:
        return HF_TO_GGUF_ARCH[self.model_type]

    def hp(self, key: str, default=None):
        value = self.config.get(key, default)
        if value is None and default is None:
            raise BaseModelError(f"{self.folder}/config.json has no {key!r}")
        return value

    @property
    def n_layers(self) -> int:
        return int(self.hp("num_hidden_layers"))

    @property
    def hidden(self) -> int:
        return int(self.hp("hidden_size"))

    @property
    def n_head(self) -> int:
        return int(self.hp("num_attention_heads"))

    @property
    def n_kv_head(self) -> int:
        return int(self.config.get("num_key_value_heads") or self.n_head)

    @property
    def head_dim(self) -> int:
        return int(self.config.get("head_dim") or self.hidden // self.n_head)

    @property
    def vocab_size(self) -> int:
        return int(self.hp("vocab_size"))

    @property
    def tied(self) -> bool:
        return bool(self.config.get("tie_word_embeddings", False))

    @property
    def rope(self) -> dict:
        """Rope settings: transformers 5 keeps them in rope_parameters, older configs in rope_scaling."""
        params = dict(self.config.get("rope_parameters") or self.config.get("rope_scaling") or {})
        params.setdefault("rope_theta", self.config.get("rope_theta", 10000.0))
        params["rope_type"] = params.get("rope_type") or params.get("type") or "default"
        return params

    @cached_property
    def name_map(self):
        import gguf

        arch_enum = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[self.arch]
        return gguf.get_tensor_name_map(arch_enum, self.n_layers)

    def gguf_name(self, hf_name: str) -> str | None:
        """blk.N.attn_q.weight for model.layers.N.self_attn.q_proj.weight; None if GGUF has none."""
        return self.name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))

    def projection_shape(self, module: str) -> tuple[int, int] | None:
        """(out_features, in_features) of a Linear module, from the config; None if not a known one."""
        q, kv, h = self.n_head * self.head_dim, self.n_kv_head * self.head_dim, self.hidden
        ff = int(self.hp("intermediate_size"))
        leaf = module.rsplit(".", 1)[-1]
        shapes = {
            "q_proj": (q, h),
            "k_proj": (kv, h),
            "v_proj": (kv, h),
            "o_proj": (h, q),
            "gate_proj": (ff, h),
            "up_proj": (ff, h),
            "down_proj": (h, ff),
            "lm_head": (self.vocab_size, h),
        }
        return shapes.get(leaf)

    def permute_heads(self, hf_name: str) -> int | None:
        """Head count to permute this tensor's rows by for llama.cpp's RoPE layout, or None."""
        if self.arch not in PERMUTED_ARCHS:
            return None
        if ".q_proj." in hf_name:
            return self.n_head
        if ".k_proj." in hf_name:
            return self.n_kv_head
        return None


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder rows from Hugging Face's rotate-half layout to llama.cpp's interleaved RoPE layout."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load_base(folder: str | Path) -> BaseModel:
    """Read BASE: a Hugging Face model folder, or a folder with only its config.json."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise BaseModelError(
            f"{folder} has no config.json: --base must be the Hugging Face folder of the model the adapter "
            "was trained from (its config.json is enough for export-gguf)"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BaseModelError(f"{config_path} is not valid JSON ({e})") from None
    config = config.get("text_config", config) if "model_type" not in config else config
    if config.get("model_type") not in HF_TO_GGUF_ARCH:
        raise BaseModelError(
            f"{config_path}: model_type {config.get('model_type')!r} is not supported; "
            f"supported: {', '.join(sorted(HF_TO_GGUF_ARCH))}"
        )
    return BaseModel(folder, config)
