"""Proof in llama.cpp: the exported GGUFs give the logits transformers + PEFT give, on tiny random models.

Each check would fail on a wrong tensor name, shape, q/k permutation, alpha or scale: the tests below that
break one of them on purpose show the difference then exceeds the threshold.
"""

from __future__ import annotations

import pytest

from pipeline.export import arch as arch_module
from pipeline.export.gguf_adapter import export_adapter
from pipeline.export.merged import export_merged
from pipeline.export.peft_adapter import Adapter
from pipeline.export.verify import verify


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16", "q8_0"])
def test_adapter_matches_peft(arch, outtype, make_adapter, base_gguf, tiny_model, tmp_path):
    adapter = make_adapter(arch)
    lora = export_adapter(adapter, tiny_model(arch), tmp_path / "a.gguf", outtype).path
    report = verify(tiny_model(arch), base_gguf(arch), adapter, lora)
    assert report.passed, report.lines()
    assert report.same_tokenization  # chat template specials and the added <reasoning> tag included
    if outtype == "f32":
        assert report.max_rel < 1e-4


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


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_base_gguf_matches_transformers(arch, base_gguf, tiny_model):
    report = verify(tiny_model(arch), base_gguf(arch, "f16"))
    assert report.passed and report.same_tokenization, report.lines()


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_merged_gguf_matches_merged_pytorch(arch, make_adapter, tiny_model, tmp_path):
    adapter = make_adapter(arch)
    out = export_merged(adapter, tiny_model(arch), tmp_path / "m.gguf", "gguf", "f16").path
    report = verify(tiny_model(arch), out, adapter)
    assert report.passed, report.lines()


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
