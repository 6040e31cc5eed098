"""Proof in llama.cpp: the exported GGUFs give the logits transformers + PEFT give, on tiny random models.

Each check would fail on a wrong tensor name, shape, q/k permutation, alpha or scale: the tests below that
break one of them on purpose show the difference then exceeds the threshold.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipeline.export import arch as arch_module
from pipeline.export import gguf_model
from pipeline.export.arch import load_base
from pipeline.export.gguf_adapter import export_adapter
from pipeline.export.merged import export_merged
from pipeline.export.peft_adapter import Adapter
from pipeline.export.verify import GELU_TOLERANCE, verify
from tests.export.conftest import ARCHS

# llama.cpp gives the special tokens of any model whose name says phi3 Phi-3's rstrip (llama-vocab.cpp); the
# tiny Phi-3's ChatML tokens have none, so there the text tokenizes differently in llama.cpp. The logits are
# compared on the same ids all the same.
RSTRIP_BY_NAME = {"phi3"}
ADAPTER_CASES = [(arch, "f32") for arch in ARCHS] + [
    (arch, outtype) for arch in ("qwen2", "llama") for outtype in ("f16", "bf16", "q8_0")
]


@pytest.mark.parametrize(("arch", "outtype"), ADAPTER_CASES)
def test_adapter_matches_peft(arch, outtype, make_adapter, base_gguf, tiny_model, tmp_path):
    adapter = make_adapter(arch)
    lora = export_adapter(adapter, tiny_model(arch), tmp_path / "a.gguf", outtype).path
    report = verify(tiny_model(arch), base_gguf(arch), adapter, lora)
    assert report.passed, report.lines()
    # chat template specials and the added <reasoning> tag included
    assert report.same_tokenization or arch in RSTRIP_BY_NAME
    if outtype == "f32":  # rounding only; Gemma's GELU goes through llama.cpp's F16 table
        assert report.max_rel < (GELU_TOLERANCE if load_base(tiny_model(arch)).spec.gelu else 1e-4)
        assert report.effect_miss is not None and report.effect_miss < 0.01 * report.adapter_effect


@pytest.mark.parametrize(
    ("arch", "config"),
    [
        ("llama", dict(use_rslora=True)),
        ("llama", dict(rank_pattern={"q_proj": 4}, alpha_pattern={"down_proj": 5, "k_proj": 40})),
    ],
)
def test_rslora_and_patterns_match_peft(arch, config, make_adapter, base_gguf, tiny_model, tmp_path):
    adapter = make_adapter(arch, **config)
    lora = export_adapter(adapter, tiny_model(arch), tmp_path / "a.gguf").path
    report = verify(tiny_model(arch), base_gguf(arch), adapter, lora)
    assert report.passed and report.max_rel < 1e-4, report.lines()


def test_uncorrected_rslora_alpha_fails(make_adapter, base_gguf, tiny_model, tmp_path, monkeypatch):
    """What the reference converter writes for rsLoRA (plain lora_alpha) is caught."""
    adapter = make_adapter("llama", use_rslora=True)
    monkeypatch.setattr(Adapter, "gguf_alpha", property(lambda self: float(self.config["lora_alpha"])))
    monkeypatch.setattr("pipeline.export.gguf_adapter.fold_factor", lambda m, alpha: 1.0)
    lora = export_adapter(adapter, tiny_model("llama"), tmp_path / "a.gguf").path
    assert not verify(tiny_model("llama"), base_gguf("llama"), adapter, lora).passed


def test_missing_permutation_fails(make_adapter, base_gguf, tiny_model, tmp_path, monkeypatch):
    adapter = make_adapter("llama")
    monkeypatch.setattr(arch_module.BaseModel, "permute_heads", lambda self, name: None)
    lora = export_adapter(adapter, tiny_model("llama"), tmp_path / "a.gguf").path
    report = verify(tiny_model("llama"), base_gguf("llama"), adapter, lora)
    assert not report.passed and report.max_abs > 0.25 * report.adapter_effect


def test_swapped_names_fail(make_adapter, base_gguf, tiny_model, tmp_path, monkeypatch):
    base = base_gguf("qwen2")  # made before the names are swapped: only the adapter is wrong
    real = arch_module.BaseModel.gguf_name
    swap = {"attn_q": "attn_output", "attn_output": "attn_q"}

    def swapped(self, hf_name):
        name = real(self, hf_name)
        parts = name.split(".")
        return ".".join(swap.get(p, p) for p in parts)

    monkeypatch.setattr(arch_module.BaseModel, "gguf_name", swapped)
    adapter = make_adapter("qwen2")
    lora = export_adapter(adapter, tiny_model("qwen2"), tmp_path / "a.gguf").path
    assert not verify(tiny_model("qwen2"), base, adapter, lora).passed


@pytest.mark.parametrize("arch", ARCHS)
def test_base_gguf_matches_transformers(arch, base_gguf, tiny_model):
    report = verify(tiny_model(arch), base_gguf(arch, "f16"))
    assert report.passed and (report.same_tokenization or arch in RSTRIP_BY_NAME), report.lines()


@pytest.mark.parametrize("arch", ARCHS)
def test_merged_gguf_matches_merged_pytorch(arch, make_adapter, tiny_model, tmp_path):
    adapter = make_adapter(arch)
    out = export_merged(adapter, tiny_model(arch), tmp_path / "m.gguf", "gguf", "f16").path
    report = verify(tiny_model(arch), out, adapter)
    assert report.passed, report.lines()


def _spec(model_type: str, **changes):
    """A patch that runs the family with one ArchSpec field changed."""
    changed = replace(arch_module.ARCHS[model_type], **changes)
    return lambda mp: mp.setattr(arch_module, "ARCHS", {**arch_module.ARCHS, model_type: changed})


def _drop(owner, name: str, value):
    return lambda mp: mp.setattr(owner, name, value)


# Each conversion a family needs, left out: the base GGUF then computes something else than transformers.
BROKEN = {
    "gemma2 norm offset": ("gemma2", _spec("gemma2", norm_offset=0.0)),
    "gemma2 q_proj scale": ("gemma2", _spec("gemma2", q_scale_into=None)),
    "gemma2 soft-caps": ("gemma2", _spec("gemma2", hparams=lambda base: {})),
    "gemma2 sliding window": ("gemma2", _spec("gemma2", swa=False)),
    "gemma3 q_norm scale": ("gemma3_text", _spec("gemma3_text", q_scale_into=None)),
    "gemma3 local rope base": ("gemma3_text", _drop(arch_module.BaseModel, "local_rope_theta", None)),
    "gemma3 sliding window": ("gemma3_text", _spec("gemma3_text", swa=False)),
    "phi3 longrope factors": ("phi3", _drop(gguf_model, "extra_tensors", lambda base: {})),
    "phi3 longrope attn factor": ("phi3", _drop(gguf_model, "longrope_attn_factor", lambda base: 1.0)),
    "llama3.1 rope_freqs": ("llama3.1", _drop(gguf_model, "extra_tensors", lambda base: {})),
}


@pytest.mark.parametrize("case", BROKEN)
def test_family_conversions_are_needed(case, tiny_model, tmp_path, monkeypatch):
    arch, patch = BROKEN[case]
    hf = tiny_model(arch)  # made before the patch
    patch(monkeypatch)
    out = export_merged(None, hf, tmp_path / "broken.gguf", "gguf", "f32").path
    report = verify(hf, out)
    assert not report.passed and report.max_rel > 10 * report.tolerance, report.lines()


def test_merged_dora_gguf_matches_peft(make_adapter, tiny_model, tmp_path):
    """What export-gguf refuses (DoRA) export-merged carries, as its error message promises."""
    adapter = make_adapter("qwen2", use_dora=True)
    out = export_merged(adapter, tiny_model("qwen2"), tmp_path / "m.gguf", "gguf", "f32").path
    report = verify(tiny_model("qwen2"), out, adapter)
    assert report.passed and report.max_rel < 1e-4, report.lines()


def test_tied_embeddings_base(tiny_texts, tmp_path):
    from pipeline.tiny import make_tiny_model

    hf = make_tiny_model(tmp_path / "tied", tiny_texts[:200], "qwen2", tie_word_embeddings=True)
    out = export_merged(None, hf, tmp_path / "tied.gguf", "gguf", "f32")
    assert "output.weight" not in {t for t in _names(out.path)}
    assert verify(hf, out.path).passed


def _names(path):
    import gguf

    return [t.name for t in gguf.GGUFReader(str(path)).tensors]


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_weak_adapter_is_judged_by_its_own_effect(arch, make_adapter, base_gguf, tiny_model, tmp_path):
    """A barely-trained adapter can move the logits less than an F16 base's rounding. The check compares
    the adapter's effect in llama.cpp with PyTorch's; where that effect is lost in the base's rounding the
    verdict is inconclusive, with the fix (an F32 base), and on an F32 base it passes."""
    adapter = make_adapter(arch, lora_alpha=0.002)
    lora = export_adapter(adapter, tiny_model(arch), tmp_path / "a.gguf", "f16").path
    coarse = verify(tiny_model(arch), base_gguf(arch, "f16"), adapter, lora)
    assert coarse.inconclusive and not coarse.passed, coarse.lines()
    assert "export-base" in coarse.lines()[-1] and "--outtype f32" in coarse.lines()[-1]
    fine = verify(tiny_model(arch), base_gguf(arch), adapter, lora)
    assert fine.passed and fine.base_noise < 1e-4, fine.lines()


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_gguf_chat_template_gives_llama_cpp_the_training_text(arch, base_gguf, tiny_model):
    """llama-cpp-python reads our GGUF's chat template and renders what training rendered for the turn."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from contract import chat_template, prompt

    trained = chat_template.of_folder(tiny_model(arch))
    assert trained is not None
    llm = llama_cpp.Llama(str(base_gguf(arch)), vocab_only=True, verbose=False)
    formatter = Jinja2ChatFormatter(
        llm.metadata["tokenizer.chat_template"], eos_token="", bos_token=trained.bos_token
    )
    got = formatter(messages=[{"role": "user", "content": "She ran."}]).prompt
    assert got == trained.render([{"role": "user", "content": prompt.render_prompt("She ran.")}], True)
