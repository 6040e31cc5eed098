"""Refusals before any training: chat templates, precision, QLoRA support, output folders, options."""

from __future__ import annotations

import shutil
import sys

import pytest

from contract import chat_template
from pipeline.tiny import CHATML, LLAMA3
from pipeline.train import base, outputs
from pipeline.train.options import TrainError, TrainOptions


@pytest.fixture
def tokenizer_copy(tiny_model, tmp_path):
    """A copy of the tiny model's tokenizer folder that a test may change."""
    src = tiny_model("qwen2")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (src / name).exists():
            shutil.copy(src / name, tmp_path / name)
    return tmp_path


def test_the_base_chat_template_is_read_and_pinned(tiny_model):
    tok, trained = base.load_tokenizer(tiny_model("qwen2"), None)
    assert trained.family == "ChatML (<|im_start|>)" and trained.source == CHATML
    assert chat_template.of_tokenizer(tok) == trained  # the pinned template carries its record
    _, trained = base.load_tokenizer(tiny_model("llama"), None)
    assert trained.family == "Llama 3 headers (<|start_header_id|>)"


def test_a_base_without_chat_template_needs_one(tokenizer_copy, tmp_path):
    (tokenizer_copy / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(TrainError, match="has no chat template: pass --chat-template"):
        base.load_tokenizer(tokenizer_copy, None)
    given = tmp_path / "chatml.jinja"
    given.write_text(CHATML, encoding="utf-8")
    tok, trained = base.load_tokenizer(tokenizer_copy, given)
    assert trained.source == CHATML and chat_template.of_tokenizer(tok) == trained


def test_an_unservable_chat_template_is_refused_by_name(tokenizer_copy, tmp_path):
    (tokenizer_copy / "chat_template.jinja").write_text(
        "{% for m in messages if m.role != 'system' %}{{ m['content'] }}\n{% endfor %}"
    )
    with pytest.raises(TrainError, match="drops the system turn, so no Modelfile could serve"):
        base.load_tokenizer(tokenizer_copy, None)
    llama = tmp_path / "llama3.jinja"
    llama.write_text(LLAMA3, encoding="utf-8")
    with pytest.raises(TrainError, match="no <\\|eot_id\\|>.* token"):
        base.load_tokenizer(tokenizer_copy, llama)  # a ChatML tokenizer lacks Llama 3's tokens


def test_precision_follows_the_hardware():
    old_gpu = base.Hardware("cuda", "Tesla T4", bf16=False)
    new_gpu = base.Hardware("cuda", "H100", bf16=True)
    cpu = base.Hardware("cpu", "CPU", bf16=False)
    assert base.choose_precision("auto", new_gpu) == "bf16"
    assert base.choose_precision("auto", old_gpu) == "fp16"
    assert base.choose_precision("auto", cpu) == "fp32"
    with pytest.raises(TrainError, match="Tesla T4 has no bf16 support: use --precision fp16"):
        base.choose_precision("bf16", old_gpu)
    with pytest.raises(TrainError, match="fp16 mixed precision needs a CUDA GPU"):
        base.choose_precision("fp16", cpu)
    # On a CPU bf16 is asked for, where it is native, and refused where it would be emulated.
    bf16_cpu = base.Hardware("cpu", "CPU", bf16=True)
    assert base.choose_precision("auto", bf16_cpu) == "fp32"
    assert base.choose_precision("bf16", bf16_cpu) == "bf16"
    with pytest.raises(TrainError, match="no native bf16 .* use --precision fp32"):
        base.choose_precision("bf16", cpu)
    assert base.detect_hardware().bf16 == base.cpu_has_bf16()  # no GPU in the tests


def test_qlora_is_refused_where_bitsandbytes_cannot_run(monkeypatch):
    base.check_qlora("cpu")  # the locked bitsandbytes trains 4-bit layers on the CPU, across evaluations
    with pytest.raises(
        TrainError, match="bitsandbytes .* cannot train 4-bit NF4 layers on meta .*--no-qlora"
    ):
        base.check_qlora("meta")
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(TrainError, match="needs bitsandbytes, which cannot load here .*--no-qlora"):
        base.check_qlora("cpu")


def _checkpoint(out, step, complete=True):
    folder = out / "checkpoints" / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    if complete:
        (folder / "trainer_state.json").write_text("{}")
    return folder


def test_resume_takes_the_last_complete_checkpoint_and_drops_partial_ones(tmp_path):
    with pytest.raises(TrainError, match="nothing to resume"):
        outputs.prepare(tmp_path, resume=True, overwrite=False)
    _checkpoint(tmp_path, 2)
    _checkpoint(tmp_path, 10)
    partial = _checkpoint(tmp_path, 12, complete=False)  # e.g. the disk filled up mid-save
    assert outputs.prepare(tmp_path, resume=True, overwrite=False).name == "checkpoint-10"
    assert not partial.exists()


def test_an_earlier_run_is_not_overwritten_silently(tmp_path):
    _checkpoint(tmp_path, 4)
    with pytest.raises(TrainError, match="holds an earlier run: pass --resume .* --overwrite"):
        outputs.prepare(tmp_path, resume=False, overwrite=False)
    (tmp_path / "notes.txt").write_text("mine")
    assert outputs.prepare(tmp_path, resume=False, overwrite=True) is None
    assert not (tmp_path / "checkpoints").exists() and (tmp_path / "notes.txt").exists()


def test_options_are_checked(tmp_path):
    with pytest.raises(TrainError, match="--method dpo starts from an SFT adapter: pass --adapter"):
        TrainOptions(base="b", out_dir=tmp_path, data=tmp_path / "d", method="dpo")
    with pytest.raises(TrainError, match="--early-stopping needs held-out rows"):
        TrainOptions(base="b", out_dir=tmp_path, data=tmp_path / "d", early_stopping=2)
    with pytest.raises(TrainError, match=r"--rank 0 is not in the valid range x>=1"):
        TrainOptions(base="b", out_dir=tmp_path, data=tmp_path / "d", rank=0)


def test_the_qlora_probe_fails_like_training_after_an_evaluation(monkeypatch):
    """bitsandbytes 0.49+ repacks 4-bit weights for inference on AVX512-BF16 CPUs; the next training step
    through a layer with a bias then fails. The probe must catch exactly that: one forward pass is not
    enough."""
    import bitsandbytes.nn as bnb_nn

    forward = bnb_nn.Linear4bit.forward
    evaluated = []

    def fails_after_an_evaluation(self, x):
        if not self.training:
            evaluated.append(True)
        elif evaluated and x.requires_grad:
            raise RuntimeError("a view of a leaf Variable that requires grad is being used in an in-place op")
        return forward(self, x)

    monkeypatch.setattr(bnb_nn.Linear4bit, "forward", fails_after_an_evaluation)
    with pytest.raises(
        TrainError, match="cannot train 4-bit NF4 layers on cpu .*a view of a leaf.*--no-qlora"
    ):
        base.check_qlora("cpu")
    assert evaluated


def test_train_refused_by_the_probe_writes_nothing(monkeypatch, tmp_path):
    from pipeline.train.run import train

    def broken(*_):
        raise RuntimeError("matmul_4bit broke")

    monkeypatch.setattr(base, "_probe_4bit_training", broken)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("", encoding="utf-8")
    out = tmp_path / "out"
    with pytest.raises(TrainError, match="matmul_4bit broke.*--no-qlora"):
        train(TrainOptions(base=str(tmp_path / "no-base"), out_dir=out, data=rows))
    assert not out.exists()


def test_a_chatml_base_with_its_own_default_system_turn_is_accepted(tokenizer_copy):
    """SmolLM2's kind of template: ChatML whose default system turn is its own; kept and recorded."""
    own = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    template = (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\n" + own + "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + "
        "'\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    (tokenizer_copy / "chat_template.jinja").write_text(template)
    tok, trained = base.load_tokenizer(tokenizer_copy, None)
    assert trained.source == template  # trained with the base's own template: the same bytes
    assert trained.prompt("x").startswith(f"<|im_start|>system\n{own}<|im_end|>\n")
    assert chat_template.from_record(trained.record()) == trained == chat_template.of_tokenizer(tok)


def test_the_default_attention_projections_follow_the_base(tiny_model, tmp_path):
    """Phi-3 fuses q, k and v into qkv_proj: the default targets become it, named ones are checked."""
    phi3, qwen = str(tiny_model("phi3")), str(tiny_model("qwen2"))
    rows = tmp_path / "rows.jsonl"
    assert base.check_target_modules(TrainOptions(base=phi3, out_dir=tmp_path, data=rows)) == (
        "qkv_proj",
        "o_proj",
    )
    assert base.check_target_modules(TrainOptions(base=qwen, out_dir=tmp_path, data=rows)) == (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
    )
    with pytest.raises(TrainError, match="--target-modules q_proj: .* has no such linear layer"):
        base.check_target_modules(
            TrainOptions(base=phi3, out_dir=tmp_path, data=rows, target_modules=("q_proj",))
        )
