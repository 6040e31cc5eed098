"""export-gguf writes llama.cpp's adapter layout: metadata, names, shapes, dtypes, permutation, alpha."""

from __future__ import annotations

import math

import numpy as np
import pytest
from safetensors.numpy import load_file

from contract.modelfile.inspect import adapter_architecture, gguf_fields
from pipeline.export.arch import load_base, permute_rows
from pipeline.export.gguf_adapter import export_adapter
from tests.export.conftest import ALPHA, ARCHS, RANK, gguf_tensors

GGUF_NAMES = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "qkv_proj": "attn_qkv",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "gate_up_proj": "ffn_up",  # Phi-3: llama.cpp splits the fused gate/up itself
    "down_proj": "ffn_down",
}
# Which LoRA B's rows change on the way, and why: the Llama RoPE permutation of q/k, Gemma 2's
# query_pre_attn_scalar folded into q_proj. (Gemma 3 folds it into q_norm, which no LoRA targets.)
CHANGED_B = {
    "llama": {"q_proj", "k_proj"},
    "llama3.1": {"q_proj", "k_proj"},
    "llama3.2": {"q_proj", "k_proj"},
    "mistral": {"q_proj", "k_proj"},
    "gemma2": {"q_proj"},
}


@pytest.mark.parametrize("arch", ARCHS)
def test_metadata_names_shapes_and_values(arch, make_adapter, tiny_model, tmp_path):
    adapter = make_adapter(arch)
    out = export_adapter(adapter, tiny_model(arch), tmp_path / "a.gguf").path
    base = load_base(tiny_model(arch))
    fields = gguf_fields(out)
    assert fields["general.architecture"] == base.arch
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["adapter.lora.alpha"] == ALPHA
    assert fields["general.quantization_version"] == 2
    assert not any(k.startswith("tokenizer.") for k in fields)
    assert adapter_architecture(out) == base.arch  # what `modelfile check` and Ollama's ADAPTER accept

    tensors = gguf_tensors(out)
    projections = base.spec.linear
    expected = {f"blk.{i}.{GGUF_NAMES[p]}.weight.lora_{x}" for i in (0, 1) for p in projections for x in "ab"}
    assert set(tensors) == expected
    peft = load_file(adapter / "adapter_model.safetensors")
    for i in range(2):
        for proj in projections:
            section = "mlp" if proj in ("gate_proj", "up_proj", "gate_up_proj", "down_proj") else "self_attn"
            stem = f"base_model.model.model.layers.{i}.{section}.{proj}"
            a, b = peft[f"{stem}.lora_A.weight"], peft[f"{stem}.lora_B.weight"]
            kind_a, ne_a, data_a = tensors[f"blk.{i}.{GGUF_NAMES[proj]}.weight.lora_a"]
            kind_b, ne_b, data_b = tensors[f"blk.{i}.{GGUF_NAMES[proj]}.weight.lora_b"]
            assert kind_a == kind_b == "F32"
            assert ne_a == (a.shape[1], RANK) and ne_b == (RANK, b.shape[0])  # ggml order, not transposed
            assert (b.shape[0], a.shape[1]) == base.projection_shape(proj)
            np.testing.assert_array_equal(data_a, a)
            rows = base.row_transform(f"{stem.removeprefix('base_model.model.')}.weight")
            np.testing.assert_array_equal(data_b, rows(b) if rows else b)
            # the permutation / scale is not a no-op at this size, and only where the family needs it
            assert np.array_equal(data_b, b) == (proj not in CHANGED_B.get(arch, set()))


def test_llama_b_rows_are_permuted_by_heads(make_adapter, tiny_model, tmp_path):
    """The row transform the test above relies on is the RoPE permutation, by q and kv head counts."""
    adapter = make_adapter("llama")
    tensors = gguf_tensors(export_adapter(adapter, tiny_model("llama"), tmp_path / "a.gguf").path)
    peft = load_file(adapter / "adapter_model.safetensors")
    for proj, heads in (("q_proj", 4), ("k_proj", 2)):
        b = peft[f"base_model.model.model.layers.0.self_attn.{proj}.lora_B.weight"]
        got = tensors[f"blk.0.{GGUF_NAMES[proj]}.weight.lora_b"][2]
        np.testing.assert_array_equal(got, permute_rows(b, heads))


def test_rslora_alpha_is_scaled_by_sqrt_r(make_adapter, tiny_model, tmp_path):
    report = export_adapter(make_adapter("qwen2", use_rslora=True), tiny_model("qwen2"), tmp_path / "a.gguf")
    assert gguf_fields(report.path)["adapter.lora.alpha"] == pytest.approx(ALPHA * math.sqrt(RANK))
    assert any("rsLoRA" in n for n in report.notes)


def test_alpha_and_rank_patterns_fold_into_b(make_adapter, tiny_model, tmp_path):
    adapter = make_adapter("qwen2", rank_pattern={"q_proj": 4}, alpha_pattern={"down_proj": 5})
    report = export_adapter(adapter, tiny_model("qwen2"), tmp_path / "a.gguf")
    tensors, peft = gguf_tensors(report.path), load_file(adapter / "adapter_model.safetensors")
    assert tensors["blk.0.attn_q.weight.lora_a"][1] == (64, 4)  # rank read per tensor by llama.cpp
    # q_proj: alpha 24 at r=4 is already right (llama.cpp divides by each tensor's own r)
    b_q = peft["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    np.testing.assert_array_equal(tensors["blk.0.attn_q.weight.lora_b"][2], b_q)
    # down_proj: PEFT scales by 5/8, the file's alpha gives 24/8 -> B carries 5/24
    b_down = peft["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"]
    np.testing.assert_allclose(tensors["blk.1.ffn_down.weight.lora_b"][2], b_down * 5 / 24, rtol=1e-6)
    assert sum("folded" in n for n in report.notes) == 2  # both layers' down_proj


@pytest.mark.parametrize(
    ("outtype", "kind_a", "kind_b"),
    [("f32", "F32", "F32"), ("f16", "F16", "F16"), ("bf16", "BF16", "BF16"), ("q8_0", "Q8_0", "F16")],
)
def test_outtypes(outtype, kind_a, kind_b, make_adapter, tiny_model, tmp_path):
    report = export_adapter(make_adapter("llama"), tiny_model("llama"), tmp_path / "a.gguf", outtype)
    tensors = gguf_tensors(report.path)
    assert {v[0] for k, v in tensors.items() if k.endswith("lora_a")} == {kind_a}
    assert {v[0] for k, v in tensors.items() if k.endswith("lora_b")} == {kind_b}
    if outtype == "q8_0":  # rank 8 rows cannot hold a 32-value block: the fallback is reported
        assert len(report.notes) == 1
        assert "14 tensor(s) written as F16, not Q8_0: rows of 8" in report.notes[0]
    else:
        assert report.notes == []


def test_q8_0_quantizes_b_when_rank_allows(make_adapter, tiny_model, tmp_path):
    report = export_adapter(make_adapter("qwen2", r=32), tiny_model("qwen2"), tmp_path / "a.gguf", "q8_0")
    assert report.types == {"Q8_0": 28} and report.notes == []


@pytest.mark.parametrize("shape", [(18944, 64), (64, 3584), (7, 64), (13, 96), (5, 32), (1000, 512)])
def test_short_rows_quantize_to_the_same_bytes_as_gguf_py(shape):
    """Joining short rows before quantizing (the fast path) gives gguf-py's exact Q8_0 bytes."""
    import gguf
    import numpy as np

    from pipeline.export.gguf_write import encode

    data = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    expected = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
    got = encode(data, gguf.GGMLQuantizationType.Q8_0)
    assert got.shape == expected.shape and np.array_equal(got, expected)
