"""The chat template an adapter was trained with travels with it: into its GGUF, into both merged
outputs (their chat template is the adapter's, not the base's) and into the Modelfile, with nothing to
give by hand."""

from __future__ import annotations

import json
import shutil

import pytest

from contract import chat_template, go_chat
from contract.chat_template import ChatTemplate
from contract.modelfile import grammar, inspect
from pipeline.export.gguf_adapter import export_adapter
from pipeline.export.merged import export_merged
from pipeline.modelfile import render
from pipeline.tiny import CHATML

SYSTEM = "You write sea stories, and only sea stories."
# ChatML with a default system turn of its own (as SmolLM2's and Qwen2.5's have), pinned to a past day
OWN = ChatTemplate(
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\n"
    + SYSTEM
    + "<|im_end|>\\n' }}{% endif %}"
    + CHATML,
    "",
    "<|im_end|>",
    "2025-03-01",
)


@pytest.fixture
def trained(make_adapter, tiny_model, tmp_path):
    """A PEFT adapter folder as `train` leaves it: the tokenizer (with the pinned chat template it
    trained with) and training.json beside the weights."""
    base = tiny_model("qwen2")
    out = tmp_path / "adapter"
    shutil.copytree(make_adapter("qwen2"), out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(base / name, out / name)
    (out / "chat_template.jinja").write_text(OWN.pinned_jinja(), encoding="utf-8")
    (out / "training.json").write_text(json.dumps({"chat_template": OWN.record()}), encoding="utf-8")
    return base, out


def test_the_adapter_gguf_carries_the_template_into_the_modelfile(trained, tmp_path):
    base, adapter = trained
    assert chat_template.of_folder(adapter) == OWN
    gguf_path = tmp_path / "adapter.gguf"
    export_adapter(adapter, base, gguf_path)
    fields = inspect.gguf_fields(gguf_path)
    assert chat_template.decode(fields[chat_template.GGUF_KEY]) == OWN
    path, _ = render.write(tmp_path / "M.Modelfile", "qwen2.5:7b-instruct", adapter=gguf_path)
    template = grammar.parse(path.read_text(encoding="utf-8")).first("template")
    assert template == go_chat.writer_template(OWN) and SYSTEM in template and "You are Qwen" not in template


def test_merged_outputs_carry_the_adapters_chat_template(trained, tmp_path):
    from transformers import AutoTokenizer

    base, adapter = trained
    assert chat_template.folder_chat_template(base)[0] != OWN.pinned_jinja()
    merged_gguf = tmp_path / "merged.gguf"
    export_merged(adapter, base, merged_gguf, "gguf", "f32")
    # the writer prompt in the chat template (and pins) the adapter was trained with
    assert inspect.gguf_fields(merged_gguf)["tokenizer.chat_template"] == OWN.pinned_jinja(writer=True)
    assert render.base_template(str(merged_gguf), tmp_path) == OWN
    folder = tmp_path / "merged"
    export_merged(adapter, base, folder, "safetensors")
    assert chat_template.of_tokenizer(AutoTokenizer.from_pretrained(folder)) == OWN
    path, _ = render.write(tmp_path / "M.Modelfile", str(folder))  # nothing to give by hand
    assert grammar.parse(path.read_text(encoding="utf-8")).first("template") == go_chat.writer_template(OWN)
