"""DPO and KTO on feedback-style preference files, continuing a QLoRA SFT adapter, on the CPU."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from contract.prompt import render_prompt, render_target
from pipeline.train.callbacks import read_log
from pipeline.train.options import TrainError, TrainOptions
from pipeline.train.preference import sees_every_row
from pipeline.train.run import train
from tests.train.helpers import corpus_windows, sft_rows, write_jsonl

COMMON = dict(
    max_length=320,
    batch_size=4,
    grad_accum=1,
    warmup=0,
    scheduler="constant",
    log_steps=1,
    seed=0,
    gradient_checkpointing=False,
)


@pytest.fixture(scope="module")
def sft_adapter(train_base, tiny_texts, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sft")
    data = write_jsonl(folder / "train.jsonl", sft_rows(tiny_texts, 40))
    opts = TrainOptions(
        base=str(train_base),
        out_dir=folder / "adapter",
        data=data,
        max_steps=4,
        lr=1e-2,
        eval_steps=100,
        **COMMON,
    )
    return train(opts).out_dir


def _feedback(tiny_texts, n):
    """Rows as the feedback export writes them: the writer prompt as plain text, targets as text."""
    windows = corpus_windows(tiny_texts, n + 1, start=200)
    for (context, answer), (_, other) in zip(windows, windows[1:], strict=False):
        yield render_prompt(context), render_target("The story goes on.", answer), render_target("Hm.", other)


def test_dpo_starts_from_the_sft_adapter_and_learns(sft_adapter, train_base, tiny_texts, tmp_path):
    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in _feedback(tiny_texts, 24)]
    rows[1] = {  # the conversational form is accepted as well
        "prompt": [{"role": "user", "content": rows[1]["prompt"]}],
        "chosen": [{"role": "assistant", "content": rows[1]["chosen"]}],
        "rejected": [{"role": "assistant", "content": rows[1]["rejected"]}],
    }
    data = write_jsonl(tmp_path / "dpo.jsonl", [*rows, {"prompt": "x"}])
    out = tmp_path / "dpo"
    result = train(
        TrainOptions(
            base=str(train_base),
            out_dir=out,
            data=data,
            method="dpo",
            adapter=sft_adapter,
            max_steps=6,
            lr=5e-3,
            beta=0.5,
            eval_steps=100,
            **COMMON,
        )
    )

    assert result.metadata["rows"]["train"] == {
        "total": 25,
        "kept": 24,
        "cut": 5,  # 5 of 24 outgrow 320 tokens: the tiny base's ChatML has no default system turn
        "skipped": {"missing field chosen, rejected": 1},
    }
    losses = [e["loss"] for e in read_log(out / "log.jsonl") if "loss" in e]
    # At the first step the policy is the reference (the SFT adapter), so the margin is 0 and the loss ln 2.
    assert losses[0] == pytest.approx(math.log(2), abs=1e-3)
    assert min(losses[-3:]) < math.log(2) - 0.05, losses
    assert json.loads((out / "training.json").read_text())["method"] == "dpo"
    assert not (out / "ref").exists()  # only the trained adapter, not TRL's frozen reference copy
    before, after = (
        load_file(str(sft_adapter / "adapter_model.safetensors")),
        load_file(str(out / "adapter_model.safetensors")),
    )
    assert before.keys() == after.keys()
    assert any(not torch.allclose(before[k].float(), after[k].float()) for k in before)


def test_kto_trains_on_thumbs_up_and_down(sft_adapter, train_base, tiny_texts, tmp_path):
    rows = []
    for p, good, bad in _feedback(tiny_texts, 12):
        rows += [
            {"prompt": p, "completion": good, "label": True},
            {"prompt": p, "completion": bad, "label": False},
        ]
    data = write_jsonl(tmp_path / "kto.jsonl", rows[:-3])  # fewer thumbs down: weights rebalance them
    out = tmp_path / "kto"
    result = train(
        TrainOptions(
            base=str(train_base),
            out_dir=out,
            data=data,
            method="kto",
            adapter=sft_adapter,
            max_steps=3,
            lr=5e-3,
            eval_steps=100,
            **COMMON,
        )
    )
    assert result.status == "done" and result.global_step == 3
    assert [e for e in read_log(out / "log.jsonl") if "loss" in e]
    assert (out / "adapter_model.safetensors").is_file()


def test_dpo_with_an_sft_weight_also_trains_on_the_chosen_reply(
    sft_adapter, train_base, tiny_texts, tmp_path
):
    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in _feedback(tiny_texts, 8)]
    out = tmp_path / "rpo"
    opts = dict(base=str(train_base), data=write_jsonl(tmp_path / "dpo.jsonl", rows), adapter=sft_adapter)
    train(
        TrainOptions(out_dir=out, method="dpo", max_steps=1, sft_weight=1.0, eval_steps=100, **opts, **COMMON)
    )
    first = next(e["loss"] for e in read_log(out / "log.jsonl") if "loss" in e)
    # The preference term is ln 2 at the first step; the chosen replies' mean NLL under the tiny model adds
    # several nats to it.
    assert first > math.log(2) + 1.0
    with pytest.raises(TrainError, match="--sft-weight is for --method dpo"):
        TrainOptions(out_dir=out, method="kto", sft_weight=1.0, **opts)


@pytest.mark.parametrize(
    ("steps", "epochs", "rows", "precomputed"),
    [(6, 2.0, 24, True), (5, 2.0, 24, False), (1, 2.0, 4, True), (-1, 1.0, 1000, True), (-1, 0.5, 10, False)],
)
def test_reference_log_probs_are_computed_once_per_row_when_the_run_sees_every_row(
    tmp_path, steps, epochs, rows, precomputed
):
    opts = TrainOptions(
        base="b",
        out_dir=tmp_path,
        data=tmp_path / "d.jsonl",
        method="dpo",
        adapter=tmp_path,
        max_steps=steps,
        epochs=epochs,
        **COMMON,
    )
    assert sees_every_row(opts, rows) is precomputed
