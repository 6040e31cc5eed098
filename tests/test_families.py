"""Every family a writer trains today, from the first training row to `ollama run`, byte for byte.

For each family (tests/families.py: its real chat template, read from the llama-cpp-python sdist), a
tiny model of its architecture with a tokenizer trained on the spot around that template goes through
the commands a user runs: `train` (QLoRA on the CPU, a few steps) → `export-base` + `export-gguf` →
`verify-gguf` (llama.cpp against PEFT) → `modelfile` (no chat template given by hand: the adapter carries
it) → `publish` to the stand-in Ollama. Then the tokens the trainer fed the model are the bytes the bot
sends raw (BOS aside, which the runtime adds) and the bytes `ollama run` gets through Ollama's own
template selection (the base GGUF carries the family's chat template too).
"""

from __future__ import annotations

import json
from pathlib import Path

import ollama
import pytest
from typer.testing import CliRunner

from contract import chat_template, prompt, serving
from contract.modelfile import grammar
from pipeline.cli import app
from tests.families import BY_NAME, FAMILIES

CONTEXT = "The lamp guttered. \u201cWho\u2019s there?\u201d Anna asked, and the door creaked open."
ROWS = [
    prompt.training_row(f"{CONTEXT} Night {n}.", "Anna fears the visitor.", f"A cat walked in, night {n}.")
    for n in range(6)
]


def run(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("name", [f.name for f in FAMILIES])
def test_a_family_trains_exports_verifies_and_is_served_its_training_bytes(
    name, tmp_path, tiny_texts, fake_ollama, monkeypatch
):
    from transformers import AutoTokenizer

    from pipeline.tiny import make_tiny_model
    from pipeline.train import rows

    f = BY_NAME[name]
    monkeypatch.chdir(tmp_path)
    family = f.template()
    base = make_tiny_model(
        tmp_path / "base", tiny_texts[:300], f.arch, template=(family.source, f.bos, f.eos)
    )
    Path("rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    run(
        "train",
        "--base",
        base,
        "--data",
        "rows.jsonl",
        "-o",
        "adapter",
        "--max-steps",
        "2",
        "--max-length",
        "4096",
        "--lr",
        "1e-2",
        "--save-steps",
        "2",
    )
    trained = chat_template.of_folder(Path("adapter"))
    assert trained is not None and trained.source == family.source  # the base's own template, pinned

    run("export-base", base, "-o", "base.gguf", "--outtype", "f32")
    run("export-gguf", "adapter", "--base", base, "-o", "lora.gguf")
    assert "PASS" in run(
        "verify-gguf", "--hf", base, "--gguf", "base.gguf", "--adapter", "adapter", "--lora", "lora.gguf"
    )
    run("modelfile", "--from", "base.gguf", "--adapter", "lora.gguf", "-o", "Writer.Modelfile")
    run("publish", "--modelfile", "Writer.Modelfile", "--name", "writer", "--host", fake_ollama.url)
    template = grammar.parse(Path("Writer.Modelfile").read_text(encoding="utf-8")).first("template")
    client = ollama.Client(host=fake_ollama.url)
    assert client.show("writer").template == template  # Ollama keeps our TEMPLATE over the base's

    # What the trainer fed the model before the reply ...
    tokenizer = AutoTokenizer.from_pretrained("adapter")
    encoded = rows.encode_sft(tokenizer, prompt.training_row(CONTEXT, "r", "a"), max_length=4096)
    trained_ids = encoded.input_ids[: encoded.labels.count(-100)]
    trained_text = tokenizer.decode(trained_ids)
    bos = f.bos if f.bos and trained_text.startswith(f.bos) else ""
    # ... is what the bot sends raw (reading the template from /api/show) ...
    request = serving.build_request(CONTEXT, client.show("writer").template)
    assert request.raw and bos + request.prompt == trained_text
    assert tokenizer(bos + request.prompt, add_special_tokens=False)["input_ids"] == trained_ids
    # ... and what `ollama run` gets through the TEMPLATE Ollama selected
    client.chat(model="writer", messages=[{"role": "user", "content": prompt.clean_context(CONTEXT)}])
    assert bos + fake_ollama.rendered[-1] == trained_text
