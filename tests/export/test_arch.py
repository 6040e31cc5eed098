"""The family table (pipeline.export.arch.ARCHS) and the config readings it drives, without llama.cpp."""

from __future__ import annotations

import json
import math

import pytest

from contract.modelfile.inspect import HF_TO_GGUF_ARCH
from pipeline.export.arch import ARCHS, BaseModel, BaseModelError, load_base
from pipeline.export.gguf_model import plan_model, swa_pattern


def config_base(tmp_path, **config) -> BaseModel:
    """A config-only BASE folder."""
    common = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128)
    (tmp_path / "config.json").write_text(json.dumps({**common, **config}))
    return load_base(tmp_path)


def test_table_agrees_with_the_contract():
    """`modelfile` reads a folder's GGUF architecture from contract's table; the exports write ARCHS'."""
    assert {t: spec.gguf_arch for t, spec in ARCHS.items()} == HF_TO_GGUF_ARCH


@pytest.mark.parametrize(
    ("sliding", "expected"),
    [
        ([True, False], 2),  # Gemma 2: local, global, ...
        ([True] * 5 + [False] + [True] * 2, 6),  # Gemma 3: five local, one global
        ([False, False], 1),
        ([True, True], 3),  # all local: any period past the layer count
        ([False, True], [False, True]),  # no period gives it: the per-layer list
    ],
)
def test_swa_pattern(sliding, expected):
    assert swa_pattern(sliding) == expected


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (dict(model_type="gemma2", head_dim=256, query_pre_attn_scalar=256), [True, False]),
        (dict(model_type="gemma3_text", sliding_window_pattern=3, num_hidden_layers=4), [1, 1, 0, 1]),
        (dict(model_type="gemma3_text", layer_types=["full_attention", "sliding_attention"]), [False, True]),
        (dict(model_type="mistral", sliding_window=None), [False, False]),
        (dict(model_type="mistral"), [True, True]),  # v0.1: every layer
        (dict(model_type="qwen2", use_sliding_window=False), [False, False]),
    ],
)
def test_sliding_layers(config, expected, tmp_path):
    config.setdefault("sliding_window", 4096)
    assert config_base(tmp_path, **config).sliding_layers() == [bool(x) for x in expected]


@pytest.mark.parametrize(
    ("layers", "scalar", "expected"),
    [
        (26, 256, 1.0),  # Gemma 2 2B: llama.cpp's 1/sqrt(head_dim) is the config's
        (46, 144, 1.0),  # Gemma 2 27B: llama.cpp takes 1/sqrt(n_embd / n_head) = 1/sqrt(144)
        (26, 144, math.sqrt(256 / 144)),
    ],
)
def test_gemma2_query_scale(layers, scalar, expected, tmp_path):
    base = config_base(
        tmp_path,
        model_type="gemma2",
        num_hidden_layers=layers,
        hidden_size=4608,
        num_attention_heads=32,
        head_dim=256,
        query_pre_attn_scalar=scalar,
    )
    assert base.q_scale == pytest.approx(expected)


def test_tied_default_follows_the_family(tmp_path):
    """An old config.json leaves out a default tie_word_embeddings: Gemma's is True, Llama's False."""
    for model_type, tied in (("gemma3_text", True), ("gemma2", True), ("llama", False), ("qwen3", False)):
        (tmp_path / model_type).mkdir()
        assert config_base(tmp_path / model_type, model_type=model_type).tied == tied


def test_untied_gemma2_is_refused(tmp_path):
    with pytest.raises(BaseModelError, match="always computes the logits with the token embeddings"):
        config_base(tmp_path, model_type="gemma2", tie_word_embeddings=False)


def test_multimodal_gemma3_is_refused_by_name(tmp_path):
    match = r"model_type 'gemma3' is not supported; supported: .*gemma3_text"
    with pytest.raises(BaseModelError, match=match):
        config_base(tmp_path, model_type="gemma3", text_config={"model_type": "gemma3_text"})


class NoTensors:
    def names(self) -> list[str]:
        return []


def test_a_window_llama_cpp_ignores_is_noted(tmp_path):
    base = config_base(tmp_path, model_type="mistral", sliding_window=4096, vocab_size=10)
    _, notes = plan_model(base, NoTensors(), "f16")  # type: ignore[arg-type]
    assert any("sliding_window 4096" in n and "up to 4096 tokens" in n for n in notes)
