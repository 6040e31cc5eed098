"""The model families writers train today, each with its real chat template.

The templates are llama.cpp's copies (`models/templates/` in its source), read from the llama-cpp-python
sdist the lock pins: `make templates` downloads it from PyPI and extracts them under .cache/; nothing of
them is in this repository. BOS/EOS are the family tokenizers' own; `arch` is the architecture of the
tiny model a test builds for the family (the family's own where the exporter writes it); `library` the
Ollama library tag a Modelfile names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Family:
    name: str
    file: str
    bos: str
    eos: str
    arch: str
    library: str | None = None

    def template(self, date: str = "2026-12-06"):
        from contract.chat_template import ChatTemplate

        return ChatTemplate(source(self.file), self.bos, self.eos, date)


_R1 = ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>")
_L3 = ("<|begin_of_text|>", "<|eot_id|>")
FAMILIES = [
    Family("qwen2.5", "Qwen-Qwen2.5-7B-Instruct.jinja", "", "<|im_end|>", "qwen2", "qwen2.5:7b"),
    Family(
        "deepseek-r1-distill-qwen",
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
        *_R1,
        "qwen2",
        "deepseek-r1:1.5b",
    ),
    Family(
        "deepseek-r1-distill-llama",
        "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja",
        *_R1,
        "llama",
        "deepseek-r1:8b",
    ),
    Family("deepseek-r1-llama.cpp", "llama-cpp-deepseek-r1.jinja", *_R1, "qwen2"),
    Family("qwen3", "Qwen-Qwen3-0.6B.jinja", "", "<|im_end|>", "qwen3", "qwen3:0.6b"),
    Family("qwq", "Qwen-QwQ-32B.jinja", "", "<|im_end|>", "qwen2", "qwq:32b"),
    Family("llama3.1", "meta-llama-Llama-3.1-8B-Instruct.jinja", *_L3, "llama", "llama3.1:8b"),
    Family("llama3.2", "meta-llama-Llama-3.2-3B-Instruct.jinja", *_L3, "llama", "llama3.2:3b"),
    Family("llama3.3", "meta-llama-Llama-3.3-70B-Instruct.jinja", *_L3, "llama", "llama3.3:70b"),
    Family("granite4", "ibm-granite-granite-4.0.jinja", "", "<|end_of_text|>", "llama", "granite4:3b"),
    Family(
        "mistral-nemo",
        "mistralai-Mistral-Nemo-Instruct-2407.jinja",
        "<s>",
        "</s>",
        "mistral",
        "mistral-nemo:12b",
    ),
    Family(
        "mistral-small3.2",
        "Mistral-Small-3.2-24B-Instruct-2506.jinja",
        "<s>",
        "</s>",
        "mistral",
        "mistral-small3.2:24b",
    ),
    Family("gemma2", "google-gemma-2-2b-it.jinja", "<bos>", "<eos>", "gemma2", "gemma2:2b"),
    Family("phi3.5", "microsoft-Phi-3.5-mini-instruct.jinja", "<s>", "<|endoftext|>", "phi3", "phi3.5:3.8b"),
    Family("smollm3", "HuggingFaceTB-SmolLM3-3B.jinja", "", "<|im_end|>", "llama"),
    Family(
        "granite3.3",
        "ibm-granite-granite-3.3-2B-Instruct.jinja",
        "",
        "<|end_of_text|>",
        "llama",
        "granite3.3:2b",
    ),
]
BY_NAME = {f.name: f for f in FAMILIES}


def templates_dir() -> Path:
    """Where `make templates` extracted them (the folder named for the pinned llama-cpp-python)."""
    lock = (REPO / "requirements" / "lock.txt").read_text(encoding="utf-8")
    version = re.search(r"^llama_cpp_python==(\S+)$", lock, re.M)
    assert version, "requirements/lock.txt pins no llama_cpp_python"
    return REPO / ".cache" / "chat-templates" / version.group(1)


def source(file: str) -> str:
    path = templates_dir() / file
    if not path.is_file():
        import pytest

        pytest.fail(f"the real chat templates are missing ({path}): run `make templates` (make test does)")
    return path.read_text(encoding="utf-8")


def qwen():
    """Qwen2.5-Instruct's chat template: the family CRA-v1 was trained on, the tests' default writer."""
    return BY_NAME["qwen2.5"].template()


def writer_template() -> str:
    """The TEMPLATE of a model made from our Modelfiles on a Qwen2.5 base."""
    from contract import go_chat

    return go_chat.writer_template(qwen())


def plain_template() -> str:
    """A plain Qwen2.5-Instruct model's TEMPLATE: its chat turns, no writer prompt."""
    from contract import go_chat

    return go_chat.writer_template(qwen(), writer=False)
