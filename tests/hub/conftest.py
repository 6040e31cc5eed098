import json

import pytest

from tests.fakes.hub import FakeHub
from tests.modelfile.conftest import write_gguf


@pytest.fixture
def fake_hub(monkeypatch):
    """A stand-in Hub on a free loopback port; uploads go through LFS (Xet is the client's own protocol)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    with FakeHub() as hub:
        yield hub


@pytest.fixture
def run_dir(tmp_path):
    """A finished run as `story-pipeline train` leaves it, on a local base whose card declares a license."""
    base = tmp_path / "models" / "r1-1.5b"
    base.mkdir(parents=True)
    (base / "README.md").write_text("---\nlicense: mit\nlibrary_name: transformers\n---\n# base\n")
    run = tmp_path / "out" / "r1-writer"
    (run / "checkpoints" / "checkpoint-10").mkdir(parents=True)
    (run / "checkpoints" / "checkpoint-10" / "trainer_state.json").write_text("{}")
    (run / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 16}))
    (run / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(4096))
    (run / "tokenizer.json").write_text('{"model": {}}')
    (run / "log.jsonl").write_text('{"step": 10, "loss": 1.5}\n')
    options = {
        "base": str(base),
        "out_dir": str(run),
        "data": "data/train.jsonl",
        "method": "sft",
        "rank": 16,
        "alpha": 32,
        "target_modules": ["q_proj", "v_proj"],
        "epochs": 2.0,
        "lr": None,
        "max_length": 2048,
        "seed": 42,
    }
    meta = {
        "method": "sft",
        "base": str(base),
        "qlora": True,
        "precision": "bf16",
        "device": "NVIDIA H100",
        "rows": {"train": {"rows": 1800}},
        "options": options,
        "status": "done",
        "global_step": 10,
        "best_eval_loss": 1.25,
        "finished": "2026-01-01T00:00:00",
    }
    (run / "training.json").write_text(json.dumps(meta))
    write_gguf(tmp_path / "out" / "r1-writer.gguf")
    write_gguf(tmp_path / "out" / "r1-writer-Q4_K_M.gguf", kind="model")
    (tmp_path / "out" / "Writer.Modelfile").write_text("FROM deepseek-r1:1.5b\nADAPTER ./r1-writer.gguf\n")
    return run
