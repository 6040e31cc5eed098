"""Tiny models built from a config and tokenizers trained on the spot: for tests, benchmarks and smoke runs.

Nothing here downloads anything. A tiny model has real architecture code (Qwen2 or Llama), random
weights, and a byte-level BPE tokenizer trained on the given texts with the chat template of one of our
chat formats, so the whole pipeline (train, export, verify, serve) runs on it in seconds on a CPU.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from contract import chat_formats

SPECIAL_TOKENS = {
    "chatml": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    "llama3": [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
    ],
}
# Tags the writer target uses: single tokens keep tiny vocabularies from spending merges on them.
TAG_TOKENS = ["<reasoning>", "</reasoning>", "<answer>", "</answer>"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512, chat_format: str = "qwen2.5"):
    """A byte-level BPE `PreTrainedTokenizerFast` trained on texts, with the format's chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    fmt = chat_formats.get(chat_format)
    family = "llama3" if fmt.name == "llama3" else "chatml"
    specials = SPECIAL_TOKENS[family]
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
    if family == "llama3":
        kw = dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<|end_of_text|>")
    else:
        kw = dict(eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **kw)
    fast.chat_template = fmt.jinja
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
    **config_overrides,
) -> Path:
    """Save a random tiny causal LM and its on-the-spot tokenizer as a Hugging Face folder."""
    import torch
    from transformers import AutoModelForCausalLM

    chat_format = "llama3" if arch == "llama" else "qwen2.5"
    tokenizer = train_tokenizer(texts, vocab_size, chat_format)
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
