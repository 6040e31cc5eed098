"""Tiny models built from a config and tokenizers trained on the spot: for tests, benchmarks and smoke runs.

Nothing here downloads anything. A tiny model has real architecture code, random weights, and a
byte-level BPE tokenizer trained on the given texts with a chat template: a plain ChatML or Llama 3
header template of ours by default, or a real family's (the tests pass the templates llama.cpp ships),
whose control tokens become the tokenizer's special tokens. So the whole pipeline (train, export,
verify, serve) runs on it in seconds on a CPU.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from contract.chat_template import ChatTemplate, _conversations

# Minimal chat templates of our own, for tiny models with no real family's template: ChatML (no default
# system turn) and Llama 3 instruct headers (each message trimmed).
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
#: name -> (template, bos token, eos token, pad token)
TEMPLATES = {
    "chatml": (CHATML, "", "<|im_end|>", "<|endoftext|>"),
    "llama3": (LLAMA3, "<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>"),
}
# Tags the writer target uses (and thinking families' think tags): single tokens keep tiny vocabularies
# from spending merges on them; they are text, not control tokens, as in the real tokenizers.
TAG_TOKENS = ["<reasoning>", "</reasoning>", "<answer>", "</answer>", "<think>", "</think>"]
_CONTROL_RE = re.compile(r"<[^<>\s]{1,40}>|\[[A-Z_/]{2,30}\]")


def control_tokens(template: ChatTemplate) -> list[str]:
    """The control tokens a chat template writes around messages (`<|im_start|>`, `[INST]`, `<｜User｜>`):
    what its real tokenizer has as special tokens, read off its renders of the probe conversations."""
    found: dict[str, None] = {}
    for messages in _conversations():
        for generation in (True, False):
            try:
                text = template.render(messages, add_generation_prompt=generation)
            except ValueError:
                continue
            for t in _CONTROL_RE.findall(text):
                if t not in TAG_TOKENS and "@@" not in t:
                    found[t] = None
    return list(found)


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 512,
    template: str = CHATML,
    bos_token: str = "",
    eos_token: str = "<|im_end|>",
    pad_token: str = "<|endoftext|>",
):
    """A byte-level BPE `PreTrainedTokenizerFast` trained on texts, with this chat template; the
    template's control tokens are its special tokens, and where the template writes BOS the tokenizer
    adds it too (so the GGUF says add_bos_token, and the runtime writes it before a raw prompt)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    chat = ChatTemplate(template, bos_token, eos_token)
    specials = list(dict.fromkeys(t for t in (pad_token, bos_token, eos_token, *control_tokens(chat)) if t))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.add_tokens(TAG_TOKENS)
    if chat.writes_bos:  # llama.cpp then adds BOS itself (add_bos_token), as the template writes it
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos_token} $A",
            pair=f"{bos_token} $A $B",
            special_tokens=[(bos_token, tok.token_to_id(bos_token))],
        )
    kw = {"bos_token": bos_token or None, "eos_token": eos_token, "pad_token": pad_token}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **kw)
    fast.chat_template = template
    return fast


def tiny_config(arch: str, vocab_size: int, **overrides):
    """A small but complete config: 2 layers, grouped-query attention, untied embeddings."""
    from transformers import LlamaConfig, Qwen2Config

    common: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
    )
    common.update(overrides)
    if arch == "qwen2":
        return Qwen2Config(**common)
    if arch == "llama":
        return LlamaConfig(**common)
    raise ValueError(f"unknown tiny architecture {arch!r}: use qwen2 or llama")


def make_tiny_model(
    out_dir: str | Path,
    texts: Iterable[str],
    arch: str = "qwen2",
    vocab_size: int = 512,
    seed: int = 0,
    template: tuple[str, str, str] | None = None,
    **config_overrides,
) -> Path:
    """Save a random tiny causal LM and its on-the-spot tokenizer as a Hugging Face folder.

    `template` is (chat template, bos token, eos token); by default Llama 3 headers for Llama-shaped
    architectures and ChatML for the others."""
    import torch
    from transformers import AutoModelForCausalLM

    if template is None:
        source, bos, eos, pad = TEMPLATES["llama3" if arch == "llama" else "chatml"]
    else:
        (source, bos, eos), pad = template, "<|pad|>"
    tokenizer = train_tokenizer(texts, vocab_size, source, bos, eos, pad)
    config = tiny_config(arch, len(tokenizer), **config_overrides)
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def corpus_texts(folder: str | Path, max_chars: int = 400_000) -> list[str]:
    """Paragraphs of the plain-text books in folder, to train a tiny tokenizer on."""
    out, total = [], 0
    for path in sorted(Path(folder).glob("*.txt")):
        for para in path.read_text(encoding="utf-8-sig").split("\n\n"):
            para = " ".join(para.split())
            if para:
                out.append(para)
                total += len(para)
                if total >= max_chars:
                    return out
    return out
