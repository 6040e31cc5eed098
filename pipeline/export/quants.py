"""The llama.cpp quantization types an export can be written in: the one declaration the CLI's choices,
the quantizer (`gguf_model.quantize`), `verify-quant`'s verdict and the docs read.

Each type carries its tolerance: how far a file of that type may be from the F16 file it was quantized
from, on held-out answer tokens (`pipeline/export/distance.py`). The tolerances are measured, not
guessed: `python benchmarks/bench_quant.py` quantizes SmolLM2-135M-Instruct to every type, measures each
file (and a LoRA applied on it) against F16 on held-out rows, and prints the figures and the tolerance
they give (the worst measured value times MARGIN, see `tolerance_from`). To re-measure, run it and copy
its last table here.
"""

from __future__ import annotations

from dataclasses import dataclass

import gguf

F = gguf.LlamaFileType
# Headroom over the worst measured figure: other rows, other models of the family and other llama.cpp
# builds move the figures; a file one type coarser is still well outside (the benchmark prints both).
MARGIN = 2.0


@dataclass(frozen=True)
class Tolerance:
    """The most a quantized file may differ from F16 on the answer tokens of held-out rows."""

    mean_kl: float  # mean KL(F16 || quant) per answer token, nats
    top1: float  # least share of answer tokens where both files' most likely token is the same
    ppl_ratio: float  # most answer perplexity may grow: quant / F16

    def misses(self, mean_kl: float, top1: float, ppl_ratio: float) -> list[str]:
        """What a measurement exceeds, one phrase each (empty: within)."""
        out = []
        if mean_kl > self.mean_kl:
            out.append(f"mean KL {mean_kl:.4g} > {self.mean_kl:.4g}")
        if top1 < self.top1:
            out.append(f"top-1 agreement {top1:.2%} < {self.top1:.2%}")
        if ppl_ratio > self.ppl_ratio:
            out.append(f"perplexity ratio {ppl_ratio:.4f} > {self.ppl_ratio:.4f}")
        return out


@dataclass(frozen=True)
class QuantType:
    name: str  # the CLI's spelling
    ftype: F  # llama_ftype: what llama_model_quantize is asked for, and general.file_type says
    tolerance: Tolerance

    @property
    def label(self) -> str:
        """The name as llama.cpp, Ollama and GGUF file names write it (Q4_K_M)."""
        return self.name.upper()


# Measured on 2026-12-06 with `python benchmarks/bench_quant.py --rows 10 --lora writer-lora.gguf`
# (SmolLM2-135M-Instruct, F16 from the shipped Q4_1 GGUF, 10 held-out corpus rows, 552 answer tokens, the
# base alone and with a LoRA trained on it): MARGIN x the worse of the two, never tighter than a finer
# type's (q4_k_m measured 0.061 mean KL there, under q5_k_m's 0.092, and takes q5_k_m's tolerance). The
# figures are in docs/export.md; re-measure on your own base before relying on one near its edge.
QUANT_TYPES: dict[str, QuantType] = {
    q.name: q
    for q in (
        QuantType("q8_0", F.MOSTLY_Q8_0, Tolerance(mean_kl=0.0088, top1=0.913, ppl_ratio=1.022)),
        QuantType("q6_k", F.MOSTLY_Q6_K, Tolerance(mean_kl=0.0217, top1=0.855, ppl_ratio=1.043)),
        QuantType("q5_k_m", F.MOSTLY_Q5_K_M, Tolerance(mean_kl=0.183, top1=0.645, ppl_ratio=1.239)),
        QuantType("q4_k_m", F.MOSTLY_Q4_K_M, Tolerance(mean_kl=0.183, top1=0.645, ppl_ratio=1.239)),
        QuantType("q4_0", F.MOSTLY_Q4_0, Tolerance(mean_kl=0.623, top1=0.344, ppl_ratio=1.459)),
    )
}
UNQUANTIZED = {F.ALL_F32: "f32", F.MOSTLY_F16: "f16", F.MOSTLY_BF16: "bf16"}


def quant_type(name: str) -> QuantType:
    """The type by its CLI name (any case), or a ValueError naming the choices."""
    found = QUANT_TYPES.get(name.lower())
    if found is None:
        raise ValueError(f"unknown quantization {name!r}: use one of {', '.join(QUANT_TYPES)}")
    return found


def by_file_type(ftype: int) -> QuantType | None:
    """The type a GGUF's general.file_type names, if it is one of ours."""
    return next((q for q in QUANT_TYPES.values() if q.ftype == ftype), None)


def no_looser_than_finer(tolerances: list[Tolerance]) -> list[Tolerance]:
    """Tolerances ordered finest to coarsest, each widened to at least the one before: a coarser type is
    never held closer to F16 than a finer one, even where one model measures it closer (SmolLM2's Q4_K_M
    beats its Q5_K_M: both fall back to Q5_0/Q5_1 there, and Q5_0 rounds its Q4_1-born weights better)."""
    out: list[Tolerance] = []
    for t in tolerances:
        if out:
            prev = out[-1]
            t = Tolerance(
                max(t.mean_kl, prev.mean_kl), min(t.top1, prev.top1), max(t.ppl_ratio, prev.ppl_ratio)
            )
        out.append(t)
    return out


def tolerance_from(measured_kl: float, measured_top1: float, measured_ratio: float) -> Tolerance:
    """The tolerance the worst measurements give: MARGIN times the distance, on each measure."""
    return Tolerance(
        mean_kl=measured_kl * MARGIN,
        top1=max(0.0, 1 - (1 - measured_top1) * MARGIN),
        ppl_ratio=1 + max(0.0, measured_ratio - 1) * MARGIN,
    )
