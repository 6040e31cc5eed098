"""What a base model is, read from its Hugging Face config.json: GGUF architecture, sizes, tensor names.

Both exports need the same facts: the GGUF tensor name of each Hugging Face weight (from gguf-py's own
name map), the shape each projection must have, and how a weight must change on its way into the file
for llama.cpp to compute what transformers computes. Those changes differ per family and are described
once, in ARCHS (read off llama.cpp's convert_hf_to_gguf.py and its model loaders in src/models/):

- Llama/Mistral: llama.cpp's Llama converter reorders the rows of q_proj/k_proj for its RoPE layout;
- Gemma 2/3: their RMSNorm scales by (1 + w) where llama.cpp scales by w, so norms are stored as 1 + w;
  llama.cpp fixes the attention scale by model size instead of reading query_pre_attn_scalar, so a
  config whose scalar differs gets the difference folded into q (Gemma 2) or q_norm (Gemma 3);
- Phi-3: q/k/v and gate/up are single fused Linear layers in both worlds, kept fused.

A LoRA B goes through the same row transform as its base weight: (W + BA) transformed by rows is
T(W) + T(B)A, so the adapter stays consistent with the converted base.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

Transform = Callable[[np.ndarray], np.ndarray]

# Rope scalings llama.cpp implements for every family; llama3 needs Llama's rope_freqs tensor, longrope
# Phi-3's rope_factors_long/short.
ROPE_TYPES = frozenset({"default", "linear", "yarn"})
# The Linear layers of one block: what a LoRA targets and what llama.cpp can adapt.
SPLIT_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FUSED_LINEAR = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")


class BaseModelError(ValueError):
    pass


def _llama_hparams(base: BaseModel) -> dict[str, Any]:
    # llama.cpp's Llama loader refuses a rope dimension count other than the head size
    return {"vocab_size": base.vocab_size, "rope_dimension_count": base.head_dim}


def _phi3_hparams(base: BaseModel) -> dict[str, Any]:
    out: dict[str, Any] = {"rope_dimension_count": base.rope_dims}
    orig = base.rope.get("original_max_position_embeddings") or base.config.get(
        "original_max_position_embeddings"
    )
    if orig:  # longrope picks its long or short factors against this length
        out["rope_scaling_orig_ctx_len"] = int(orig)
    return out


def _gemma2_hparams(base: BaseModel) -> dict[str, Any]:
    # llama.cpp's Gemma 2 always soft-caps both (defaults 50 and 30); the config must say with what
    return {
        "attn_logit_softcapping": float(base.hp("attn_logit_softcapping")),
        "final_logit_softcapping": float(base.hp("final_logit_softcapping")),
    }


def _gemma3_hparams(base: BaseModel) -> dict[str, Any]:
    cap = base.config.get("final_logit_softcapping")
    return {"final_logit_softcapping": float(cap)} if cap else {}


def _no_hparams(base: BaseModel) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class ArchSpec:
    """How one Hugging Face model_type becomes a GGUF llama.cpp runs the same way."""

    gguf_arch: str
    linear: tuple[str, ...] = SPLIT_LINEAR
    permute_qk: bool = False  # q/k rows from rotate-half to interleaved RoPE (Llama's converter)
    norm_offset: float = 0.0  # added to every *norm.weight: Gemma's RMSNorm multiplies by (1 + w)
    tied_default: bool = False  # transformers' tie_word_embeddings when config.json leaves it out
    output_tensor: bool = True  # False: llama.cpp always reuses token_embd as the output (Gemma 2)
    swa: bool = False  # llama.cpp applies the config's sliding window (other archs attend to everything)
    swa_pattern: int | None = None  # transformers' default: every Nth layer is global
    q_scale_into: str | None = None  # q_proj or q_norm: where a query_pre_attn_scalar fix is folded
    large_layers: int | None = None  # layer count llama.cpp takes for the 27B (scale by n_embd/n_head)
    rope_types: frozenset[str] = ROPE_TYPES
    gelu: bool = False  # GELU MLP: llama.cpp's CPU backend evaluates it through an F16 table
    hparams: Callable[[BaseModel], dict[str, Any]] = _no_hparams  # GGUFWriter.add_<key>(value) pairs


# Hugging Face model_type -> how to write it (contract's HF_TO_GGUF_ARCH names the same GGUF archs).
ARCHS: dict[str, ArchSpec] = {
    "qwen2": ArchSpec("qwen2"),
    "qwen3": ArchSpec("qwen3"),
    "llama": ArchSpec("llama", permute_qk=True, rope_types=ROPE_TYPES | {"llama3"}, hparams=_llama_hparams),
    "mistral": ArchSpec("llama", permute_qk=True, hparams=_llama_hparams),
    "phi3": ArchSpec("phi3", FUSED_LINEAR, rope_types=ROPE_TYPES | {"longrope"}, hparams=_phi3_hparams),
    "gemma2": ArchSpec(
        "gemma2",
        norm_offset=1.0,
        tied_default=True,
        output_tensor=False,
        swa=True,
        swa_pattern=2,
        q_scale_into="q_proj",
        large_layers=46,
        gelu=True,
        hparams=_gemma2_hparams,
    ),
    "gemma3_text": ArchSpec(
        "gemma3",
        norm_offset=1.0,
        tied_default=True,
        swa=True,
        swa_pattern=6,
        q_scale_into="q_norm",
        large_layers=62,
        gelu=True,
        hparams=_gemma3_hparams,
    ),
}


@dataclass(frozen=True)
class BaseModel:
    folder: Path
    config: dict
    spec: ArchSpec = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "spec", ARCHS[self.model_type])

    @property
    def model_type(self) -> str:
        return self.config.get("model_type", "")

    @property
    def arch(self) -> str:
        return self.spec.gguf_arch

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
    def n_ff(self) -> int:
        return int(self.hp("intermediate_size"))

    @property
    def vocab_size(self) -> int:
        return int(self.hp("vocab_size"))

    @property
    def tied(self) -> bool:
        return bool(self.config.get("tie_word_embeddings", self.spec.tied_default))

    @property
    def rope_parameters(self) -> dict:
        """transformers 5 keeps rope settings in rope_parameters (per layer type for Gemma 3), older
        configs in rope_scaling beside rope_theta."""
        return dict(self.config.get("rope_parameters") or self.config.get("rope_scaling") or {})

    @property
    def rope(self) -> dict:
        """The global (full-attention) layers' rope settings, with rope_theta and rope_type filled in."""
        params = self.rope_parameters
        params = dict(params.get("full_attention", params))
        params.setdefault("rope_theta", self.config.get("rope_theta", 10000.0))
        kind = params.get("rope_type") or params.get("type") or "default"
        params["rope_type"] = "longrope" if kind == "su" else kind  # Phi-3's first name for it
        return params

    @property
    def local_rope_theta(self) -> float | None:
        """The sliding-window layers' rope base where it differs from the global one (Gemma 3)."""
        local = self.rope_parameters.get("sliding_attention", {}).get("rope_theta")
        local = local or self.config.get("rope_local_base_freq")
        return float(local) if local else None

    @property
    def rope_dims(self) -> int:
        factor = self.rope.get("partial_rotary_factor") or self.config.get("partial_rotary_factor") or 1.0
        return int(self.head_dim * float(factor))

    def sliding_layers(self) -> list[bool]:
        """Which layers transformers runs with a sliding attention window."""
        n = self.n_layers
        if not self.config.get("sliding_window") or self.config.get("use_sliding_window") is False:
            return [False] * n
        if types := self.config.get("layer_types"):
            return [t == "sliding_attention" for t in types]
        pattern = self.config.get("sliding_window_pattern") or self.spec.swa_pattern
        return [(i + 1) % pattern != 0 for i in range(n)] if pattern else [True] * n

    @property
    def q_scale(self) -> float:
        """The factor that makes llama.cpp's fixed attention scale equal query_pre_attn_scalar ** -0.5."""
        scalar = self.config.get("query_pre_attn_scalar")
        if not self.spec.q_scale_into or not scalar:
            return 1.0
        large = self.n_layers == self.spec.large_layers
        llama_cpp = self.hidden / self.n_head if large else self.head_dim  # its 1/sqrt(...) denominator
        return float(np.sqrt(llama_cpp / float(scalar)))

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
        q, kv, h, ff = self.n_head * self.head_dim, self.n_kv_head * self.head_dim, self.hidden, self.n_ff
        leaf = module.rsplit(".", 1)[-1]
        shapes = {
            "q_proj": (q, h),
            "k_proj": (kv, h),
            "v_proj": (kv, h),
            "qkv_proj": (q + 2 * kv, h),
            "o_proj": (h, q),
            "gate_proj": (ff, h),
            "up_proj": (ff, h),
            "gate_up_proj": (2 * ff, h),
            "down_proj": (h, ff),
            "lm_head": (self.vocab_size, h),
        }
        return shapes.get(leaf)

    def permute_heads(self, hf_name: str) -> int | None:
        """Head count to permute this tensor's rows by for llama.cpp's RoPE layout, or None."""
        if not self.spec.permute_qk:
            return None
        if ".q_proj." in hf_name:
            return self.n_head
        if ".k_proj." in hf_name:
            return self.n_kv_head
        return None

    def row_transform(self, hf_name: str) -> Transform | None:
        """What the rows of a Linear weight (or q_norm) need: the RoPE permutation, the attention scale.
        Linear in the rows, so it applies to a LoRA B as it does to the weight."""
        steps: list[Transform] = []
        heads = self.permute_heads(hf_name)
        if heads:
            steps.append(lambda w: permute_rows(w, heads))
        scale = self.q_scale
        if scale != 1.0 and f".{self.spec.q_scale_into}." in hf_name:
            steps.append(lambda w: w * np.float32(scale))
        return _compose(steps)

    def tensor_transform(self, hf_name: str) -> Transform | None:
        """What a base weight needs on its way into the GGUF: the norm offset, then the row transform."""
        steps: list[Transform] = []
        offset = self.spec.norm_offset
        if offset and hf_name.endswith("norm.weight"):
            steps.append(lambda w: w + np.float32(offset))
        rows = self.row_transform(hf_name)
        if rows:
            steps.append(rows)
        return _compose(steps)


def _compose(steps: list[Transform]) -> Transform | None:
    if not steps:
        return None

    def apply(w: np.ndarray) -> np.ndarray:
        for step in steps:
            w = step(w)
        return w

    return apply


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder rows from Hugging Face's rotate-half layout to llama.cpp's interleaved RoPE layout."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def supported() -> str:
    return ", ".join(sorted(ARCHS))


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
        raise BaseModelError(f"{config_path} is not valid JSON ({e})") from e
    config = config.get("text_config", config) if "model_type" not in config else config
    model_type = config.get("model_type")
    if model_type not in ARCHS:
        raise BaseModelError(
            f"{config_path}: model_type {model_type!r} is not supported; supported: {supported()}"
        )
    base = BaseModel(folder, config)
    if not base.spec.output_tensor and not base.tied:
        raise BaseModelError(
            f"{config_path}: tie_word_embeddings is false, but llama.cpp's {base.arch} always computes the "
            "logits with the token embeddings: an untied lm_head cannot be carried"
        )
    return base
