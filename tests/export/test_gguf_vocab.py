"""The tokenizers export-base writes besides byte-level BPE: SentencePiece-style BPE (Llama 2, Mistral 7B,
Phi-3, Gemma) as llama.cpp's "llama" model, and Mistral Nemo's tekken split. Each is built on the spot;
the proof is llama.cpp tokenizing text into the ids transformers gives, and verify-gguf passing on it."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from contract.modelfile.inspect import gguf_fields
from pipeline.cli import app
from pipeline.export.gguf_vocab import (
    PRE_TOKENIZERS,
    TokenizerExportError,
    add_tokenizer,
    merge_ranks,
    space_prefix,
)
from pipeline.export.gguf_write import write_gguf
from pipeline.export.merged import export_merged
from tests.families import BY_NAME

# name -> (tiny architecture, family whose chat template the tokenizer is built around, SentencePiece style)
SP_CASES = {
    "mistral": ("mistral", "mistral-nemo", "metaspace"),  # Mistral 7B v0.3 as transformers 5 loads it
    "llama2": ("llama", "mistral-nemo", "prepend"),  # Llama 2's tokenizer.json as it ships
    "phi3": ("phi3", "phi3.5", "prepend"),
    "gemma2": ("gemma2", "gemma2", "gemma"),
    "gemma3": ("gemma3_text", "gemma2", "gemma"),  # Gemma 3 writes Gemma 2's turns
}
# Spaces, blank lines, a tab, characters the tiny vocabularies lack (byte fallback), added tokens.
TEXTS = [
    "Once upon a time,  the keeper's lamp went out.\n\nShe waited.",
    "  Café naïve — “quoted” … 🙂 日本語\n\tÜnïcödé!",
    "<reasoning>She ran.</reasoning> <answer>x</answer>",
]
# Phi-3's real chat tokens swallow the whitespace after them; llama.cpp gives any model named phi3 that
# for all added tokens but these (llama-vocab.cpp).
PHI3_KEEP_SPACE = {"<unk>", "<s>", "<|endoftext|>"}
runner = CliRunner()


@pytest.fixture(scope="session")
def sp_model(tmp_path_factory, tiny_texts):
    """sp_model(case) -> a tiny model folder with a SentencePiece-style tokenizer (cached)."""
    from pipeline.tiny import make_tiny_model

    made = {}

    def get(case: str):
        if case not in made:
            arch, family, style = SP_CASES[case]
            f = BY_NAME[family]
            out = tmp_path_factory.mktemp(f"sp-{case}")
            made[case] = make_tiny_model(
                out, tiny_texts, arch, template=(f.template().source, f.bos, f.eos), sp_style=style
            )
            if case == "phi3":
                _rstrip(made[case], PHI3_KEEP_SPACE)
        return made[case]

    return get


def _rstrip(folder, keep: set[str]) -> None:
    path = folder / "tokenizer.json"
    tok = json.loads(path.read_text(encoding="utf-8"))
    for added in tok["added_tokens"]:
        added["rstrip"] = added["content"] not in keep
    path.write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")


@pytest.fixture(scope="session")
def sp_gguf(sp_model, tmp_path_factory):
    made = {}

    def get(case: str):
        if case not in made:
            out = tmp_path_factory.mktemp(f"sp-gguf-{case}") / "base.gguf"
            made[case] = export_merged(None, sp_model(case), out, "gguf", "f32").path
        return made[case]

    return get


def samples(hf, starts_with_word: bool = True) -> list[str]:
    """A chat turn in the model's template, and TEXTS after BOS and (unless told not) alone."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf)
    turn = [{"role": "user", "content": TEXTS[0]}, {"role": "assistant", "content": TEXTS[1]}]
    chat = tok.apply_chat_template(turn, tokenize=False)
    return [chat, *(tok.bos_token + t for t in TEXTS), *(TEXTS if starts_with_word else [])]


def tokenizations(hf, gguf_path, texts: list[str]) -> list[tuple[list[int], list[int]]]:
    """(transformers ids, llama.cpp ids) for each text, with and without the tokenizer's BOS."""
    import llama_cpp
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf)
    llm = llama_cpp.Llama(str(gguf_path), vocab_only=True, verbose=False)
    try:
        return [
            (tok(t, add_special_tokens=add).input_ids, llm.tokenize(t.encode(), add_bos=add, special=True))
            for t in texts
            for add in (False, True)
        ]
    finally:
        llm.close()


@pytest.mark.parametrize("case", SP_CASES)
def test_sentencepiece_metadata(case, sp_model, sp_gguf):
    hf = sp_model(case)
    fields, tok = gguf_fields(sp_gguf(case)), json.loads((hf / "tokenizer.json").read_text())
    config = json.loads((hf / "config.json").read_text())
    vocab, added = tok["model"]["vocab"], {a["content"]: a for a in tok["added_tokens"]}
    assert fields["tokenizer.ggml.model"] == "llama" and fields["tokenizer.ggml.pre"] == "default"
    assert "tokenizer.ggml.merges" not in fields  # llama.cpp's SentencePiece model merges by score
    assert fields["tokenizer.ggml.add_space_prefix"] is (SP_CASES[case][2] == "prepend")
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    scores = fields["tokenizer.ggml.scores"]
    assert len(tokens) == len(types) == len(scores) == config["vocab_size"]
    assert [types[vocab[f"<0x{b:02X}>"]] for b in range(256)] == [6] * 256  # BYTE
    assert types[vocab["<unk>"]] == 2 and fields["tokenizer.ggml.unknown_token_id"] == vocab["<unk>"]
    for content, a in added.items():
        assert tokens[a["id"]] == content
        assert types[a["id"]] == (2 if content == "<unk>" else 3 if a["special"] else 4)
    # a token scores minus the rank of the first merge making it: in merge order, best first
    made = list(dict.fromkeys("".join(pair) for pair in tok["model"]["merges"]))
    made_scores = [scores[vocab[t]] for t in made]
    assert made_scores[0] == 0.0 and made_scores == sorted(made_scores, reverse=True)
    assert len(set(made_scores)) == len(made) and max(scores) == 0.0
    assert fields["tokenizer.ggml.bos_token_id"] == config["bos_token_id"]
    assert fields["tokenizer.ggml.eos_token_id"] == config["eos_token_id"]
    assert fields["tokenizer.ggml.add_bos_token"] is True  # these tokenizers add BOS


@pytest.mark.parametrize("case", SP_CASES)
def test_llama_cpp_tokenizes_as_transformers(case, sp_model, sp_gguf):
    """Metaspace's "first" puts a "▁" before the text's first word, which llama.cpp cannot: its texts
    start with a special token, as chat turns do."""
    hf = sp_model(case)
    pairs = tokenizations(hf, sp_gguf(case), samples(hf, SP_CASES[case][2] != "metaspace"))
    assert all(ref == got for ref, got in pairs), [p for p in pairs if p[0] != p[1]][:1]
    assert any(len(ref) > 40 for ref, _ in pairs)


@pytest.mark.parametrize("case", SP_CASES)
def test_export_base_and_verify_gguf_pass(case, sp_model, tmp_path):
    out = tmp_path / "base.gguf"
    base = runner.invoke(app, ["export-base", str(sp_model(case)), "-o", str(out), "--outtype", "f32"])
    assert base.exit_code == 0, base.output
    result = runner.invoke(app, ["verify-gguf", "--hf", str(sp_model(case)), "--gguf", str(out)])
    assert result.exit_code == 0 and "PASS" in result.output, result.output
    assert "same tokenization in llama.cpp: True" in result.output


def test_padding_up_to_the_models_vocab_size(sp_model, tmp_path):
    """Real checkpoints have more embedding rows than tokens (Phi-3: 32064 for 32011): UNUSED padding."""
    hf = sp_model("llama2")
    n = len(json.loads((hf / "tokenizer.json").read_text())["model"]["vocab"]) + 6  # the TAG tokens
    write_gguf(tmp_path / "v.gguf", "llama", lambda w: add_tokenizer(w, hf, n + 3), [])
    fields = gguf_fields(tmp_path / "v.gguf")
    assert fields["tokenizer.ggml.tokens"][n:] == [f"[PAD{i}]" for i in range(n, n + 3)]
    assert fields["tokenizer.ggml.token_type"][n:] == [5, 5, 5]  # UNUSED
    with pytest.raises(TokenizerExportError, match="vocab_size"):
        write_gguf(tmp_path / "w.gguf", "llama", lambda w: add_tokenizer(w, hf, n - 1), [])


@pytest.mark.parametrize(
    ("case", "tokenizer_class"), [("llama2", "LlamaTokenizer"), ("gemma2", "GemmaTokenizer")]
)
def test_tokenizer_class_is_written_as_transformers_loads_it(case, tokenizer_class, sp_model, tmp_path):
    """transformers 5 loads a LlamaTokenizer folder with Metaspace "first", whatever its tokenizer.json
    says (Llama 2's: a "▁" before every run of text), and a GemmaTokenizer one with a split of its own:
    the GGUF follows transformers."""
    from tokenizers import Tokenizer

    hf = tmp_path / "hf"
    shutil.copytree(sp_model(case), hf)
    config = json.loads((hf / "tokenizer_config.json").read_text())
    (hf / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": tokenizer_class}))
    out = export_merged(None, hf, tmp_path / "base.gguf", "gguf", "f32").path
    assert gguf_fields(out)["tokenizer.ggml.add_space_prefix"] is False
    texts = samples(hf, starts_with_word=case == "gemma2")
    pairs = tokenizations(hf, out, texts)
    assert all(ref == got for ref, got in pairs), [p for p in pairs if p[0] != p[1]][:1]
    if case == "llama2":  # not what tokenizer.json alone gives
        as_shipped = Tokenizer.from_file(str(hf / "tokenizer.json"))
        shipped = [as_shipped.encode(t, add_special_tokens=False).ids for t in texts]
        assert shipped != [ref for ref, _ in pairs[::2]]


@pytest.fixture(scope="session")
def tekken_model(tmp_path_factory, tiny_texts):
    """A tiny Mistral with a byte-level tokenizer split as Mistral Nemo's tekken.json converts."""
    from pipeline.tiny import make_tiny_model

    f = BY_NAME["mistral-nemo"]
    hf = make_tiny_model(
        tmp_path_factory.mktemp("tekken"), tiny_texts, "mistral", template=(f.template().source, f.bos, f.eos)
    )
    path = hf / "tokenizer.json"
    tok = json.loads(path.read_text(encoding="utf-8"))
    regex = next(r for r, name in PRE_TOKENIZERS.items() if name == "tekken")
    split = {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    tok["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [split, byte_level]}
    model = tok["model"]
    model["ignore_merges"] = True  # as transformers' tekken converter sets, and llama.cpp's tekken
    # The last merge's token becomes "lC", across a case change that tekken splits at and the others do
    # not: so any other split than tekken's tokenizes "camelCase" otherwise.
    last = "".join(model["merges"][-1])
    model["vocab"]["lC"] = model["vocab"].pop(last)
    model["merges"][-1] = ["l", "C"]
    path.write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    return hf


def test_tekken_split(tekken_model, tmp_path):
    out = export_merged(None, tekken_model, tmp_path / "base.gguf", "gguf", "f32").path
    assert gguf_fields(out)["tokenizer.ggml.pre"] == "tekken"
    texts = [*samples(tekken_model), "HTTPServer ÉCOLE isn't 12345 x/y\r\n camelCase"]
    pairs = tokenizations(tekken_model, out, texts)
    assert all(ref == got for ref, got in pairs), [p for p in pairs if p[0] != p[1]][:1]
    result = runner.invoke(app, ["verify-gguf", "--hf", str(tekken_model), "--gguf", str(out)])
    assert result.exit_code == 0 and "PASS" in result.output, result.output


def _tokenizer_folder(tmp_path, model) -> object:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(model), unk_token="<unk>").save_pretrained(tmp_path)
    return tmp_path


@pytest.mark.parametrize("kind", ["Unigram", "WordPiece"])
def test_other_tokenizers_are_refused_by_name(kind, tmp_path):
    from tokenizers import models

    model = (
        models.Unigram([("<unk>", 0.0), ("a", -1.0)], 0)
        if kind == "Unigram"
        else models.WordPiece({"<unk>": 0, "a": 1}, unk_token="<unk>")
    )
    folder = _tokenizer_folder(tmp_path, model)
    with pytest.raises(TokenizerExportError, match=rf"a {kind} tokenizer.*convert_hf_to_gguf\.py"):
        write_gguf(tmp_path / "v.gguf", "llama", lambda w: add_tokenizer(w, folder, 8), [])
    assert not (tmp_path / "v.gguf").exists()


PREPEND_NORM = {
    "type": "Sequence",
    "normalizers": [
        {"type": "Prepend", "prepend": "▁"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
    ],
}
METASPACE = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}


def test_space_prefix_and_refusals():
    vocab = {"model": {"vocab": {"▁a": 0, "b": 1}}}
    assert space_prefix({**vocab, "normalizer": PREPEND_NORM}) is True
    assert space_prefix({**vocab, "pre_tokenizer": METASPACE}) is False
    assert space_prefix({**vocab, "pre_tokenizer": dict(METASPACE, prepend_scheme="always")}) is True
    gemma = {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
    assert space_prefix({**vocab, "normalizer": gemma}) is False
    with pytest.raises(TokenizerExportError, match=r"\['NFKC'\].*convert_hf_to_gguf"):
        space_prefix({**vocab, "normalizer": {"type": "NFKC"}, "pre_tokenizer": METASPACE})
    normalized = [{"id": 2, "content": "<r>", "normalized": True, "special": False}]
    with pytest.raises(TokenizerExportError, match="after the Prepend normalizer"):
        space_prefix({**vocab, "normalizer": PREPEND_NORM, "added_tokens": normalized})
    spanning = {"model": {"vocab": {"a▁b": 0}}, "pre_tokenizer": dict(METASPACE, split=True)}
    with pytest.raises(TokenizerExportError, match="Metaspace splits words"):
        space_prefix(spanning)


def test_merges_must_be_sentencepieces():
    """llama.cpp joins any two neighbours that make a token; a BPE whose merges leave such a pair out
    (as `tokenizers` trains them) would split otherwise, so it is refused."""
    vocab = {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4, "abc": 5}
    merges = [["a", "b"], ["b", "c"], ["ab", "c"], ["a", "bc"]]
    assert merge_ranks({"model": {"vocab": vocab, "merges": merges}}) == {"ab": 0, "bc": 1, "abc": 2}
    with pytest.raises(TokenizerExportError, match="'a' \\+ 'bc' make token 'abc' but are not a merge"):
        merge_ranks({"model": {"vocab": vocab, "merges": merges[:3]}})
    with pytest.raises(TokenizerExportError, match="merges making 'abc' are not together"):
        merge_ranks({"model": {"vocab": vocab, "merges": [merges[0], merges[2], merges[1], merges[3]]}})


def test_tokens_transformers_adds_past_the_model_are_left_out(tiny_texts, tmp_path):
    """transformers 5 loads any qwen2 model's tokenizer as Qwen2's class, which adds <|endoftext|> where the
    vocabulary lacks it: an id past the model's embedding rows, which no training text reached."""
    from pipeline.tiny import make_tiny_model

    f = BY_NAME["qwen2.5"]
    hf = make_tiny_model(
        tmp_path / "hf", tiny_texts[:300], "qwen2", template=(f.template().source, f.bos, f.eos)
    )
    tokens = json.loads((hf / "tokenizer.json").read_text())
    assert "<|endoftext|>" not in {a["content"] for a in tokens["added_tokens"]}
    out = export_merged(None, hf, tmp_path / "base.gguf", "gguf", "f32").path
    fields = gguf_fields(out)
    assert len(fields["tokenizer.ggml.tokens"]) == json.loads((hf / "config.json").read_text())["vocab_size"]
    assert "<|endoftext|>" not in fields["tokenizer.ggml.tokens"]
    assert fields["tokenizer.ggml.pre"] == "qwen2"  # the split transformers runs
