"""Tokenizer metadata llama.cpp needs for a byte-level BPE model, read from tokenizer.json (no transformers).

llama.cpp's "gpt2" tokenizer model takes the byte-level vocabulary as is, the merges, a token type per id
(added special tokens are CONTROL, other added tokens USER_DEFINED, ids past the tokenizer up to the
model's vocab_size are UNUSED padding) and a named pre-tokenizer whose regex must be the one the
tokenizer splits with. The name is chosen by matching that regex (llama.cpp's list in
src/llama-vocab.cpp); an unknown one is refused instead of guessed, since a wrong split is silent.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf

# Split regexes as Hugging Face tokenizer.json spells them -> llama.cpp pre-tokenizer names.
PRE_TOKENIZERS = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",  # noqa: E501
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",  # noqa: E501
}
CONVERT_HINT = "convert this base with llama.cpp's convert_hf_to_gguf.py instead"


class TokenizerExportError(ValueError):
    pass


def pre_tokenizer_name(tok: dict) -> str:
    pre = tok.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    types = [s.get("type") for s in steps]
    if types == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"  # ByteLevel's built-in regex is GPT-2's
    if types == ["Split", "ByteLevel"]:
        regex = steps[0].get("pattern", {}).get("Regex")
        if regex in PRE_TOKENIZERS:
            return PRE_TOKENIZERS[regex]
        raise TokenizerExportError(
            f"pre-tokenizer regex {regex!r} is not one this writer knows; {CONVERT_HINT}"
        )
    raise TokenizerExportError(
        f"pre-tokenizer {types} is not a byte-level BPE one this writer knows; {CONVERT_HINT}"
    )


def adds_bos_eos(folder: Path) -> tuple[bool, bool]:
    """Whether the Hugging Face tokenizer puts a BOS / EOS token around plain text."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    plain, full = tok.encode("a", add_special_tokens=False).ids, tok.encode("a").ids
    extra = len(full) > len(plain)
    return extra and full[0] != plain[0], extra and full[-1] != plain[-1]


def add_tokenizer(
    w: gguf.GGUFWriter, folder: Path, vocab_size: int, chat_template: str | None = None
) -> None:
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise TokenizerExportError(f"{folder} has no tokenizer.json: the GGUF model needs the tokenizer")
    tok = json.loads(path.read_text(encoding="utf-8"))
    model = tok.get("model", {})
    if model.get("type") != "BPE" or (tok.get("decoder") or {}).get("type") != "ByteLevel":
        raise TokenizerExportError(f"{path}: only byte-level BPE tokenizers are written here; {CONVERT_HINT}")
    pre = pre_tokenizer_name(tok)
    tokens: dict[int, str] = {i: t for t, i in model["vocab"].items()}
    types = dict.fromkeys(tokens, gguf.TokenType.NORMAL)
    for added in tok.get("added_tokens", []):
        tokens[added["id"]] = added["content"]
        types[added["id"]] = gguf.TokenType.CONTROL if added["special"] else gguf.TokenType.USER_DEFINED
    if max(tokens) >= vocab_size:
        raise TokenizerExportError(
            f"{path} has token id {max(tokens)} but the model's vocab_size is {vocab_size}"
        )
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list([tokens.get(i, f"[PAD{i}]") for i in range(vocab_size)])
    w.add_token_types([types.get(i, gguf.TokenType.UNUSED) for i in range(vocab_size)])
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size)
    special.add_special_token["bos"], special.add_special_token["eos"] = adds_bos_eos(folder)
    if chat_template is not None:
        special.chat_template = chat_template
    special.add_to_gguf(w, quiet=True)
