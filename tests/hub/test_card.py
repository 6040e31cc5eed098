"""The model card: the Hub's metadata schema (read back with huggingface_hub's own ModelCard), and the
sections a user needs, the writer prompt quoted from contract/prompt.py."""

import json

import pytest
from huggingface_hub import ModelCard

from contract import prompt
from pipeline.hub import card
from pipeline.hub.card import CardError, CardInputs
from tests.fakes.hub import metadata_errors

BASE = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"


def _eval_dirs(tmp_path):
    compare = tmp_path / "eval-compare"
    compare.mkdir()
    (compare / "table.md").write_text(
        "| Metric | base | tuned |\n| --- | ---: | ---: |\n| Flesch Reading Ease ↑ | 70.1 | **75.3** |\n"
    )
    ppl = tmp_path / "eval-ppl"
    ppl.mkdir()
    side = {"answer": {"loss": 2.5, "perplexity": 12.18, "tokens": 900}, "assistant": {"perplexity": 9.5}}
    (ppl / "perplexity.json").write_text(json.dumps({"rows": 40, "base": side, "adapter": side}))
    return [compare, ppl]


def test_the_card_carries_schema_metadata_and_every_section(run_dir, tmp_path):
    book = tmp_path / "pg11.txt"
    book.write_text("The Project Gutenberg eBook\nTitle: Alice's Adventures in Wonderland\n\nAlice was...\n")
    models = ["r1-writer-Q4_K_M.gguf", "r1-writer-Q8_0.gguf"]
    inputs = CardInputs(
        "you/r1-writer",
        base_model=BASE,
        books=[str(book), "Metamorphosis"],
        gguf_models=models,
        writing_prompts="euclaise/writingprompts",
        teacher="deepseek-r1:14b",
        evals=_eval_dirs(tmp_path),
        ollama_name="you/r1-writer",
        files=["adapter_model.safetensors", *models, "README.md"],
    )
    text = str(card.render(run_dir, inputs))
    data = ModelCard(text).data
    assert data.base_model == "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
    assert data.library_name == "peft" and data.license == "mit"  # the base's own card's license
    assert data.datasets == ["euclaise/writingprompts"]
    assert {"peft", "lora", "gguf", "base_model:adapter:deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"} <= set(
        data.tags
    )
    assert metadata_errors(text) == []
    assert "*Alice's Adventures in Wonderland*, *Metamorphosis*" in text
    assert "teacher `deepseek-r1:14b`" in text
    assert "| `rank` | 16 |" in text and "| `target_modules` | q_proj, v_proj |" in text
    assert "| `train rows` | 1800 |" in text and "| `best_eval_loss` | 1.25 |" in text
    assert str(run_dir) not in text and "out_dir" not in text  # no local paths
    assert "| Flesch Reading Ease ↑ | 70.1 | **75.3** |" in text and "| adapter | 2.5000 | 12.180 |" in text
    assert prompt.render_prompt("{the story so far}") in text  # the exact bytes, U+2019 and all
    assert prompt.SYSTEM_LINE in text and "\u2019" in prompt.SYSTEM_LINE
    assert f"{prompt.REASONING_OPEN}{{reasoning}}{prompt.REASONING_CLOSE}{prompt.ANSWER_OPEN}" in text
    assert (
        "ollama run you/r1-writer" in text
        and "ollama run hf.co/you/r1-writer:Q4_K_M  # r1-writer-Q4_K_M.gguf" in text
    )
    assert "STORY_BOT_MODEL=you/r1-writer story-bot run" in text
    assert text.count(card.MARKER) == 1


def test_a_local_base_needs_its_hub_id(run_dir):
    with pytest.raises(CardError, match="is a local folder, not a Hub id: pass --base-model"):
        card.render(run_dir, CardInputs("you/x"))


def test_an_unknown_license_must_be_given(run_dir):
    (json_path := run_dir / "training.json").write_text(
        json_path.read_text().replace(json.loads(json_path.read_text())["base"], "/nowhere")
    )
    with pytest.raises(CardError, match="pass --license"):
        card.render(run_dir, CardInputs("you/x", base_model="a/b"))
    assert (
        ModelCard(
            str(card.render(run_dir, CardInputs("you/x", base_model="a/b", license="apache-2.0")))
        ).data.license
        == "apache-2.0"
    )


def test_an_unfinished_run_is_not_carded(run_dir):
    meta = json.loads((run_dir / "training.json").read_text())
    (run_dir / "training.json").write_text(json.dumps({**meta, "status": "stopped"}))
    with pytest.raises(CardError, match="did not finish .*'stopped'.*--resume"):
        card.render(run_dir, CardInputs("you/x", base_model="a/b"))


def test_an_eval_path_without_a_table(run_dir, tmp_path):
    with pytest.raises(CardError, match="holds no evaluation table"):
        card.render(run_dir, CardInputs("you/x", base_model="a/b", evals=[tmp_path]))
