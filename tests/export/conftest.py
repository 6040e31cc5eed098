"""Tiny PEFT adapters with non-zero B (init_lora_weights=False) and base GGUFs for the export tests."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RANK, ALPHA = 8, 24  # alpha != r, so a lost alpha shows; head_dim 16 makes the Llama q/k permutation matter
# Every family the exports support, as pipeline.tiny names them (Llama 3.1 / 3.2 are llama variants).
ARCHS = ["qwen2", "llama", "llama3.1", "llama3.2", "mistral", "qwen3", "phi3", "gemma2", "gemma3_text"]


def linear_modules(base_dir: Path) -> list[str]:
    """The family's Linear layers (fused ones for Phi-3): what a LoRA on it targets."""
    from pipeline.export.arch import load_base

    return list(load_base(base_dir).spec.linear)


def save_adapter(base_dir: Path, out: Path, seed: int = 1, **config) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    targets = linear_modules(base_dir)
    settings = dict(r=RANK, lora_alpha=ALPHA, target_modules=targets, init_lora_weights=False)
    settings.update(config)
    get_peft_model(model, LoraConfig(**settings)).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def make_adapter(tiny_model, tmp_path_factory):
    """make_adapter(arch, **LoraConfig overrides) -> a saved PEFT adapter folder (cached per settings)."""
    made: dict[tuple, Path] = {}

    def get(arch: str = "qwen2", **config) -> Path:
        key = (arch, tuple(sorted((k, repr(v)) for k, v in config.items())))
        if key not in made:
            out = tmp_path_factory.mktemp(f"adapter-{arch}") / "adapter"
            made[key] = save_adapter(tiny_model(arch), out, **config)
        return made[key]

    return get


@pytest.fixture(scope="session")
def base_gguf(tiny_model, tmp_path_factory):
    """base_gguf(arch, outtype="f32") -> the tiny base as a GGUF model (export-base)."""
    made: dict[tuple, Path] = {}

    def get(arch: str = "qwen2", outtype: str = "f32") -> Path:
        if (arch, outtype) not in made:
            from pipeline.export.merged import export_merged

            out = tmp_path_factory.mktemp(f"base-{arch}") / f"base-{outtype}.gguf"
            made[arch, outtype] = export_merged(None, tiny_model(arch), out, "gguf", outtype).path
        return made[arch, outtype]

    return get


def gguf_tensors(path: Path) -> dict:
    """name -> (ggml type name, ne shape, numpy data) of a GGUF file."""
    import gguf

    return {
        t.name: (t.tensor_type.name, tuple(int(n) for n in t.shape), t.data)
        for t in gguf.GGUFReader(str(path)).tensors
    }


def leftovers(folder: Path) -> list[str]:
    """Temporary files an interrupted write would leave behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))
