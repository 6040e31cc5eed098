"""Bad input to the exports: a clear error naming the problem and the fix, and no file left behind."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import save_file

from pipeline.export.arch import BaseModelError
from pipeline.export.gguf_adapter import export_adapter
from pipeline.export.peft_adapter import AdapterError
from pipeline.export.safetensors_io import SafetensorsError
from plumbing.atomic import OutputExistsError
from tests.export.conftest import leftovers


@pytest.fixture
def copy_adapter(make_adapter, tmp_path):
    def copy(arch="qwen2", **config):
        return shutil.copytree(make_adapter(arch, **config), tmp_path / "copy")

    return copy


def export_fails(exc, match, adapter, base, tmp_path, **kw):
    out_dir = tmp_path / "out"
    out_dir.mkdir(exist_ok=True)
    with pytest.raises(exc, match=match):
        export_adapter(adapter, base, out_dir / "a.gguf", **kw)
    assert list(out_dir.iterdir()) == []  # no partial file, no temporary file


def test_folder_without_adapter(tiny_model, tmp_path):
    (tmp_path / "empty").mkdir()
    export_fails(AdapterError, "no adapter_config.json", tmp_path / "empty", tiny_model("qwen2"), tmp_path)


def test_adapter_without_weights(copy_adapter, tiny_model, tmp_path):
    adapter = copy_adapter()
    (adapter / "adapter_model.safetensors").rename(adapter / "adapter_model.bin")
    export_fails(AdapterError, "safe_serialization=True", adapter, tiny_model("qwen2"), tmp_path)


def test_truncated_safetensors(copy_adapter, tiny_model, tmp_path):
    adapter = copy_adapter()
    path = adapter / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    export_fails(SafetensorsError, "runs past the end of the file", adapter, tiny_model("qwen2"), tmp_path)


def test_corrupt_safetensors(copy_adapter, tiny_model, tmp_path):
    adapter = copy_adapter()
    (adapter / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    export_fails(SafetensorsError, "header is not JSON", adapter, tiny_model("qwen2"), tmp_path)


def test_adapter_for_another_size(make_adapter, tiny_model, tmp_path):
    bigger = tmp_path / "bigger"
    bigger.mkdir()
    config = json.loads((tiny_model("qwen2") / "config.json").read_text())
    (bigger / "config.json").write_text(json.dumps({**config, "intermediate_size": 256}))  # config-only base
    export_fails(AdapterError, "another model size", make_adapter("qwen2"), bigger, tmp_path)


def test_adapter_for_another_architecture(make_adapter, tiny_model, tmp_path):
    # same sizes, but adapter_config.json names the Qwen2 folder it was trained on
    match = r"trained on .* \(qwen2\) but BASE is llama"
    export_fails(AdapterError, match, make_adapter("qwen2"), tiny_model("llama"), tmp_path)


def test_base_of_unsupported_type(make_adapter, tmp_path):
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    export_fails(BaseModelError, "model_type 'gpt2' is not supported", make_adapter("qwen2"), gpt2, tmp_path)


def test_target_module_without_gguf_name(tiny_model, tmp_path):
    adapter = tmp_path / "gpt2-style"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8}))
    stem = "base_model.model.transformer.h.0.attn.c_attn"
    tensors = {
        f"{stem}.lora_A.weight": np.ones((4, 64), np.float32),
        f"{stem}.lora_B.weight": np.ones((192, 4), np.float32),
    }
    save_file(tensors, adapter / "adapter_model.safetensors")
    match = "has no GGUF tensor in the qwen2 architecture"
    export_fails(AdapterError, match, adapter, tiny_model("qwen2"), tmp_path)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (dict(use_dora=True), "DoRA"),
        (dict(modules_to_save=["lm_head"]), "modules_to_save"),
        (dict(bias="lora_only"), "bias"),
    ],
)
def test_refused_by_name_with_the_merge_hint(config, match, make_adapter, tiny_model, tmp_path):
    adapter = make_adapter("qwen2", **config)
    export_fails(AdapterError, f"{match}.*export-merged", adapter, tiny_model("qwen2"), tmp_path)


def test_dora_tensors_refused_even_if_config_is_edited(copy_adapter, tiny_model, tmp_path):
    adapter = copy_adapter(use_dora=True)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "use_dora": False}))
    match = "lora_magnitude_vector is a DoRA magnitude"
    export_fails(AdapterError, match, adapter, tiny_model("qwen2"), tmp_path)


def test_existing_output_is_kept(make_adapter, tiny_model, tmp_path):
    out = tmp_path / "a.gguf"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="already exists"):
        export_adapter(make_adapter("qwen2"), tiny_model("qwen2"), out)
    assert out.read_bytes() == b"precious"
    export_adapter(make_adapter("qwen2"), tiny_model("qwen2"), out, overwrite=True)  # --force
    assert out.read_bytes()[:4] == b"GGUF"


def test_failure_while_writing_leaves_nothing(make_adapter, tiny_model, tmp_path, monkeypatch):
    import gguf

    real_write, calls = gguf.GGUFWriter.write_tensor_data, []

    def failing_write(self, tensor, *args):
        calls.append(1)
        if len(calls) == 5:
            raise OSError("No space left on device")
        return real_write(self, tensor, *args)

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", failing_write)
    with pytest.raises(OSError, match="No space left"):
        export_adapter(make_adapter("qwen2"), tiny_model("qwen2"), tmp_path / "a.gguf")
    assert not (tmp_path / "a.gguf").exists() and leftovers(tmp_path) == []


def test_unknown_outtype(make_adapter, tiny_model, tmp_path):
    adapter = make_adapter("qwen2")
    export_fails(ValueError, "unknown outtype 'q4_k'", adapter, tiny_model("qwen2"), tmp_path, outtype="q4_k")
