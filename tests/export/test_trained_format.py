"""The chat format an adapter was trained with travels with it: into its GGUF, into both merged
outputs (their chat template is the adapter's, not the base's) and into the Modelfile, with no --format."""

from __future__ import annotations

import json
import shutil

import pytest

from contract import chat_formats
from contract.modelfile import grammar, inspect
from pipeline.export.gguf_adapter import export_adapter
from pipeline.export.merged import export_merged
from pipeline.modelfile import render

SYSTEM = "You write sea stories, and only sea stories."
OWN = chat_formats.with_default_system(chat_formats.get("chatml"), SYSTEM)


@pytest.fixture
def trained(make_adapter, tiny_model, tmp_path):
    """A PEFT adapter folder as `train` leaves it: the tokenizer (with the chat template it trained
    with, here ChatML with a system turn of its own) and training.json beside the weights."""
    base = tiny_model("qwen2")
    out = tmp_path / "adapter"
    shutil.copytree(make_adapter("qwen2"), out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(base / name, out / name)
    (out / "chat_template.jinja").write_text(OWN.jinja, encoding="utf-8")
    (out / "training.json").write_text(json.dumps(chat_formats.record(OWN)), encoding="utf-8")
    return base, out


def test_the_adapter_gguf_carries_the_format_into_the_modelfile(trained, tmp_path):
    base, adapter = trained
    assert chat_formats.of_adapter(adapter) == OWN
    gguf_path = tmp_path / "adapter.gguf"
    export_adapter(adapter, base, gguf_path)
    fields = inspect.gguf_fields(gguf_path)
    assert fields[chat_formats.GGUF_FORMAT_KEY] == "chatml" and fields[chat_formats.GGUF_SYSTEM_KEY] == SYSTEM
    path, _ = render.write(tmp_path / "M.Modelfile", "qwen2.5:7b-instruct", adapter=gguf_path)
    template = grammar.parse(path.read_text(encoding="utf-8")).first("template")
    assert template == OWN.ollama_template() and "You are Qwen" not in template


def test_merged_outputs_carry_the_adapters_chat_template(trained, tmp_path):
    from transformers import AutoTokenizer

    base, adapter = trained
    assert chat_formats.folder_chat_template(base)[0] != OWN.jinja  # the base has Qwen2.5's
    merged_gguf = tmp_path / "merged.gguf"
    export_merged(adapter, base, merged_gguf, "gguf", "f32")
    # the writer prompt in the format (and default system turn) the adapter was trained with
    assert inspect.gguf_fields(merged_gguf)["tokenizer.chat_template"] == OWN.writer_jinja
    assert render.detect_format(str(merged_gguf), tmp_path) == OWN
    folder = tmp_path / "merged"
    export_merged(adapter, base, folder, "safetensors")
    assert AutoTokenizer.from_pretrained(folder).chat_template == OWN.jinja
    assert "chat_template" not in json.loads((folder / "tokenizer_config.json").read_text())
    path, _ = render.write(tmp_path / "M.Modelfile", str(folder))  # no --format needed
    assert grammar.parse(path.read_text(encoding="utf-8")).first("template") == OWN.ollama_template()
