"""`eval perplexity` on a tiny model and a PEFT adapter made on the spot."""

from __future__ import annotations

import json
import math

import peft
import pytest
import torch
from typer.testing import CliRunner

from contract import prompt
from pipeline.cli import app

ROWS = [
    prompt.training_row(
        "The storm had raged for three days. Mara watched the harbour from the lighthouse.",
        "Mara is waiting for her brother; the calm will bring either him or news of him.",
        "At dawn the sea was flat and grey, and the boats came home one by one.",
    ),
    prompt.training_row(
        "Nobody in the village spoke of the house on the hill.",
        "The baker knows something; his silence is the clue.",
        "So when the baker climbed the hill one morning, everyone watched him go.",
        guidance="Reveal the baker's secret slowly.",
        length="short",
    ),
    prompt.training_row(
        "The letter arrived a week after the funeral.",
        "A letter from the dead: grief turns to curiosity.",
        "She read it twice before she understood that it was meant for someone else, "
        "a woman her grandmother had loved long before the war.",
    ),
]


@pytest.fixture(scope="module")
def adapter(tiny_model, tmp_path_factory):
    """A LoRA adapter with random (non-zero) B, so the adapted model differs from the base."""
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model("qwen2"))
    torch.manual_seed(0)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = peft.get_peft_model(base, config)
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    return out


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "val.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return path


def test_answer_tokens_are_the_answer(tiny_model):
    from transformers import AutoTokenizer

    from pipeline.evaluate import perplexity

    tok = AutoTokenizer.from_pretrained(tiny_model("qwen2"))
    for n, row in enumerate(ROWS, 1):
        enc = perplexity.encode(tok, row, n)
        answer = prompt.parse_output(row["messages"][1]["content"]).answer
        picked = tok.decode([i for i, m in zip(enc.ids, enc.answer, strict=True) if m])
        assert answer in picked and len(picked) <= len(answer) + len(prompt.ANSWER_OPEN)
        assert sum(enc.answer) < sum(enc.assistant) < len(enc.ids)
        assert all(a <= b for a, b in zip(enc.answer, enc.assistant, strict=True))  # answer inside assistant


def test_loss_matches_a_plain_forward_pass_and_ignores_batching(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.evaluate import perplexity

    folder = tiny_model("qwen2")
    tok, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)
    encoded = [perplexity.encode(tok, r, n) for n, r in enumerate(ROWS, 1)]
    nll, count = 0.0, 0
    for e in encoded:  # one row at a time, HF's own shifted loss with everything but the answer masked
        labels = torch.tensor([i if m else -100 for i, m in zip(e.ids, e.answer, strict=True)])
        with torch.no_grad():
            out = model(input_ids=torch.tensor([e.ids]), labels=labels[None])
        n = int((labels[1:] != -100).sum())
        nll, count = nll + float(out.loss) * n, count + n
    one = perplexity.evaluate(model, encoded, batch_size=1)["answer"]
    three = perplexity.evaluate(model, encoded, batch_size=3)["answer"]  # padded batch
    assert one["tokens"] == three["tokens"] == count
    assert one["loss"] == pytest.approx(nll / count, rel=1e-5)
    assert three["loss"] == pytest.approx(one["loss"], rel=1e-5)
    assert one["perplexity"] == pytest.approx(math.exp(one["loss"]))


def test_cli_compares_base_and_adapter(tiny_model, adapter, data, tmp_path):
    out = tmp_path / "ppl"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "perplexity",
            "--base",
            str(tiny_model("qwen2")),
            "--adapter",
            str(adapter),
            "--data",
            str(data),
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    res = json.loads((out / "perplexity.json").read_text())
    assert res["rows"] == len(ROWS) and res["skipped_too_long"] == 0
    base, tuned = res["base"]["answer"], res["adapter"]["answer"]
    assert base["tokens"] == tuned["tokens"] > 0
    assert base["loss"] != pytest.approx(tuned["loss"], rel=1e-4)  # the adapter changes the model
    assert res["base"]["assistant"]["tokens"] > base["tokens"]
    assert "answer perplexity" in result.output


def test_base_alone_and_too_long_rows(tiny_model, data, tmp_path):
    from pipeline.evaluate import perplexity

    rows = [json.loads(line) for line in data.read_text().splitlines()]
    lengths = sorted(
        len(perplexity.encode(perplexity.load(str(tiny_model("qwen2")), None)[1], r).ids) for r in rows
    )
    res = perplexity.run(
        str(tiny_model("qwen2")), None, rows, max_tokens=lengths[-1] - 1
    )  # the longest is out
    assert "adapter" not in res and res["rows"] == len(ROWS) - 1 and res["skipped_too_long"] == 1
    with pytest.raises(perplexity.PerplexityError, match="--max-tokens"):
        perplexity.run(str(tiny_model("qwen2")), None, rows, max_tokens=5)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"text": "no messages"}, "no `messages` list"),
        ({"messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]}, "assistant"),
        (
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "  "}]},
            "no answer",
        ),
    ],
)
def test_bad_rows_are_named(tiny_model, tmp_path, row, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(row) + "\n")
    result = CliRunner().invoke(
        app, ["eval", "perplexity", "--base", str(tiny_model("qwen2")), "--data", str(path)]
    )
    assert result.exit_code == 2
    assert "row 2" in result.output and message in " ".join(result.output.split())


def test_adapter_folder_must_be_peft(tiny_model, data, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "perplexity",
            "--base",
            str(tiny_model("qwen2")),
            "--adapter",
            str(tmp_path),
            "--data",
            str(data),
        ],
    )
    assert result.exit_code == 2 and "not a PEFT adapter folder" in " ".join(result.output.split())


def test_an_adapter_of_another_size_is_one_line(tiny_model, adapter, data, tmp_path):
    import shutil

    from transformers import AutoConfig, AutoModelForCausalLM

    bigger = tmp_path / "bigger"
    shutil.copytree(tiny_model("qwen2"), bigger)
    config = AutoConfig.from_pretrained(bigger)
    config.hidden_size *= 2
    AutoModelForCausalLM.from_config(config).save_pretrained(bigger)
    out = tmp_path / "ppl"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "perplexity",
            "--base",
            str(bigger),
            "--adapter",
            str(adapter),
            "--data",
            str(data),
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "was trained on a model of another size" in result.output and "as --base" in result.output
    assert "Traceback" not in result.output and "size mismatch" not in result.output and not out.exists()
