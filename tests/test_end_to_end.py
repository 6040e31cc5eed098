"""A story from a book to a channel and back: every step through its command, on a tiny model.

books → `data gutenberg` → `reason` (a stand-in Ollama teacher) → `train` (QLoRA on the CPU) →
`export-base` + `export-gguf` → `verify-gguf` (llama.cpp against PEFT) → `modelfile` → `publish` (the
stand-in Ollama) → `story-bot console` (the bot's core in a terminal) → `feedback export` → rows the
training command loads. The prompt the served model receives is checked against the training prompt.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from contract import prompt
from contract.modelfile import grammar
from pipeline.cli import app

REPO = Path(__file__).resolve().parents[1]
REASONING = (
    "Gregor wants to be believed, yet every word he says comes out wrong; his family fears the door more "
    "than what stands behind it, so the next moment should turn on who dares to open it first."
)


def run(*args: str) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_a_story_from_a_book_to_the_channel_and_back(
    tmp_path, corpus_dir, tiny_model, fake_ollama, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    books = [corpus_dir / "pg5200-metamorphosis.txt", corpus_dir / "pg11-alice.txt"]
    windows = ["--context-sentences", "40", "--continuation-sentences", "4"]
    run("data", "gutenberg", *books, "-o", "chunks.jsonl", *windows, "--val-ratio", "0.5")
    chunks = read(Path("chunks.jsonl"))
    assert {c["split"] for c in chunks} == {"train", "validation"}

    fake_ollama.add_model("teacher")
    fake_ollama.script("teacher", text=REASONING)
    run(
        "reason",
        "chunks.jsonl",
        "-o",
        "data/train.jsonl",
        "--teacher",
        "teacher",
        "--base-url",
        fake_ollama.url,
    )
    train_rows = read(Path("data/train.jsonl"))
    assert train_rows and prompt.parse_output(train_rows[0]["messages"][1]["content"]).ok

    base = tiny_model("qwen2")
    data = ["--data", "data/train.jsonl", "--eval-data", "data/val.jsonl"]
    steps = ["--max-steps", "3", "--eval-steps", "3", "--save-steps", "3", "--sample-tokens", "16"]
    run("train", "--base", base, *data, "-o", "adapter", *steps, "--max-length", "1024", "--lr", "1e-2")
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    assert (tmp_path / "adapter" / "loss.png").exists()
    assert {r["step"] for r in read(Path("adapter/samples.jsonl"))} == {0, 3}  # what it wrote as it learned

    run("export-base", base, "-o", "base.gguf", "--outtype", "f32")
    run("export-gguf", "adapter", "--base", base, "-o", "lora.gguf")
    assert "PASS" in run(
        "verify-gguf", "--hf", base, "--gguf", "base.gguf", "--adapter", "adapter", "--lora", "lora.gguf"
    )

    run("modelfile", "--from", "base.gguf", "--adapter", "lora.gguf", "-o", "Writer.Modelfile")
    run("modelfile", "check", "Writer.Modelfile")
    run("publish", "--modelfile", "Writer.Modelfile", "--name", "writer", "--host", fake_ollama.url)
    served = fake_ollama.models["writer:latest"]
    assert served.template == grammar.parse(Path("Writer.Modelfile").read_text()).first("template")
    assert len(served.adapters) == 1 and len(served.files) == 1

    answer = "Grete opened the door at last, and the room fell silent."
    fake_ollama.script("writer", text=f"<reasoning>{REASONING}</reasoning><answer>{answer}</answer>")
    context = chunks[0]["context"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "STORY_BOT_DB": str(tmp_path / "bot.db")}
    env.pop("STORY_BOT_CONFIG", None)
    session = subprocess.run(
        [sys.executable, "-m", "bot", "console", "--model", "writer", "--host", fake_ollama.url],
        input=f"{context}\n/continue\n/rate +1\n/quit\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert session.returncode == 0, session.stderr
    assert answer in session.stdout
    # What Ollama renders for the bot is the training prompt for the same context, inside the same chat turn.
    rendered = fake_ollama.rendered[-1]
    assert rendered.endswith(prompt.render_prompt(context) + "<|im_end|>\n<|im_start|>assistant\n")

    out = run("feedback", "export", "--db", tmp_path / "bot.db", "--format", "sft", "-o", "feedback.jsonl")
    rows = read(Path("feedback.jsonl"))
    assert len(rows) == 1, out
    assert rows[0]["messages"][0]["content"] == prompt.render_prompt(context)
    assert prompt.parse_output(rows[0]["messages"][1]["content"]).answer == answer
