"""QLoRA SFT on a tiny model on the CPU: it learns, the adapter reloads, it stops early, resumes."""

from __future__ import annotations

import errno
import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, TrainerCallback
from typer.testing import CliRunner

from contract.prompt import training_row
from pipeline.cli import app
from pipeline.tiny import CHATML
from pipeline.train.base import cpu_has_bf16
from pipeline.train.callbacks import read_log
from pipeline.train.options import TrainError, TrainOptions
from pipeline.train.run import train
from tests.train.helpers import corpus_windows, sft_rows, write_jsonl


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_texts):
    folder = tmp_path_factory.mktemp("sft-data")
    return (
        write_jsonl(folder / "train.jsonl", sft_rows(tiny_texts, 240)),
        write_jsonl(folder / "val.jsonl", sft_rows(tiny_texts, 16, start=400)),
    )


def _opts(base, out, data, **kw) -> TrainOptions:
    defaults = dict(
        max_length=320,
        batch_size=4,
        grad_accum=1,
        lr=1e-2,
        warmup=0,
        scheduler="constant",
        eval_steps=10,
        log_steps=5,
        seed=0,
        gradient_checkpointing=False,
        sample_contexts=0,  # generation at evaluations: tests/train/test_watch.py
    )
    return TrainOptions(base=str(base), out_dir=out, data=data[0], eval_data=data[1], **(defaults | kw))


def _logits(model, input_ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=input_ids).logits


def test_qlora_learns_and_the_adapter_reloads_with_the_same_logits(train_base, data, tmp_path):
    from peft import PeftModel

    out = tmp_path / "out"
    result = train(_opts(train_base, out, data, max_steps=20, gradient_checkpointing=True))

    evals = [e["eval_loss"] for e in read_log(out / "log.jsonl") if "eval_loss" in e]
    assert len(evals) == 3  # before training, then every 10 steps
    assert evals[-1] < evals[0] - 0.5, evals
    meta = json.loads((out / "training.json").read_text())
    assert meta["status"] == "done" and meta["global_step"] == 20
    # Step 0 is the base (a new adapter adds zero); the best trained step beat it and was kept.
    assert meta["base_eval_loss"] == evals[0] and meta["worse_than_base"] is False and meta["best_kept"]
    assert meta["chat_template"]["source"] == CHATML
    assert (
        meta["rows"]["train"]["kept"] >= 230 and 0 < meta["trainable_parameters"] < meta["total_parameters"]
    )
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 16 and set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert (out / "chat_template.jinja").is_file()  # the template the adapter was trained with
    sample = torch.tensor([result.trainer.train_dataset[0]["input_ids"][:64]])
    trained = _logits(result.model, sample)

    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    fresh = AutoModelForCausalLM.from_pretrained(train_base, quantization_config=quant, dtype=torch.float32)
    untrained = _logits(fresh, sample)
    reloaded = _logits(PeftModel.from_pretrained(fresh, str(out)), sample)
    torch.testing.assert_close(reloaded, trained, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(untrained, trained, atol=1e-2)


def test_early_stopping_keeps_the_best_adapter(train_base, data, tmp_path):
    # Any drop under 10 nats counts as no progress, so patience 1 stops at the second evaluation.
    opts = _opts(
        train_base,
        tmp_path / "out",
        data,
        max_steps=40,
        eval_steps=2,
        log_steps=2,
        early_stopping=1,
        early_stopping_threshold=10.0,
    )
    result = train(opts)
    assert result.metadata["stopped_early"] and result.global_step == 4
    evals = {e["step"]: e["eval_loss"] for e in read_log(tmp_path / "out" / "log.jsonl") if "eval_loss" in e}
    assert list(evals) == [0, 2, 4] and result.metadata["best_eval_loss"] == min(evals[2], evals[4])
    assert result.metadata["best_step"] == min((2, 4), key=evals.get) and result.metadata["best_kept"]
    assert json.loads((tmp_path / "out" / "training.json").read_text())["stopped_early"]


def test_a_run_worse_than_its_base_says_so_in_training_json_and_its_last_line(
    train_base, data, tiny_texts, tmp_path
):
    # Rows whose reasoning and answer are one nonsense word: learning them can only hurt on real text.
    noise = [training_row(c, "zq " * 12, "zq " * 24) for c, _ in corpus_windows(tiny_texts, 64)]
    rows = write_jsonl(tmp_path / "noise.jsonl", noise)
    out = tmp_path / "out"
    args = [
        "train",
        "--base",
        str(train_base),
        "-o",
        str(out),
        "--data",
        str(rows),
        "--eval-data",
        str(data[1]),
        "--no-qlora",
        "--max-length",
        "320",
        "--max-steps",
        "6",
        "--eval-steps",
        "2",
        "--batch-size",
        "4",
        "--grad-accum",
        "1",
        "--lr",
        "1e-2",
        "--warmup",
        "0",
        "--no-gradient-checkpointing",
        "--sample-contexts",
        "0",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "training.json").read_text())
    assert meta["worse_than_base"] is True and meta["best_eval_loss"] > meta["base_eval_loss"]
    last = " ".join(result.stderr.strip().splitlines()[-1].split())  # the messages go to stderr
    assert last.startswith("WORSE THAN THE BASE") and f"{meta['base_eval_loss']:.4f}" in last, last


class _At(TrainerCallback):
    """Call fn once the given optimizer step has ended."""

    def __init__(self, step, fn):
        self.step, self.fn = step, fn

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            self.fn()


def _adapter(out):
    return load_file(str(out / "adapter_model.safetensors"))


def test_a_run_that_fails_midway_leaves_no_result_files(train_base, data, tmp_path):
    def boom():
        raise RuntimeError("the GPU fell off")

    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="fell off"):
        train(
            _opts(train_base, out, data, max_steps=4, log_steps=1, eval_steps=100), callbacks=[_At(2, boom)]
        )
    assert not out.exists()  # no training.json saying it ran, no loss.png, no log


def test_ctrl_c_stops_with_a_checkpoint_and_resume_continues_exactly(train_base, data, tmp_path):
    opts = dict(max_steps=8, save_steps=100, eval_steps=100, log_steps=1, dropout=0.1)
    straight = train(_opts(train_base, tmp_path / "straight", data, **opts))

    out = tmp_path / "out"
    ctrl_c = _At(5, lambda: os.kill(os.getpid(), signal.SIGINT))
    stopped = train(_opts(train_base, out, data, **opts), callbacks=[ctrl_c])
    assert stopped.status == "stopped" and stopped.global_step == 5
    assert (out / "checkpoints" / "checkpoint-5" / "trainer_state.json").is_file()
    with pytest.raises(TrainError, match="holds an earlier run: pass --resume"):
        train(_opts(train_base, out, data, **opts))

    resumed = train(_opts(train_base, out, data, resume=True, **opts))
    assert resumed.status == "done" and resumed.global_step == 8
    assert resumed.metadata["resumed_from_step"] == 5
    steps = [e["step"] for e in read_log(out / "log.jsonl") if "loss" in e]
    assert steps == list(range(1, 9))  # the log tells one history, with no step twice
    # Same data order, dropout masks and optimizer state as the run that never stopped.
    for name, tensor in _adapter(tmp_path / "straight").items():
        torch.testing.assert_close(_adapter(out)[name], tensor)
    assert straight.global_step == 8


def test_a_full_disk_at_checkpoint_time_leaves_a_resumable_run(train_base, data, tmp_path, monkeypatch):
    from transformers import Trainer

    calls = []
    real = Trainer._save_rng_state

    def fail_second(self, output_dir):
        calls.append(output_dir)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_rng_state", fail_second)
    out = tmp_path / "out"
    opts = dict(max_steps=6, save_steps=2, eval_steps=100)
    with pytest.raises(
        TrainError,
        match="disk is full \\(removed the partial checkpoint-4\\).*--resume to continue from checkpoint-2",
    ):
        train(_opts(train_base, out, data, **opts))
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2"]

    monkeypatch.setattr(Trainer, "_save_rng_state", real)
    resumed = train(_opts(train_base, out, data, resume=True, **opts))
    assert resumed.global_step == 6 and resumed.metadata["resumed_from_step"] == 2


def test_cli_trains_plain_lora_grouped_by_length_and_refuses_bad_input(train_base, data, tmp_path):
    out = tmp_path / "out"
    args = [
        "train",
        "--base",
        str(train_base),
        "-o",
        str(out),
        "--data",
        str(data[0]),
        "--no-qlora",
        "--no-packing",
        "--max-length",
        "320",
        "--max-steps",
        "2",
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
        "--target-modules",
        "all-linear",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "trainable parameters:" in result.output and "of 240 rows kept" in result.output
    meta = json.loads((out / "training.json").read_text())
    assert meta["qlora"] is False and meta["global_step"] == 2
    targets = json.loads((out / "adapter_config.json").read_text())["target_modules"]
    assert any(t.endswith("gate_proj") for t in targets) and not any(t.endswith("lm_head") for t in targets)

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "holds an earlier run" in " ".join(again.output.split())
    bad = write_jsonl(tmp_path / "bad.jsonl", ['{"messages": []}'])
    result = CliRunner().invoke(app, [*args[:3], "-o", str(tmp_path / "o2"), "--data", str(bad)])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "no usable SFT rows" in text and 'skipped 1: no "messages" list' in text


def test_cli_trains_from_a_config_file_flags_win_and_training_json_repeats_the_run(
    train_base, data, tmp_path
):
    config = tmp_path / "run.toml"
    config.write_text(
        f'base = "{train_base}"\ndata = "{data[0]}"\nqlora = false\nmax-steps = 5\nrank = 4\n'
        'max_length = 320\nbatch_size = 2\ngrad_accum = 1\ntarget_modules = ["q_proj", "v_proj"]\n',
        encoding="utf-8",
    )
    first = tmp_path / "first"
    result = CliRunner().invoke(app, ["train", "--config", str(config), "-o", str(first), "--max-steps", "2"])
    assert result.exit_code == 0, result.output
    options = json.loads((first / "training.json").read_text())["options"]
    assert options["max_steps"] == 2 and options["rank"] == 4 and options["qlora"] is False  # the flag won
    assert options["target_modules"] == ["q_proj", "v_proj"] and options["alpha"] == 32  # a default kept

    again = tmp_path / "again"
    result = CliRunner().invoke(app, ["train", "--config", str(first / "training.json"), "-o", str(again)])
    assert result.exit_code == 0, result.output
    repeated = json.loads((again / "training.json").read_text())["options"]
    assert repeated == options | {"out_dir": str(again)}
    torch.testing.assert_close(_adapter(again), _adapter(first))  # same seed, same options: same adapter

    bad = tmp_path / "bad.toml"
    bad.write_text('bsae = "x"\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["train", "--config", str(bad), "-o", str(tmp_path / "o3")])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "unknown option(s) bsae" in text and not (tmp_path / "o3").exists()
    result = CliRunner().invoke(app, ["train", "-o", str(tmp_path / "o4")])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "missing --base, --data" in text


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16 (AVX512_BF16, AMX, Arm BF16)")
def test_bf16_on_a_cpu_that_multiplies_it_natively_trains_an_fp32_adapter(train_base, data, tmp_path):
    """`--precision bf16` on such a CPU (what story-demo asks for there): bf16 mixed precision, and the
    LoRA weights stay fp32, so small updates are not rounded away and the export reads them exactly."""
    result = train(_opts(train_base, tmp_path / "out", data, qlora=False, precision="bf16", max_steps=4))
    assert result.metadata["precision"] == "bf16" and result.global_step == 4
    losses = [h["loss"] for h in result.trainer.state.log_history if "loss" in h]
    assert losses and all(loss == loss and loss < 20 for loss in losses)  # finite, not NaN
    weights = load_file(tmp_path / "out" / "adapter_model.safetensors")
    assert {w.dtype for w in weights.values()} == {torch.float32}
    assert any(w.abs().sum() > 0 for name, w in weights.items() if "lora_B" in name)  # it moved
