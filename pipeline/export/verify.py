"""Proof that a GGUF export computes what the PyTorch model computes: logits in llama.cpp vs transformers.

The same token ids go through llama.cpp (llama-cpp-python: the base GGUF plus the adapter GGUF, or a
merged GGUF) and through transformers + PEFT (the adapter applied, or merged for a merged GGUF). The
report gives the largest absolute difference, that difference relative to the largest reference logit,
and how far the adapter itself moves the logits: an export with a wrong name, permutation, alpha or
scale differs by about as much as the adapter's own effect, a right one by rounding only.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Relative tolerance per weight type of the GGUF side, measured on the tiny test models with the KV cache in
# F32 (F32 agrees to ~1e-6; for 16-bit and Q8_0 weights llama.cpp also rounds the activations it multiplies).
TOLERANCES = {"F32": 1e-4, "F16": 2e-2, "BF16": 8e-2, "Q8_0": 1.5e-1}
# llama.cpp's CPU GELU rounds its input and result through an F16 lookup table (ggml-cpu/vec.h,
# GGML_GELU_FP16), so on the GELU families (Gemma) even an F32 file agrees only to a few 1e-4.
GELU_TOLERANCE = 5e-3
# A structural error (name, permutation, alpha, scale) misses a large part of the adapter's effect; rounding
# stays a small fraction of it.
EFFECT_FRACTION = 0.25
SAMPLE_CONTEXT = "The lighthouse keeper counted the ships. Her brother had not come home, and the storm"


@dataclass
class VerifyReport:
    tokens: int
    max_abs: float
    max_rel: float
    tolerance: float
    adapter_effect: float | None  # max |logits with adapter - logits of the base| in PyTorch
    same_tokenization: bool
    top1_agreement: float
    # How far llama.cpp's adapter effect is from PyTorch's: max |(L_a - L_base) - (T_a - T_base)| when the
    # base GGUF can be run alone (the base's own rounding cancels out), else max |L - T|.
    effect_miss: float | None = None
    base_noise: float | None = None  # max |L_base - T_base|: what the base GGUF's own rounding accounts for

    @property
    def inconclusive(self) -> bool:
        """The adapter's effect is too small to tell from the base's rounding: judge it on an F32 base."""
        return (
            not self.passed
            and self.adapter_effect is not None
            and self.base_noise is not None
            and self.adapter_effect < 4 * self.base_noise
        )

    @property
    def passed(self) -> bool:
        effect_ok = (
            self.adapter_effect is None or (self.effect_miss or 0.0) < EFFECT_FRACTION * self.adapter_effect
        )
        return self.max_rel <= self.tolerance and effect_ok

    def lines(self) -> list[str]:
        out = [
            f"tokens compared: {self.tokens}, same tokenization in llama.cpp: {self.same_tokenization}",
            f"max |llama.cpp - PyTorch| = {self.max_abs:.3g}  relative = {self.max_rel:.3g}  "
            f"(tolerance {self.tolerance:g})  top-1 agreement {self.top1_agreement:.0%}",
        ]
        if self.adapter_effect is not None:
            miss = (self.effect_miss or 0.0) / self.adapter_effect
            out.append(
                f"the adapter moves the logits by up to {self.adapter_effect:.3g}; llama.cpp misses that "
                f"effect by {miss:.2%} (at most {EFFECT_FRACTION:.0%})"
            )
        if self.inconclusive:
            out.append(
                "INCONCLUSIVE: that effect is within 4x of the base GGUF's own rounding "
                f"({self.base_noise:.3g}); verify against an F32 base: "
                "story-pipeline export-base BASE --outtype f32 -o base-f32.gguf"
            )
        else:
            out.append("PASS" if self.passed else "FAIL")
        return out


def sample_text(hf_dir: Path) -> str:
    """A writer prompt in the model's chat template, plus the first target tag: special and added tokens."""
    from transformers import AutoTokenizer

    from contract.prompt import render_prompt

    tok = AutoTokenizer.from_pretrained(hf_dir)
    prompt = render_prompt(SAMPLE_CONTEXT)
    if tok.chat_template:
        messages = [{"role": "user", "content": prompt}]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert isinstance(text, str)  # tokenize=False gives the text, not ids
        prompt = text
    return prompt + "<reasoning>She"


def torch_logits(
    hf_dir: Path, adapter_dir: Path | None, ids: list[int], merge: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits of the PyTorch model (float32) and, with an adapter, of the base alone."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    x = torch.tensor([ids])
    with torch.no_grad():
        base = model(x).logits[0].numpy()
        if adapter_dir is None:
            return base, None
        from peft import PeftModel

        peft_model = PeftModel.from_pretrained(model, adapter_dir)
        if merge:
            peft_model = peft_model.merge_and_unload()
        return peft_model(x).logits[0].numpy(), base


def gguf_weight_type(path: Path) -> str:
    """The type of the GGUF's big matrices; the least precise one decides the tolerance."""
    import gguf

    kinds = {t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors if len(t.shape) > 1}
    unknown = kinds - set(TOLERANCES)
    if unknown:
        return sorted(unknown)[0]
    return max(kinds, key=list(TOLERANCES).index)


@contextlib.contextmanager
def _quiet_stderr():
    """llama.cpp logs straight to fd 2; keep it for errors only."""
    saved = os.dup(2)
    with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def llama_logits(
    model_gguf: Path, lora_gguf: Path | None, ids: list[int], text: str
) -> tuple[np.ndarray, list[int]]:
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        raise RuntimeError(
            "verification needs llama-cpp-python: pip install 'story-assistant[llama]'"
        ) from exc
    with _quiet_stderr():
        llm = Llama(
            str(model_gguf),
            lora_path=str(lora_gguf) if lora_gguf else None,
            n_ctx=max(64, len(ids) + 8),
            n_batch=max(64, len(ids)),
            logits_all=True,
            n_threads=min(4, os.cpu_count() or 1),
            type_k=0,  # F32 KV cache: the default F16 cache would add its own rounding to the comparison
            type_v=0,
            verbose=False,
        )
    try:
        theirs = llm.tokenize(text.encode(), add_bos=False, special=True)
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32), theirs
    finally:
        llm.close()


def _gelu(hf_dir: Path) -> bool:
    """Whether the model's MLP is GELU (a family we export); other models are judged as before."""
    from pipeline.export.arch import BaseModelError, load_base

    try:
        return load_base(hf_dir).spec.gelu
    except BaseModelError:
        return False


def verify(
    hf_dir: str | Path,
    model_gguf: str | Path,
    adapter_dir: str | Path | None = None,
    lora_gguf: str | Path | None = None,
    text: str | None = None,
    tolerance: float | None = None,
    max_tokens: int = 256,
) -> VerifyReport:
    """Compare llama.cpp on model_gguf (+ lora_gguf) with PyTorch on hf_dir (+ adapter_dir)."""
    from pipeline.export.gguf_vocab import hf_tokenizer

    hf_dir, model_gguf = Path(hf_dir), Path(model_gguf)
    text = text or sample_text(hf_dir)
    ids = hf_tokenizer(hf_dir).encode(text, add_special_tokens=False).ids  # what transformers gives
    ids = ids[:max_tokens]
    merge = adapter_dir is not None and lora_gguf is None
    ref, base = torch_logits(hf_dir, Path(adapter_dir) if adapter_dir else None, ids, merge)
    got, theirs = llama_logits(model_gguf, Path(lora_gguf) if lora_gguf else None, ids, text)
    # The base alone in llama.cpp too, so a small adapter's effect is not judged against the base's rounding.
    got_base = llama_logits(model_gguf, None, ids, text)[0] if lora_gguf else None
    kinds = [gguf_weight_type(model_gguf)] + ([gguf_weight_type(Path(lora_gguf))] if lora_gguf else [])
    if tolerance is None and not set(kinds) <= set(TOLERANCES):
        raise ValueError(
            f"no built-in tolerance for {', '.join(sorted(set(kinds) - set(TOLERANCES)))} weights: "
            "verify the F16 file, or give --tolerance"
        )
    floor = GELU_TOLERANCE if _gelu(hf_dir) else 0.0
    tol = tolerance if tolerance is not None else max(floor, *(TOLERANCES[k] for k in kinds))
    diff = np.abs(got - ref)
    effect_miss = None
    if base is not None:
        effect_miss = (
            float(np.abs((got - got_base) - (ref - base)).max())
            if got_base is not None
            else float(diff.max())
        )
    return VerifyReport(
        tokens=len(ids),
        max_abs=float(diff.max()),
        max_rel=float(diff.max() / np.abs(ref).max()),
        tolerance=tol,
        adapter_effect=float(np.abs(ref - base).max()) if base is not None else None,
        same_tokenization=theirs[: len(ids)] == ids,
        top1_agreement=float((got.argmax(-1) == ref.argmax(-1)).mean()),
        effect_miss=effect_miss,
        base_noise=float(np.abs(got_base - base).max()) if got_base is not None else None,
    )
