"""export-base / export-merged: GGUF model metadata llama.cpp needs, quantization, merged safetensors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from contract import chat_template
from contract.modelfile.inspect import gguf_fields
from pipeline.export.arch import load_base
from pipeline.export.gguf_vocab import TokenizerExportError, pre_tokenizer_name
from pipeline.export.merged import export_merged
from plumbing.atomic import OutputExistsError
from tests.export.conftest import ARCHS, gguf_tensors, leftovers


@pytest.mark.parametrize("arch", ARCHS)
def test_model_metadata_and_tokenizer(arch, base_gguf, tiny_model):
    hf = tiny_model(arch)
    base = load_base(hf)
    g = base.arch
    fields = gguf_fields(base_gguf(arch))
    config = json.loads((hf / "config.json").read_text())
    tokenizer = json.loads((hf / "tokenizer.json").read_text())
    assert fields["general.architecture"] == g and fields["general.type"] == "model"
    assert fields[f"{g}.block_count"] == 2 and fields[f"{g}.embedding_length"] == 64
    assert fields[f"{g}.attention.head_count"] == 4 and fields[f"{g}.attention.head_count_kv"] == 2
    assert fields[f"{g}.rope.freq_base"] == base.rope["rope_theta"]
    # the split transformers runs: the tiny tokenizer's GPT-2 one, but Qwen2's for a qwen2 model, as
    # transformers 5 loads any qwen2 model's tokenizer with Qwen2's regex
    assert fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["tokenizer.ggml.pre"] == ("qwen2" if arch == "qwen2" else "gpt-2")
    tokens = fields["tokenizer.ggml.tokens"]
    assert len(tokens) == config["vocab_size"]
    assert len(fields["tokenizer.ggml.merges"]) == len(tokenizer["model"]["merges"])
    types = fields["tokenizer.ggml.token_type"]
    for added in tokenizer["added_tokens"]:  # specials are CONTROL (3), the writer tags USER_DEFINED (4)
        assert tokens[added["id"]] == added["content"]
        assert types[added["id"]] == (3 if added["special"] else 4)
    assert fields["tokenizer.ggml.eos_token_id"] == config["eos_token_id"]
    # the writer prompt in the base's chat template, so Ollama gives it whichever template it picks
    trained = chat_template.of_folder(hf)
    assert trained is not None and fields["tokenizer.chat_template"] == trained.pinned_jinja(writer=True)
    # the runtime adds BOS where the chat template writes one (Llama 3's), as the HF tokenizer does
    assert fields["tokenizer.ggml.add_bos_token"] is trained.writes_bos
    tensors = gguf_tensors(base_gguf(arch))
    assert tensors["token_embd.weight"][1] == (64, config["vocab_size"])
    assert tensors["blk.0.attn_norm.weight"][0] == "F32"
    assert ("blk.0.attn_q.bias" in tensors) == (arch == "qwen2")
    assert ("output.weight" in tensors) == (not base.tied)


# What each family adds to the common metadata and tensors, as llama.cpp's loader for it reads them.
FAMILY_FIELDS = {
    "llama3.1": {"llama.rope.dimension_count": 16},
    "mistral": {"llama.attention.key_length": 32, "llama.rope.dimension_count": 32},
    "qwen3": {"qwen3.attention.key_length": 32, "qwen3.attention.value_length": 32},
    "phi3": {
        "phi3.rope.dimension_count": 16,
        "phi3.rope.scaling.original_context_length": 4096,
        "phi3.rope.scaling.attn_factor": pytest.approx(math.sqrt(1 + math.log(32) / math.log(4096))),
    },
    "gemma2": {
        "gemma2.attn_logit_softcapping": 5.0,
        "gemma2.final_logit_softcapping": 3.0,
        "gemma2.attention.sliding_window": 8,
        "gemma2.attention.sliding_window_pattern": 2,  # layer 0 local, layer 1 global
    },
    "gemma3_text": {
        "gemma3.attention.sliding_window": 8,
        "gemma3.attention.sliding_window_pattern": 2,
        "gemma3.rope.freq_base": 1000000.0,
        "gemma3.rope.freq_base_swa": 20000.0,
        "gemma3.rope.scaling.type": "linear",
        "gemma3.rope.scaling.factor": 8.0,
    },
}
FAMILY_TENSORS = {  # name -> ne (ggml order)
    "llama3.1": {"rope_freqs.weight": (8,)},
    "llama3.2": {"rope_freqs.weight": (8,)},
    "qwen3": {"blk.0.attn_q_norm.weight": (32,), "blk.0.attn_q.weight": (64, 128)},
    "phi3": {
        "rope_factors_long.weight": (8,),
        "rope_factors_short.weight": (8,),
        "blk.0.attn_qkv.weight": (64, 128),
        "blk.0.ffn_up.weight": (64, 256),
    },
    "gemma2": {"blk.0.post_attention_norm.weight": (64,), "blk.0.post_ffw_norm.weight": (64,)},
    "gemma3_text": {"blk.0.attn_q_norm.weight": (16,), "blk.0.post_ffw_norm.weight": (64,)},
}


@pytest.mark.parametrize("arch", sorted(FAMILY_FIELDS.keys() | FAMILY_TENSORS.keys()))
def test_family_metadata(arch, base_gguf):
    fields, tensors = gguf_fields(base_gguf(arch)), gguf_tensors(base_gguf(arch))
    for key, value in FAMILY_FIELDS.get(arch, {}).items():
        assert fields[key] == value, key
    for name, ne in FAMILY_TENSORS.get(arch, {}).items():
        assert tensors[name][1] == ne, name


@pytest.mark.parametrize("arch", ["gemma2", "gemma3_text"])
def test_gemma_norms_are_stored_plus_one(arch, base_gguf, tiny_model):
    """Gemma's RMSNorm multiplies by (1 + w); llama.cpp's by w. Gemma 3's q_norm also carries the
    query_pre_attn_scalar correction (sqrt(16 / 24): llama.cpp scales by head_dim ** -0.5)."""
    from pipeline.export.safetensors_io import TensorSet

    hf, tensors = TensorSet(tiny_model(arch)), gguf_tensors(base_gguf(arch))
    np.testing.assert_allclose(tensors["output_norm.weight"][2], hf.read("model.norm.weight") + 1)
    ffn = hf.read("model.layers.1.post_feedforward_layernorm.weight")
    np.testing.assert_allclose(tensors["blk.1.post_ffw_norm.weight"][2], ffn + 1)
    if arch == "gemma3_text":
        q_norm = hf.read("model.layers.0.self_attn.q_norm.weight")
        expected = (q_norm + 1) * math.sqrt(16 / 24)
        np.testing.assert_allclose(tensors["blk.0.attn_q_norm.weight"][2], expected, rtol=1e-6)


def test_f16_keeps_norms_f32(base_gguf):
    kinds = {name: kind for name, (kind, _, _) in gguf_tensors(base_gguf("qwen2", "f16")).items()}
    assert kinds["blk.0.attn_q.weight"] == "F16" and kinds["output_norm.weight"] == "F32"
    assert kinds["blk.0.attn_q.bias"] == "F32"


def test_pre_tokenizer_names():
    qwen2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"  # noqa: E501
    split = {"type": "Split", "pattern": {"Regex": qwen2}}
    seq = {
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [split, {"type": "ByteLevel", "use_regex": False}],
        }
    }
    assert pre_tokenizer_name(seq) == "qwen2"
    llama3 = dict(split, pattern={"Regex": qwen2.replace(r"\p{N}|", r"\p{N}{1,3}|")})
    seq["pre_tokenizer"]["pretokenizers"][0] = llama3
    assert pre_tokenizer_name(seq) == "llama-bpe"
    seq["pre_tokenizer"]["pretokenizers"][0] = dict(split, pattern={"Regex": r"\w+"})
    with pytest.raises(TokenizerExportError, match="convert_hf_to_gguf.py"):
        pre_tokenizer_name(seq)
    with pytest.raises(TokenizerExportError, match="Metaspace"):
        pre_tokenizer_name({"pre_tokenizer": {"type": "Metaspace"}})


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_merged_q4_k_m_loads_in_llama_cpp(arch, make_adapter, tiny_model, tmp_path):
    import llama_cpp

    report = export_merged(make_adapter(arch), tiny_model(arch), tmp_path / "m.gguf", "gguf", quant="q4_k_m")
    assert gguf_fields(report.path)["general.file_type"] == 15  # MOSTLY_Q4_K_M
    # 64-wide rows are not 256-value K-quant blocks: llama.cpp's quantizer picks its own fallbacks
    assert report.types["F32"] >= 5 and set(report.types) - {"F32"}
    assert leftovers(tmp_path) == []  # the intermediate F16 file is gone
    llm = llama_cpp.Llama(str(report.path), n_ctx=64, verbose=False)
    try:
        assert len(llm.create_completion("The ship", max_tokens=4, temperature=0)["choices"][0]["text"]) > 0
    finally:
        llm.close()


@pytest.mark.parametrize("arch", ARCHS)
def test_merged_safetensors_folder_equals_peft(arch, make_adapter, tiny_model, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from pipeline.export.safetensors_io import TensorSet

    hf, adapter = tiny_model(arch), make_adapter(arch)
    report = export_merged(adapter, hf, tmp_path / "merged", "safetensors")
    out = report.path
    # The report counts what was written (it said "0 tensors ()" before): every tensor of the base, F32.
    assert report.tensors == len(TensorSet(hf).names()) > 0
    assert report.types == {"F32": report.tensors}
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"} <= {
        p.name for p in out.iterdir()
    }
    # The chat template is in tokenizer_config.json, the one place Ollama's converter reads it
    # (convert/tokenizer.go), and transformers reads the same one there.
    from transformers import AutoTokenizer

    from contract import chat_template

    assert not (out / "chat_template.jinja").exists()
    trained = chat_template.folder_chat_template(adapter)[0] or chat_template.folder_chat_template(hf)[0]
    assert trained and json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == trained
    assert AutoTokenizer.from_pretrained(out).chat_template == trained
    ids = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 8, 9, 10, 11, 12]])  # past Gemma's window of 8
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(out)(ids).logits
        peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(hf), adapter)(ids).logits
    torch.testing.assert_close(merged, peft, rtol=1e-4, atol=1e-5)
    with pytest.raises(OutputExistsError):
        export_merged(adapter, hf, out, "safetensors")


def test_merged_refuses_bad_input_before_loading(make_adapter, tiny_model, tmp_path):
    with pytest.raises(ValueError, match="--quantize applies to --format gguf"):
        export_merged(
            make_adapter("qwen2"), tiny_model("qwen2"), tmp_path / "m", "safetensors", quant="q4_k_m"
        )
    out = tmp_path / "exists.gguf"
    out.write_text("x")
    with pytest.raises(OutputExistsError):
        export_merged(make_adapter("qwen2"), tiny_model("qwen2"), out)
    assert out.read_text() == "x"


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_modelfile_recognises_the_exported_chat_template(arch, base_gguf, tiny_model, tmp_path):
    """`story-pipeline modelfile --from model.gguf` reads the template it carries (BOS too) back."""
    from pipeline.modelfile.render import base_template

    assert base_template(str(base_gguf(arch)), tmp_path) == chat_template.of_folder(tiny_model(arch))
