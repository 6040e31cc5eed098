"""`story-pipeline models`: base model folders made without a hub."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from pipeline.cli import app


def test_models_tiny_writes_a_loadable_model_and_refuses_an_existing_folder(tmp_path, corpus_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "tiny"
    result = CliRunner().invoke(app, ["models", "tiny", "--books", str(corpus_dir), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert AutoModelForCausalLM.from_pretrained(out).config.model_type == "qwen2"
    assert "<|im_start|>" in AutoTokenizer.from_pretrained(out).chat_template
    again = CliRunner().invoke(app, ["models", "tiny", "--books", str(corpus_dir), "-o", str(out)])
    assert again.exit_code == 1 and "exists" in again.output
    empty = CliRunner().invoke(
        app, ["models", "tiny", "--books", str(tmp_path / "none"), "-o", str(tmp_path / "x")]
    )
    assert empty.exit_code == 1 and "holds no .txt books" in " ".join(empty.output.split())


def test_the_small_real_model_becomes_a_hugging_face_folder(smollm2_hf):
    from transformers import AutoTokenizer

    config = json.loads((smollm2_hf / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert "quantization_config" not in config  # else a 4-bit load refuses it as a GGUF-quantized model
    tokenizer = AutoTokenizer.from_pretrained(smollm2_hf)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert (smollm2_hf / "model.safetensors").stat().st_size > 400_000_000  # float32, 135M parameters
    assert not [p for p in smollm2_hf.parent.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_the_small_real_model_folder_loads_in_4_bits_as_qlora_does(smollm2_hf):
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    model = AutoModelForCausalLM.from_pretrained(smollm2_hf, quantization_config=quant, dtype=torch.float32)
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"


def test_models_path_prints_the_shipped_gguf():
    result = CliRunner().invoke(app, ["models", "path"])
    assert result.exit_code == 0 and result.output.strip().endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
