from pathlib import Path

import numpy as np
import pytest


def write_gguf(path: Path, arch: str = "qwen2", kind: str = "adapter") -> Path:
    """A small GGUF file: a LoRA adapter (general.type = adapter) or a model."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    if kind == "adapter":
        w.add_type(gguf.GGUFType.ADAPTER)
        w.add_string(gguf.Keys.Adapter.TYPE, "lora")
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 16.0)
        w.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((8, 64), dtype=np.float32))
        w.add_tensor("blk.0.attn_q.weight.lora_b", np.zeros((64, 8), dtype=np.float32))
    else:
        w.add_type(gguf.GGUFType.MODEL)
        w.add_tensor("token_embd.weight", np.zeros((16, 64), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def gguf_file(tmp_path):
    def make(name: str = "adapter.gguf", arch: str = "qwen2", kind: str = "adapter") -> Path:
        return write_gguf(tmp_path / name, arch, kind)

    return make
