"""Tokenizer metadata llama.cpp needs, read from the tokenizer transformers loads for a model folder.

Two kinds of Hugging Face BPE tokenizer are written; anything else is refused by name instead of guessed,
since a wrong split is silent.

Byte-level BPE (Qwen2, Llama 3, Mistral Nemo's tekken, DeepSeek-R1-Distill-Qwen) becomes llama.cpp's
"gpt2" tokenizer model: the byte-level vocabulary as is, the merges, and a named pre-tokenizer whose regex
must be the one the tokenizer splits with (llama.cpp's list in src/llama-vocab.cpp).

SentencePiece-style BPE (Llama 2, Mistral 7B, Phi-3, Gemma: byte fallback to <0xNN> tokens, "▁" for a
space) becomes llama.cpp's "llama" (SentencePiece) model. llama.cpp does not read merges there: it joins
any two neighbours that make a token, the best-scored first, as SentencePiece does. So each token scores
minus the rank of the first merge making it, and the tokenizer's merges must be SentencePiece's (every
pair of tokens that makes a token listed, a token's merges together), as converted SentencePiece models'
are. Where the tokenizer puts a "▁" before text, llama.cpp's add_space_prefix puts one before each run of
text (at the start and after each special token): exactly a "Prepend" normalizer (Llama 2's and Phi-3's
tokenizer.json). Metaspace's prepend_scheme "first" (how transformers 5 loads Llama 2 and Mistral) puts it
only before the text's very start, so it is written without the prefix: the same ids for text that
starts with a special token (BOS or a chat template's), one token apart for text that starts with a word.

Token types for both: added special tokens are CONTROL, other added tokens USER_DEFINED, <0xNN> BYTE and
the unknown token UNKNOWN (SentencePiece-style), ids past the tokenizer up to the model's vocab_size
UNUSED padding.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import gguf

# Split regexes as Hugging Face tokenizer.json spells them -> llama.cpp pre-tokenizer names.
PRE_TOKENIZERS = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",  # noqa: E501
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",  # noqa: E501
    # Mistral Nemo's tekken (llama.cpp rewrites the case classes for its own regex engine)
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+": "tekken",  # noqa: E501
}
CONVERT_HINT = "convert this base with llama.cpp's convert_hf_to_gguf.py instead"
SPACE = "▁"  # SentencePiece's space
# SentencePiece-style normalizers and pre-tokenizers as the tokenizers library serializes them.
PREPEND = {"type": "Prepend", "prepend": SPACE}
REPLACE = {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}
# transformers 5's Gemma tokenizer splits on " " after its normalizer replaced every " ": a no-op
GEMMA_SPLIT = {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": False}
BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")


class TokenizerExportError(ValueError):
    pass


def hf_tokenizer(folder: Path) -> Any:
    """The `tokenizers.Tokenizer` transformers runs for `folder`: transformers 5 rebuilds some families'
    normalizer and pre-tokenizer from their tokenizer class (Llama's, Gemma's, Qwen2's), whatever
    tokenizer.json says. Without transformers (or for a tokenizer it holds elsewhere) tokenizer.json."""
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    if not path.is_file():
        raise TokenizerExportError(f"{folder} has no tokenizer.json: the GGUF model needs the tokenizer")
    try:
        from transformers import AutoTokenizer
    except ImportError:
        return Tokenizer.from_file(str(path))
    backend = getattr(AutoTokenizer.from_pretrained(folder), "backend_tokenizer", None)
    return backend if backend is not None else Tokenizer.from_file(str(path))


def _steps(part: dict | None, kind: str) -> list[dict]:
    """A normalizer's or pre-tokenizer's steps, a Sequence flattened."""
    if not part:
        return []
    return part[kind] if part.get("type") == "Sequence" else [part]


def pre_tokenizer_name(tok: dict) -> str:
    """llama.cpp's name for a byte-level BPE tokenizer's split."""
    steps = _steps(tok.get("pre_tokenizer"), "pretokenizers")
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


def space_prefix(tok: dict) -> bool:
    """llama.cpp's add_space_prefix for a SentencePiece-style tokenizer's normalizer and pre-tokenizer."""
    norm = _steps(tok.get("normalizer"), "normalizers")
    pre = _steps(tok.get("pre_tokenizer"), "pretokenizers")
    if norm == [PREPEND, REPLACE] and not pre:
        # added tokens matched after normalizing leave the text after them without its "▁"
        if any(a.get("normalized") for a in tok.get("added_tokens", [])):
            raise TokenizerExportError(f"added tokens matched after the Prepend normalizer; {CONVERT_HINT}")
        return True
    if norm == [REPLACE] and pre in ([], [GEMMA_SPLIT]):
        return False
    if not norm and len(pre) == 1 and pre[0].get("type") == "Metaspace" and pre[0]["replacement"] == SPACE:
        # split at each "▁" is the same as not splitting only while no token has a "▁" past its start
        if pre[0].get("split") and any(SPACE in t[1:] for t in tok["model"]["vocab"]):
            raise TokenizerExportError(f"Metaspace splits words that tokens span; {CONVERT_HINT}")
        return pre[0].get("prepend_scheme") == "always"
    names = [s.get("type") for s in norm], [s.get("type") for s in pre]
    raise TokenizerExportError(
        f"SentencePiece-style normalizer {names[0]} with pre-tokenizer {names[1]} is not one this writer "
        f"knows; {CONVERT_HINT}"
    )


def merge_ranks(tok: dict) -> dict[str, int]:
    """Token -> rank of the first merge making it, checked to be what llama.cpp's SentencePiece
    tokenizer reproduces: it joins any two neighbours that make a token (by the token's score), the HF
    BPE only listed pairs (by rank)."""
    model = tok["model"]
    vocab: dict[str, int] = model["vocab"]
    pairs = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    ranks: dict[str, int] = {}
    previous = None
    for rank, (left, right) in enumerate(pairs):
        made = left + right
        if made in ranks and made != previous:
            raise TokenizerExportError(f"the merges making {made!r} are not together; {CONVERT_HINT}")
        ranks.setdefault(made, rank)
        previous = made
    listed, added = set(pairs), {a["content"] for a in tok.get("added_tokens", [])}
    for token in vocab.keys() - added:
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            if left in vocab and right in vocab and (left, right) not in listed:
                raise TokenizerExportError(
                    f"{left!r} + {right!r} make token {token!r} but are not a merge: not SentencePiece's "
                    f"merges; {CONVERT_HINT}"
                )
    return ranks


def token_table(tok: dict, vocab_size: int) -> tuple[dict[int, str], dict[int, gguf.TokenType]]:
    """Id -> token and type for the vocabulary and the added tokens, checked to fit vocab_size."""
    tokens: dict[int, str] = {i: t for t, i in tok["model"]["vocab"].items()}
    types = dict.fromkeys(tokens, gguf.TokenType.NORMAL)
    for added in tok.get("added_tokens", []):
        tokens[added["id"]] = added["content"]
        types[added["id"]] = gguf.TokenType.CONTROL if added["special"] else gguf.TokenType.USER_DEFINED
    if max(tokens) >= vocab_size:
        raise TokenizerExportError(
            f"the tokenizer has token id {max(tokens)} but the model's vocab_size is {vocab_size}"
        )
    return tokens, types


def add_byte_level(w: gguf.GGUFWriter, tok: dict, vocab_size: int) -> None:
    pre = pre_tokenizer_name(tok)
    tokens, types = token_table(tok, vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list([tokens.get(i, f"[PAD{i}]") for i in range(vocab_size)])
    w.add_token_types([types.get(i, gguf.TokenType.UNUSED) for i in range(vocab_size)])


def add_sentencepiece(w: gguf.GGUFWriter, tok: dict, vocab_size: int) -> None:
    prefix, ranks = space_prefix(tok), merge_ranks(tok)
    model = tok["model"]
    if sum(1 for t in model["vocab"] if BYTE_TOKEN.fullmatch(t)) != 256:
        raise TokenizerExportError(f"byte fallback without the 256 <0xNN> byte tokens; {CONVERT_HINT}")
    tokens, types = token_table(tok, vocab_size)
    for i, token in tokens.items():
        if BYTE_TOKEN.fullmatch(token) and types[i] == gguf.TokenType.NORMAL:
            types[i] = gguf.TokenType.BYTE
    if model.get("unk_token") in model["vocab"]:
        types[model["vocab"][model["unk_token"]]] = gguf.TokenType.UNKNOWN
    lowest = -float(len(ranks) + 1)  # no merge makes it: below every merged token
    scores = [-float(ranks[t]) if (t := tokens.get(i)) in ranks else lowest for i in range(vocab_size)]
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list([tokens.get(i, f"[PAD{i}]") for i in range(vocab_size)])
    w.add_token_scores(scores)
    w.add_token_types([types.get(i, gguf.TokenType.UNUSED) for i in range(vocab_size)])
    w.add_add_space_prefix(prefix)


def adds_bos_eos(backend: Any) -> tuple[bool, bool]:
    """Whether the Hugging Face tokenizer puts a BOS / EOS token around plain text."""
    plain, full = backend.encode("a", add_special_tokens=False).ids, backend.encode("a").ids
    extra = len(full) > len(plain)
    return extra and full[0] != plain[0], extra and full[-1] != plain[-1]


def runs_on_model(tok: dict, folder: Path, vocab_size: int) -> dict:
    """The tokenizer transformers runs, less the tokens its class adds by default where the vocabulary lacks
    them (Qwen2's <|endoftext|>) past the model's embedding rows: no id of theirs reaches the model."""
    shipped = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")).get("added_tokens", [])
    known = {a["content"] for a in shipped}
    added = [a for a in tok.get("added_tokens", []) if a["id"] < vocab_size or a["content"] in known]
    return {**tok, "added_tokens": added}


def add_tokenizer(
    w: gguf.GGUFWriter, folder: Path, vocab_size: int, chat_template: str | None = None
) -> None:
    """The tokenizer of `folder`; `chat_template` replaces the folder's own as tokenizer.chat_template."""
    backend = hf_tokenizer(folder)
    tok = runs_on_model(json.loads(backend.to_str()), folder, vocab_size)
    model, decoder = tok.get("model", {}), (tok.get("decoder") or {}).get("type")
    sentencepiece = model.get("type") == "BPE" and bool(model.get("byte_fallback"))
    if sentencepiece:
        add_sentencepiece(w, tok, vocab_size)
    elif model.get("type") == "BPE" and decoder == "ByteLevel":
        add_byte_level(w, tok, vocab_size)
    else:
        raise TokenizerExportError(
            f"{folder / 'tokenizer.json'}: a {model.get('type')} tokenizer with a {decoder} decoder is "
            f"neither byte-level nor SentencePiece-style BPE, the kinds written here; {CONVERT_HINT}"
        )
    special = gguf.SpecialVocab(folder, load_merges=not sentencepiece, n_vocab=vocab_size)
    special.add_special_token["bos"], special.add_special_token["eos"] = adds_bos_eos(backend)
    if chat_template is not None:
        special.chat_template = chat_template
    special.add_to_gguf(w, quiet=True)
