"""export-base / export-merged: GGUF model metadata llama.cpp needs, quantization, merged safetensors."""

from __future__ import annotations

import json

import pytest

from contract import chat_template
from contract.atomic import OutputExistsError
from contract.modelfile.inspect import gguf_fields
from pipeline.export.gguf_vocab import TokenizerExportError, pre_tokenizer_name
from pipeline.export.merged import export_merged
from tests.export.conftest import gguf_tensors, leftovers


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_model_metadata_and_tokenizer(arch, base_gguf, tiny_model):
    hf = tiny_model(arch)
    fields = gguf_fields(base_gguf(arch))
    config = json.loads((hf / "config.json").read_text())
    tokenizer = json.loads((hf / "tokenizer.json").read_text())
    assert fields["general.architecture"] == arch and fields["general.type"] == "model"
    assert fields[f"{arch}.block_count"] == 2 and fields[f"{arch}.embedding_length"] == 64
    assert fields[f"{arch}.attention.head_count"] == 4 and fields[f"{arch}.attention.head_count_kv"] == 2
    assert fields[f"{arch}.rope.freq_base"] == 10000.0
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    tokens = fields["tokenizer.ggml.tokens"]
    assert len(tokens) == config["vocab_size"]
    assert len(fields["tokenizer.ggml.merges"]) == len(tokenizer["model"]["merges"])
    types = fields["tokenizer.ggml.token_type"]
    for added in tokenizer["added_tokens"]:  # specials are CONTROL (3), the writer tags USER_DEFINED (4)
        assert tokens[added["id"]] == added["content"]
        assert types[added["id"]] == (3 if added["special"] else 4)
    assert fields["tokenizer.ggml.eos_token_id"] == config["eos_token_id"]
    # the runtime adds BOS where the chat template writes one (Llama 3's), as the HF tokenizer does
    assert fields["tokenizer.ggml.add_bos_token"] is (arch == "llama")
    # the writer prompt in the base's chat format, so Ollama gives it whichever template it picks
    trained = chat_template.of_folder(hf)
    assert trained is not None and fields["tokenizer.chat_template"] == trained.pinned_jinja(writer=True)
    tensors = gguf_tensors(base_gguf(arch))
    assert tensors["token_embd.weight"][1] == (64, config["vocab_size"])
    assert tensors["blk.0.attn_norm.weight"][0] == "F32"
    assert ("blk.0.attn_q.bias" in tensors) == (arch == "qwen2")


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


def test_merged_safetensors_folder_equals_peft(make_adapter, tiny_model, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    hf, adapter = tiny_model("llama"), make_adapter("llama")
    report = export_merged(adapter, hf, tmp_path / "merged", "safetensors")
    out = report.path
    # The report counts what was written (it said "0 tensors ()" before): every tensor of the base, F32.
    base_names = AutoModelForCausalLM.from_pretrained(hf).state_dict().keys()
    assert report.tensors == len([n for n in base_names if "rotary" not in n]) > 0
    assert report.types == {"F32": report.tensors}
    assert {"config.json", "tokenizer.json", "chat_template.jinja", "model.safetensors"} <= {
        p.name for p in out.iterdir()
    }
    ids = torch.tensor([[5, 17, 42, 99, 3]])
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
