"""Tiny models built from a config and tokenizers trained on the spot: for tests, benchmarks and smoke runs.

Nothing here downloads anything. A tiny model has real architecture code (Qwen2/3, Llama, Mistral,
Phi-3, Gemma 2/3), random weights, and a byte-level BPE tokenizer trained on the given texts with a chat
template: a plain ChatML or Llama 3 header template of ours by default, or a real family's (the tests
pass the templates llama.cpp ships), whose control tokens become the tokenizer's special tokens. So the
whole pipeline (train, export, verify, serve) runs on it in seconds on a CPU.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from contract.chat_template import ChatTemplate, probe_conversations

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
    for messages in probe_conversations():
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


# SentencePiece-style BPE pipelines as Hugging Face spells them (byte fallback, "▁" for a space):
# "metaspace" is how transformers 5 loads Llama 2 and Mistral 7B (a "▁" before the text's start only),
# "prepend" how Llama 2's and Phi-3's tokenizer.json ship (a "▁" before every run of text), "gemma" Gemma's
# (no "▁" added).
SP_STYLES = ("metaspace", "prepend", "gemma")


def _sp_pipeline(tok, style: str) -> None:
    from tokenizers import decoders, normalizers, pre_tokenizers

    if style == "metaspace":
        tok.pre_tokenizer = pre_tokenizers.Metaspace("▁", prepend_scheme="first", split=False)
    elif style == "prepend":
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    elif style == "gemma":
        tok.normalizer = normalizers.Replace(" ", "▁")
    else:
        raise ValueError(f"unknown SentencePiece style {style!r}: use one of {', '.join(SP_STYLES)}")
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if style != "gemma":  # the "▁" the encoder put before the text
        steps.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(steps)


def train_sp_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 512,
    template: str = CHATML,
    bos_token: str = "<s>",
    eos_token: str = "</s>",
    style: str = "metaspace",
):
    """A SentencePiece-style BPE `PreTrainedTokenizerFast` trained on texts, laid out as Llama 2, Mistral
    v0.3, Phi-3 and Gemma ship theirs: <unk>, BOS, EOS and the template's control tokens, the 256 <0xNN>
    byte tokens for characters it lacks, then pieces that never span words. Its merges are every pair of
    tokens that makes a token, in the order of the token made: what transformers converts a SentencePiece
    model to, and what SentencePiece (and llama.cpp) merge by. BOS is added, as those tokenizers do."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.tokenization_utils_base import generate_merges

    chat = ChatTemplate(template, bos_token, eos_token)
    # Gemma's layout has <pad> and <mask>, which its transformers tokenizer class adds where they are missing
    first = ["<unk>", bos_token, eos_token]
    if style == "gemma":
        first = ["<pad>", eos_token, bos_token, "<unk>", "<mask>"]
    specials = list(dict.fromkeys([*first, *control_tokens(chat)]))
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    pieces = Tokenizer(models.BPE())
    pieces.pre_tokenizer = pre_tokenizers.Metaspace("▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(specials) - 256, show_progress=False)
    pieces.train_from_iterator(texts, trainer)
    trained = sorted(pieces.get_vocab().items(), key=lambda kv: kv[1])
    vocab = {t: i for i, t in enumerate([*specials, *byte_tokens, *(t for t, _ in trained)])}
    merges = generate_merges(vocab, skip_tokens=[*specials, *byte_tokens])
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    _sp_pipeline(tok, style)
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials])
    tok.add_tokens([AddedToken(t, normalized=False) for t in TAG_TOKENS])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos_token} $A", pair=f"{bos_token} $A $B", special_tokens=[(bos_token, vocab[bos_token])]
    )
    pad = "<pad>" if style == "gemma" else None
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos_token, eos_token=eos_token, unk_token="<unk>", pad_token=pad
    )
    fast.chat_template = template
    return fast


LLAMA31_ROPE = dict(
    rope_type="llama3",
    rope_theta=500000.0,
    factor=8.0,
    low_freq_factor=1.0,
    high_freq_factor=4.0,
    original_max_position_embeddings=8192,
)
# Phi-3.5's LongRoPE: per-frequency divisors, the short ones below original_max_position_embeddings.
PHI35_ROPE = dict(
    rope_type="longrope",
    rope_theta=10000.0,
    short_factor=[1.0, 1.0, 1.02, 1.1, 1.3, 1.6, 2.0, 2.6],
    long_factor=[1.0, 1.2, 1.9, 3.5, 7.0, 14.0, 24.0, 36.0],
)
# Weights large enough that a wrong rope, attention scale, soft-cap or norm in an export moves the logits
# far past rounding (at transformers' 0.02 several of them hide under it).
SENSITIVE: dict[str, Any] = dict(initializer_range=0.1)
# Per family: the transformers config class and what makes a 2-layer, 64-wide model look like the real
# checkpoints to an export. Where the real value is also llama.cpp's default (Gemma's attention scalar and
# soft-caps, Gemma 3's local rope base) the tiny one differs, so that writing it is tested.
FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "qwen2": ("Qwen2Config", {}),
    "llama": ("LlamaConfig", {}),
    # Qwen3 0.6B-4B: 16 heads x 128 > hidden 1024, embeddings tied
    "qwen3": ("Qwen3Config", dict(SENSITIVE, head_dim=32, tie_word_embeddings=True)),
    # Mistral Nemo: an explicit head_dim; v0.2 onwards: no sliding window
    "mistral": ("MistralConfig", dict(SENSITIVE, head_dim=32, sliding_window=None)),
    "phi3": (
        "Phi3Config",
        dict(
            SENSITIVE,
            max_position_embeddings=131072,
            original_max_position_embeddings=4096,
            rope_parameters=PHI35_ROPE,
        ),
    ),
    "gemma2": (
        "Gemma2Config",
        dict(
            SENSITIVE,
            head_dim=16,
            query_pre_attn_scalar=24,
            attn_logit_softcapping=5.0,
            final_logit_softcapping=3.0,
            sliding_window=8,
            tie_word_embeddings=True,
        ),
    ),
    "gemma3_text": (
        "Gemma3TextConfig",
        dict(
            SENSITIVE,
            head_dim=16,
            query_pre_attn_scalar=24,
            sliding_window=8,
            tie_word_embeddings=True,
            layer_types=["sliding_attention", "full_attention"],
            rope_parameters={  # Gemma 3 4B+: a local rope base, linear scaling on the global layers
                "sliding_attention": dict(rope_type="default", rope_theta=20000.0),
                "full_attention": dict(rope_type="linear", factor=8.0, rope_theta=1000000.0),
            },
        ),
    ),
}
# Named variants of a family: what a real checkpoint's config changes (Llama 3.1 / 3.2's rope scaling,
# 3.2 1B/3B's tied embeddings).
LLAMA3_CONTEXT = 131072
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama3.1": (
        "llama",
        dict(SENSITIVE, rope_parameters=LLAMA31_ROPE, max_position_embeddings=LLAMA3_CONTEXT),
    ),
    "llama3.2": (
        "llama",
        dict(
            SENSITIVE,
            rope_parameters={**LLAMA31_ROPE, "factor": 32.0},
            max_position_embeddings=LLAMA3_CONTEXT,
            tie_word_embeddings=True,
        ),
    ),
}
# Tokens llama.cpp looks up by name in any model whose name says phi3 (llama-vocab.cpp): Phi-3's own.
FAMILY_TOKENS = {"phi3": ["<unk>", "<s>", "</s>"]}


def family_of(arch: str) -> str:
    """The Hugging Face model_type of a tiny architecture or variant name."""
    return VARIANTS[arch][0] if arch in VARIANTS else arch


def tiny_config(arch: str, vocab_size: int, **overrides):
    """A small but complete config: 2 layers, grouped-query attention, the family's own settings
    (untied embeddings unless the family ties them); arch is a FAMILIES or VARIANTS name."""
    import transformers

    family, settings = VARIANTS.get(arch, (arch, {}))
    if family not in FAMILIES:
        raise ValueError(
            f"unknown tiny architecture {arch!r}: use one of {', '.join([*FAMILIES, *VARIANTS])}"
        )
    class_name, defaults = FAMILIES[family]
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
    common.update(defaults)
    common.update(settings)
    common.update(overrides)
    return getattr(transformers, class_name)(**common)


def make_tiny_model(
    out_dir: str | Path,
    texts: Iterable[str],
    arch: str = "qwen2",
    vocab_size: int = 512,
    seed: int = 0,
    template: tuple[str, str, str] | None = None,
    sp_style: str | None = None,
    **config_overrides,
) -> Path:
    """Save a random tiny causal LM and its on-the-spot tokenizer as a Hugging Face folder.

    `template` is (chat template, bos token, eos token); by default Llama 3 headers for Llama-shaped
    architectures and ChatML for the others. The tokenizer is byte-level BPE, or SentencePiece-style BPE
    in one of SP_STYLES (then ChatML with <s> and </s> by default)."""
    import torch
    from transformers import AutoModelForCausalLM

    family = family_of(arch)
    if sp_style is not None:
        source, bos, eos = template or (CHATML, "<s>", "</s>")
        tokenizer = train_sp_tokenizer(texts, vocab_size, source, bos, eos, sp_style)
    else:
        if template is None:
            source, bos, eos, pad = TEMPLATES["llama3" if family == "llama" else "chatml"]
        else:
            (source, bos, eos), pad = template, "<|pad|>"
        tokenizer = train_tokenizer(texts, vocab_size, source, bos, eos, pad)
    tokenizer.add_tokens(FAMILY_TOKENS.get(family, []), special_tokens=True)
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
