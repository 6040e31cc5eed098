"""Training you can watch: --report-to tensorboard writes event files TensorBoard's own reader reads
back, and sample continuations of held-out contexts land in samples.jsonl without changing training."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
from typer.testing import CliRunner

from contract.prompt import parse_output
from pipeline.cli import app
from pipeline.train.callbacks import read_log, sample_prompts, sample_record
from pipeline.train.options import TrainError, TrainOptions, build_options, read_config
from pipeline.train.run import train
from tests.train.helpers import sft_rows, write_jsonl


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_texts):
    folder = tmp_path_factory.mktemp("watch-data")
    return (
        write_jsonl(folder / "train.jsonl", sft_rows(tiny_texts, 48, context_words=24, answer_words=8)),
        write_jsonl(
            folder / "val.jsonl", sft_rows(tiny_texts, 6, start=400, context_words=24, answer_words=8)
        ),
    )


def _opts(base, out, data, **kw) -> TrainOptions:
    defaults = dict(
        max_length=256,
        batch_size=4,
        grad_accum=1,
        lr=1e-2,
        warmup=0,
        scheduler="constant",
        max_steps=4,
        eval_steps=2,
        log_steps=1,
        seed=0,
        gradient_checkpointing=True,
        early_stopping=0,
        sample_tokens=12,
    )
    return TrainOptions(base=str(base), out_dir=out, data=data[0], eval_data=data[1], **(defaults | kw))


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def watched(train_base, data, tmp_path_factory):
    """One tiny run (4 steps, evaluations at 0, 2, 4) with TensorBoard and samples at every second one."""
    pytest.importorskip("tensorboard")
    out = tmp_path_factory.mktemp("watched") / "out"
    result = train(_opts(train_base, out, data, report_to="tensorboard", sample_contexts=2, sample_every=2))
    return out, result


def test_tensorboard_event_files_hold_the_loss_and_the_sample_texts(watched):
    out, _ = watched
    acc = _events(out / "tensorboard")
    scalars = acc.Tags()["scalars"]
    assert "train/loss" in scalars and "eval/loss" in scalars, scalars
    assert [e.step for e in acc.Scalars("eval/loss")] == [0, 2, 4]
    losses = {e["step"]: e["loss"] for e in read_log(out / "log.jsonl") if "loss" in e}
    for event in acc.Scalars("train/loss"):
        assert event.value == pytest.approx(losses[event.step], rel=1e-5)
    rates = acc.Scalars("samples/format_rate")
    assert [e.step for e in rates] == [0, 4] and all(0 <= e.value <= 1 for e in rates)
    samples = [r for r in read_log(out / "samples.jsonl") if r["step"] == 4]
    assert len(samples) == 2
    for r in samples:  # add_text stores the text as a string tensor under TAG/text_summary
        (event,) = [e for e in acc.Tensors(f"samples/context_{r['context']}/text_summary") if e.step == 4]
        assert r["text"] in event.tensor_proto.string_val[0].decode()


def test_samples_jsonl_holds_each_sampled_evaluation_and_context(watched):
    out, _ = watched
    records = read_log(out / "samples.jsonl")
    assert [(r["step"], r["context"]) for r in records] == [(0, 0), (0, 1), (4, 0), (4, 1)]
    for r in records:
        assert r["format_ok"] == parse_output(r["text"]).ok and isinstance(r["issues"], list)
    # Greedy on the same prompts: what changed between step 0 and step 4 is the model.
    assert records[2]["text"] != records[0]["text"] or records[3]["text"] != records[1]["text"]
    meta = json.loads((out / "training.json").read_text())
    assert meta["status"] == "done" and meta["options"]["report_to"] == "tensorboard"


def test_sampling_leaves_training_unchanged(train_base, data, watched, tmp_path):
    """The same run without samples and without TensorBoard logs the very same losses: generation
    touches neither the weights, the optimizer, the random state nor the train mode."""
    out, _ = watched
    plain = tmp_path / "plain"
    train(_opts(train_base, plain, data, sample_contexts=0))
    assert not (plain / "samples.jsonl").exists() and not (plain / "tensorboard").exists()
    ours, theirs = read_log(out / "log.jsonl"), read_log(plain / "log.jsonl")
    for key in ("loss", "eval_loss"):
        a = [(e["step"], e[key]) for e in ours if key in e]
        b = [(e["step"], e[key]) for e in theirs if key in e]
        assert len(a) == len(b) > 2
        assert [s for s, _ in a] == [s for s, _ in b]
        assert [v for _, v in a] == pytest.approx([v for _, v in b], rel=1e-5)


def test_samples_start_from_the_served_prompt_and_are_judged_by_the_lenient_parser(train_base, data):
    from contract.chat_template import of_tokenizer
    from pipeline.train import base, rows
    from pipeline.train.callbacks import stop_token_ids

    tokenizer, _ = base.load_tokenizer(str(train_base), None)
    row = json.loads(data[1].read_text().splitlines()[0])
    enc = rows.encode_sft(tokenizer, row, 1024)
    (ids,) = sample_prompts([{"input_ids": enc.input_ids, "labels": enc.labels}], 3)
    served = of_tokenizer(tokenizer).render(row["messages"][:1], add_generation_prompt=True)
    assert tokenizer.decode(ids) == served  # the prompt bytes, up to the reply
    assert stop_token_ids(tokenizer) == [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    good = sample_record(4, 1, "<reasoning>She waits.</reasoning><answer>The door opens.</answer>")
    assert good == {
        "step": 4,
        "context": 1,
        "text": good["text"],
        "cut": False,
        "format_ok": True,
        "issues": [],
    }
    bad = sample_record(4, 0, "The door opens. The door opens.")
    assert not bad["format_ok"] and bad["issues"] == ["no_tags"]
    cut = sample_record(6, 0, "<reasoning>She waits.</reasoning><answer>The door", cut=True)
    assert cut["cut"] and cut["issues"] == ["unclosed_answer"]


def test_generation_restores_train_mode_and_says_when_the_budget_cut_it(train_base, data):
    import torch
    from transformers import AutoModelForCausalLM

    from pipeline.train import base, rows
    from pipeline.train.callbacks import generate

    tokenizer, _ = base.load_tokenizer(str(train_base), None)
    row = json.loads(data[1].read_text().splitlines()[0])
    enc = rows.encode_sft(tokenizer, row, 1024)
    prompts = sample_prompts([{"input_ids": enc.input_ids, "labels": enc.labels}], 1)
    model = AutoModelForCausalLM.from_pretrained(train_base).train()
    before = {n: p.clone() for n, p in model.named_parameters()}
    rng = torch.get_rng_state()
    ((text, cut),) = generate(model, tokenizer, prompts, 1)
    assert model.training and torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(p, before[n]) and p.grad is None for n, p in model.named_parameters())
    # One new token: the end-of-turn stop (decoded away, not cut) or a word the budget then cut.
    assert cut == (text != "")
    ((longer, _),) = generate(model, tokenizer, prompts, 6)
    assert longer.startswith(text)  # greedy: the same first token


def test_a_missing_tracker_is_named_before_anything_is_written(train_base, data, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "wandb" else real(n, *a))
    out = tmp_path / "out"
    argv = [
        "train",
        "--base",
        str(train_base),
        "-o",
        str(out),
        "--data",
        str(data[0]),
        "--report-to",
        "wandb",
    ]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "--report-to wandb needs the wandb library" in text and "'.[wandb]'" in text
    assert not out.exists()


def test_report_to_is_checked_and_rides_in_training_json(tmp_path, data):
    with pytest.raises(TrainError, match="--report-to must be one of none, tensorboard, wandb, mlflow"):
        TrainOptions(base="b", out_dir=tmp_path, data=data[0], report_to="comet")
    with pytest.raises(TrainError, match="--sample-every 0 is not"):
        TrainOptions(base="b", out_dir=tmp_path, data=data[0], sample_every=0)
    opts = TrainOptions(
        base="b", out_dir=tmp_path, data=data[0], report_to="mlflow", sample_contexts=5, sample_tokens=40
    )
    saved = tmp_path / "training.json"
    saved.write_text(json.dumps({"options": opts.as_dict()}))
    again = build_options(read_config(saved), {"sample_every": 3})
    assert (again.report_to, again.sample_contexts, again.sample_tokens, again.sample_every) == (
        "mlflow",
        5,
        40,
        3,
    )
    toml = tmp_path / "run.toml"
    toml.write_text('base = "b"\nout_dir = "x"\ndata = "d"\nreport-to = "tensorboard"\n')
    assert build_options(read_config(toml), {}).report_to == "tensorboard"


def test_the_tracker_environment_points_into_the_run_and_is_restored(tmp_path, data, monkeypatch):
    from pipeline.train import tracking

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracker:5000")
    opts = TrainOptions(base="b", out_dir=tmp_path / "run", data=data[0], report_to="tensorboard")
    with tracking.environment(opts):
        assert os.environ["TENSORBOARD_LOGGING_DIR"] == str((tmp_path / "run" / "tensorboard").resolve())
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ
    with tracking.environment(TrainOptions(base="b", out_dir=tmp_path, data=data[0], report_to="mlflow")):
        assert os.environ["MLFLOW_TRACKING_URI"] == "http://tracker:5000"  # the caller's choice wins
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with tracking.environment(TrainOptions(base="b", out_dir=tmp_path, data=data[0], report_to="mlflow")):
        assert os.environ["MLFLOW_TRACKING_URI"] == (tmp_path.resolve() / "mlruns").as_uri()


def test_a_resumed_run_keeps_the_samples_up_to_its_checkpoint_and_a_fresh_one_none(tmp_path):
    from transformers import TrainerState

    from pipeline.train.callbacks import SampleLog
    from plumbing import jsonl

    path = tmp_path / "samples.jsonl"
    jsonl.write(path, [sample_record(step, 0, "x") for step in (0, 2, 4)])
    SampleLog(tmp_path, [[1]], None, 4).on_train_begin(None, TrainerState(global_step=2), None)
    assert [r["step"] for r in read_log(path)] == [0, 2]  # step 4 was work lost with its checkpoint
    SampleLog(tmp_path, [[1]], None, 4).on_train_begin(None, TrainerState(global_step=0), None)
    assert read_log(path) == []


def test_overwrite_and_a_failed_run_clear_the_samples_and_the_event_files(tmp_path):
    from pipeline.train import outputs

    out = tmp_path / "run"
    (out / "tensorboard").mkdir(parents=True)
    (out / "adapter_config.json").write_text("{}")
    for name in ("samples.jsonl", "tensorboard/events.out.tfevents.1"):
        (out / name).write_text("x")
    outputs.prepare(out, resume=False, overwrite=True)
    assert not (out / "samples.jsonl").exists() and not (out / "tensorboard").exists()
    (out / "tensorboard").mkdir()
    (out / "samples.jsonl").write_text("x")
    outputs.discard_failed_run(out, created=False)  # nothing to resume: nothing of the run stays
    assert out.is_dir() and not (out / "samples.jsonl").exists() and not (out / "tensorboard").exists()
