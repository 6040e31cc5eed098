"""Training targets (`--target`, contract/target.py): each target's row bytes; a tiny real run per new
target writing it into training.json; and the target carried on: through the GGUF adapter export into
the Modelfile and the served request (`answer`), or refused by name for serving (`text`)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from transformers import AutoTokenizer

from contract import go_chat, prompt, serving
from contract.target import Target, TargetError, plain_text
from pipeline.train import rows
from pipeline.train.options import TrainError, TrainOptions
from pipeline.train.run import train
from tests.families import qwen
from tests.train.helpers import corpus_windows, sft_rows, write_jsonl

CONTEXT, REASONING, ANSWER = "The door opened. A man walked in.", "He is tired.", "He sat down."


@pytest.fixture(scope="module")
def tok(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model("qwen2"))


def _split(tok, enc: rows.Encoded) -> tuple[str, str]:
    n = enc.labels.count(-100)
    return tok.decode(enc.input_ids[:n]), tok.decode(enc.input_ids[n:])


def test_each_chat_target_trains_the_same_prompt_and_its_own_reply_bytes(tok):
    row = prompt.training_row(CONTEXT, REASONING, ANSWER)
    full = rows.encode_sft(tok, row, 1024, Target.REASONING_ANSWER)
    short = rows.encode_sft(tok, row, 1024, Target.ANSWER)
    assert _split(tok, full)[1] == f"<reasoning>{REASONING}</reasoning><answer>{ANSWER}</answer><|im_end|>\n"
    assert _split(tok, short)[1] == f"<answer>{ANSWER}</answer><|im_end|>\n"
    assert _split(tok, short)[0] == _split(tok, full)[0]  # the same served prompt, byte for byte
    # A row already in the answer shape is taken as it is; an untagged reply is refused.
    assert Target.ANSWER.reply(f"<answer>{ANSWER}</answer>") == f"<answer>{ANSWER}</answer>"
    with pytest.raises(TargetError, match="not \\[<reasoning>"):
        Target.ANSWER.reply(f"{ANSWER} <answer>x")
    with pytest.raises(TargetError, match="<reasoning>…</reasoning><answer>"):
        Target.REASONING_ANSWER.reply(f"<answer>{ANSWER}</answer>")


def test_a_text_row_is_the_window_as_plain_text_every_token_trained(tok):
    window = {"context": "The door opened.\n\nA man walked in. ", "continuation": " He sat down."}
    assert plain_text(window) == "The door opened.\n\nA man walked in. He sat down."
    enc = rows.encode_sft(tok, window, 1024, Target.TEXT)
    assert enc.labels == enc.input_ids and -100 not in enc.labels  # the loss is on every token
    assert tok.decode(enc.input_ids) == plain_text(window) + tok.eos_token  # no chat template: EOS ends it
    # Control tokens in book text stay text, as in chat rows.
    forged = rows.encode_sft(tok, {"text": "He said <|im_end|> twice."}, 1024, Target.TEXT)
    assert tok.convert_tokens_to_ids("<|im_end|>") not in forged.input_ids[:-1]
    long = rows.encode_sft(tok, {"text": " ".join(["word"] * 400) + " END"}, 64, Target.TEXT)
    assert long.cut and len(long.input_ids) <= 64 and tok.decode(long.input_ids).endswith("END<|im_end|>")


def test_rows_that_do_not_fit_the_target_are_skipped_by_reason(tmp_path, tok):
    chat = prompt.training_row(CONTEXT, REASONING, ANSWER)
    data = write_jsonl(tmp_path / "rows.jsonl", [chat, {"context": "A.", "continuation": "B."}])
    _, stats = rows.load_sft(data, tok, 1024, Target.TEXT)
    assert stats.kept == 1 and list(stats.skipped) == [
        "a chat row: --target text trains on the data step's windows (context, continuation)"
    ]
    _, stats = rows.load_sft(data, tok, 1024, Target.ANSWER)
    assert stats.kept == 1 and stats.skipped == {'no "messages" list': 1}
    # The data step's windows carry their book's split: one chunks file serves as --data and --eval-data.
    windows = [{"context": "A.", "continuation": "B.", "split": s} for s in ("train", "validation", "train")]
    chunks = write_jsonl(tmp_path / "chunks.jsonl", windows)
    train_rows, train = rows.load_sft(chunks, tok, 1024, Target.TEXT, "train")
    _, held_out = rows.load_sft(chunks, tok, 1024, Target.TEXT, "validation")
    assert (train.kept, held_out.kept, len(train_rows)) == (2, 1, 2)
    assert held_out.skipped == {"a window of the train split (this file is read for validation)": 2}


def test_a_target_is_checked_by_name():
    with pytest.raises(
        TrainError, match="--target must be one of reasoning\\+answer, answer, text, not 'plain'"
    ):
        TrainOptions(base="b", out_dir="o", data="d", target="plain")
    with pytest.raises(TrainError, match="--target answer is for --method sft"):
        TrainOptions(base="b", out_dir="o", data="d", target="answer", method="dpo", adapter="a")


def test_an_answer_model_reads_its_output_without_a_reasoning_fault():
    parsed = Target.ANSWER.parse(f"<answer>{ANSWER}</answer>")
    assert parsed.answer == ANSWER and parsed.ok
    assert Target.ANSWER.parse("<answer>He sat", partial=True).answer == "He sat"
    assert not Target.REASONING_ANSWER.parse(f"<answer>{ANSWER}</answer>").ok  # a fault for that target


def _run(base, tmp_path, data, target: str):
    opts = TrainOptions(
        base=str(base),
        out_dir=tmp_path / target,
        data=data,
        target=target,
        qlora=False,
        max_length=256,
        max_steps=2,
        batch_size=4,
        grad_accum=1,
        gradient_checkpointing=False,
        lr=1e-2,
        warmup=0,
    )
    said: list[str] = []
    result = train(opts, printer=said.append)
    return result, json.loads((opts.out_dir / "training.json").read_text()), said


def test_an_answer_model_is_exported_and_served_the_prompt_it_trained_on(train_base, tiny_texts, tmp_path):
    from pipeline.evaluate import perplexity
    from pipeline.export.gguf_adapter import export_adapter
    from pipeline.modelfile import render

    data = write_jsonl(tmp_path / "rows.jsonl", sft_rows(tiny_texts, 8))
    result, meta, said = _run(train_base, tmp_path, data, "answer")
    assert meta["target"] == "answer" == meta["options"]["target"] == meta["chat_template"]["target"]
    assert "SFT (answer)" in said[0] and meta["rows"]["train"]["kept"] == 8
    # What it was fed (packed): replies without reasoning.
    fed = AutoTokenizer.from_pretrained(train_base).decode(result.trainer.train_dataset[0]["input_ids"])
    assert "<|im_start|>assistant\n<answer>" in fed and "<reasoning>" not in fed

    gguf = export_adapter(result.out_dir, train_base, tmp_path / "answer.gguf").path
    path, _ = render.write(tmp_path / "W.Modelfile", "qwen2.5:7b-instruct", adapter=gguf)
    text = path.read_text(encoding="utf-8")
    assert "--target answer" in text and 'PARAMETER stop "</answer>"' in text
    from contract.modelfile import grammar

    template = grammar.parse(text).first("template")
    user = prompt.render_prompt(CONTEXT)
    request = serving.request_for(template, user)
    trained = serving.served_template(template)
    assert request.target is Target.ANSWER and request.raw and trained is not None
    assert request.prompt == replace(trained, target="reasoning+answer").prompt(user)  # the same bytes

    # eval perplexity scores the rows as this adapter was trained on them.
    scored = perplexity.run(str(train_base), result.out_dir, [json.loads(data.read_text().splitlines()[0])])
    assert scored["target"] == "answer" and scored["adapter"]["answer"]["tokens"] > 0


def test_a_text_model_trains_on_windows_and_is_refused_for_serving(train_base, tiny_texts, tmp_path):
    from pipeline.evaluate import perplexity
    from pipeline.export.gguf_adapter import export_adapter
    from pipeline.modelfile import render

    windows = [{"context": c, "continuation": a} for c, a in corpus_windows(tiny_texts, 8)]
    data = write_jsonl(tmp_path / "windows.jsonl", windows)
    result, meta, _ = _run(train_base, tmp_path, data, "text")
    assert meta["target"] == "text" == meta["chat_template"]["target"] and meta["rows"]["train"]["kept"] == 8
    assert result.trainer.train_dataset[0]["labels"] == result.trainer.train_dataset[0]["input_ids"]

    gguf = export_adapter(result.out_dir, train_base, tmp_path / "text.gguf").path  # weights export as any
    with pytest.raises(
        render.ModelfileRenderError, match="--target text .* cannot be served the writer prompt"
    ):
        render.write(tmp_path / "W.Modelfile", "qwen2.5:7b-instruct", adapter=gguf)
    assert not (tmp_path / "W.Modelfile").exists()
    with pytest.raises(serving.ServingError, match="--target text"):
        serving.request_for(go_chat.writer_template(replace(qwen(), target="text")), "U")
    with pytest.raises(perplexity.PerplexityError, match="--target text"):
        perplexity.target_of(result.out_dir)

    # What it is for: a stage an SFT target trains on top of, and that one is served.
    rows_file = write_jsonl(tmp_path / "rows.jsonl", sft_rows(tiny_texts, 4))
    opts = TrainOptions(
        base=str(train_base),
        out_dir=tmp_path / "on-top",
        data=rows_file,
        adapter=result.out_dir,
        target="answer",
        qlora=False,
        max_length=256,
        max_steps=1,
        batch_size=4,
        grad_accum=1,
        gradient_checkpointing=False,
    )
    on_top = train(opts, printer=lambda _: None)
    assert on_top.metadata["target"] == "answer" == on_top.metadata["chat_template"]["target"]
