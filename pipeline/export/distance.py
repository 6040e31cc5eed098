"""How far a quantized GGUF is from the F16 file it was quantized from, in llama.cpp (`verify-quant`).

Held-out rows in the training format are rendered and masked exactly as `eval perplexity` does
(`pipeline.evaluate.perplexity.encode`): only the answer tokens, the story continuation, are scored.
Both files (each with the same GGUF adapter applied, when one is given) evaluate the same token ids in
llama-cpp-python, one row at a time, and at every answer token we compare the two next-token
distributions: KL(F16 || quant) (what the quantized file loses of the F16 file's prediction), whether
both put the same token first, and each file's negative log-likelihood of the real next token (answer
perplexity, and its ratio quant / F16). The KV cache is F32 on both sides, so the figures are the
weights' quantization alone.

The result is kept beside the quantized file as a sidecar, `<file>.distance.json`, rather than in the
GGUF's metadata: writing metadata means rewriting the whole file, which changes its sha256 (the digest
Ollama stores its blob under and the Hub's LFS pointer) every time it is measured again, while a sidecar
is written atomically in milliseconds and names the file's sha256, so a stale one is recognised.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pipeline.export.quants import QUANT_TYPES, UNQUANTIZED, QuantType, Tolerance, by_file_type, quant_type
from plumbing import atomic

SIDECAR_SUFFIX = ".distance.json"
SCHEMA = 1


class DistanceError(ValueError):
    """Input the measurement cannot use; the message names the fix."""


# --- the metric core: pure numpy -------------------------------------------------------------------------


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities over the last axis, in float64 (KL of close distributions needs the digits)."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@dataclass
class TokenStats:
    """Per scored token: KL(ref || quant), whether the top-1 tokens agree, each side's NLL of the target."""

    kl: np.ndarray
    agree: np.ndarray
    nll_ref: np.ndarray
    nll_quant: np.ndarray


def compare_logits(ref: np.ndarray, quant: np.ndarray, targets: np.ndarray) -> TokenStats:
    """Compare two (tokens, vocab) logit matrices at the same positions, and score each on the targets."""
    if ref.shape != quant.shape or ref.shape[0] != len(targets):
        raise ValueError(f"logits {ref.shape} and {quant.shape} do not match {len(targets)} targets")
    lp, lq = log_softmax(ref), log_softmax(quant)
    kl = (np.exp(lp) * (lp - lq)).sum(axis=-1)
    rows = np.arange(len(targets))
    return TokenStats(
        kl=np.maximum(kl, 0.0),  # rounding can give -1e-17 for identical rows
        agree=ref.argmax(-1) == quant.argmax(-1),
        nll_ref=-lp[rows, targets],
        nll_quant=-lq[rows, targets],
    )


@dataclass
class Distance:
    """The summary over every scored token of every row."""

    rows: int
    tokens: int
    mean_kl: float
    max_kl: float
    top1: float
    ppl_f16: float
    ppl_quant: float

    @property
    def ppl_ratio(self) -> float:
        return self.ppl_quant / self.ppl_f16

    def misses(self, tolerance: Tolerance) -> list[str]:
        return tolerance.misses(self.mean_kl, self.top1, self.ppl_ratio)


@dataclass
class Tally:
    """Accumulates TokenStats row by row (only sums are kept, not the logits)."""

    rows: int = 0
    tokens: int = 0
    kl: float = 0.0
    max_kl: float = 0.0
    agree: int = 0
    nll_ref: float = 0.0
    nll_quant: float = 0.0

    def add(self, s: TokenStats) -> None:
        self.rows += 1
        self.tokens += len(s.kl)
        self.kl += float(s.kl.sum())
        self.max_kl = max(self.max_kl, float(s.kl.max(initial=0.0)))
        self.agree += int(s.agree.sum())
        self.nll_ref += float(s.nll_ref.sum())
        self.nll_quant += float(s.nll_quant.sum())

    def result(self) -> Distance:
        if not self.tokens:
            raise DistanceError("no answer token was scored: give rows with an answer (training format)")
        n = self.tokens
        return Distance(
            rows=self.rows,
            tokens=n,
            mean_kl=self.kl / n,
            max_kl=self.max_kl,
            top1=self.agree / n,
            ppl_f16=math.exp(self.nll_ref / n),
            ppl_quant=math.exp(self.nll_quant / n),
        )


def scored_positions(answer: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """(logit rows, target positions): token t is an answer token predicted from the logits at t - 1."""
    targets = np.array([t for t in range(1, len(answer)) if answer[t]], dtype=np.int64)
    return targets - 1, targets


# --- the files ---------------------------------------------------------------------------------------------


def file_type(path: Path) -> int:
    """A GGUF model's general.file_type (llama_ftype), read by llama.cpp from the header and vocabulary
    alone (gguf-py's reader parses every vocabulary entry in Python: seconds per file)."""
    from pipeline.export.verify import _quiet_stderr

    try:
        from llama_cpp import Llama
    except ImportError as exc:
        raise RuntimeError("measuring needs llama-cpp-python: pip install 'story-assistant[llama]'") from exc
    try:
        with _quiet_stderr():
            llm = Llama(str(path), vocab_only=True, verbose=False)
    except ValueError as exc:
        raise DistanceError(
            f"llama.cpp cannot load {path} as a model (a GGUF adapter goes in --lora; a model is written by "
            "export-base or export-merged)"
        ) from exc
    try:
        ftype = llm.metadata.get("general.file_type")
    finally:
        llm.close()
    if ftype is None:
        raise DistanceError(f"{path} has no general.file_type: write it with export-base/export-merged")
    return int(ftype)


def judged_type(quant_gguf: Path, reference: Path, judge_as: str | None) -> QuantType:
    """The type whose tolerance applies: --as, else the quantized file's own; the reference is unquantized."""
    ref_type = file_type(reference)
    if ref_type not in UNQUANTIZED:
        raise DistanceError(
            f"--reference {reference} is quantized (file type {ref_type}): give the F16 (or F32/BF16) "
            "export it was quantized from (story-pipeline export-base/export-merged without --quantize)"
        )
    own = file_type(quant_gguf)
    if judge_as is not None:
        return quant_type(judge_as)
    found = by_file_type(own)
    if found is None:
        raise DistanceError(
            f"{quant_gguf} has file type {own}, not one of "
            f"{', '.join(q.label for q in QUANT_TYPES.values())}: pass --as TYPE to judge it by that type's "
            "tolerance"
        )
    return found


@contextlib.contextmanager
def llama_model(path: Path, lora: Path | None, n_ctx: int) -> Iterator:
    """llama-cpp-python on one GGUF (with the adapter), all logits kept, F32 KV cache."""
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        raise RuntimeError("measuring needs llama-cpp-python: pip install 'story-assistant[llama]'") from exc
    from pipeline.export.verify import _quiet_stderr

    with _quiet_stderr():
        llm = Llama(
            str(path),
            lora_path=str(lora) if lora else None,
            n_ctx=n_ctx,
            n_batch=min(n_ctx, 512),
            logits_all=True,
            n_threads=min(4, os.cpu_count() or 1),
            type_k=0,
            type_v=0,
            verbose=False,
        )
    try:
        yield llm
    finally:
        llm.close()


def row_logits(llm, ids: list[int], positions: np.ndarray) -> np.ndarray:
    """The logits at the given positions after evaluating ids from an empty cache."""
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[positions], dtype=np.float32)


@dataclass
class Measurement:
    """One verify-quant run: what was measured against what, the distance, and the verdict."""

    quant: str
    reference: str
    lora: str | None
    judged_as: str
    distance: Distance
    tolerance: Tolerance
    data: str | None = None
    skipped_too_long: int = 0
    sha256: dict[str, str] = field(default_factory=dict)
    measured_at: str = ""

    @property
    def misses(self) -> list[str]:
        return self.distance.misses(self.tolerance)

    @property
    def passed(self) -> bool:
        return not self.misses

    def to_json(self) -> dict:
        out = asdict(self)
        out["distance"]["ppl_ratio"] = self.distance.ppl_ratio
        out["passed"] = self.passed
        return out


def measure(
    quant_gguf: str | Path,
    reference: str | Path,
    tokenizer_dir: str | Path,
    rows: list[dict],
    lora: str | Path | None = None,
    judge_as: str | None = None,
    max_tokens: int = 2048,
    progress: Callable[[int], None] | None = None,
) -> Measurement:
    """Measure quant_gguf (+ lora) against reference (+ lora) on the answer tokens of rows."""
    return measure_many(
        [Path(quant_gguf)], reference, tokenizer_dir, rows, lora, judge_as, max_tokens, progress
    )[0]


def measure_many(
    quants: list[Path],
    reference: str | Path,
    tokenizer_dir: str | Path,
    rows: list[dict],
    lora: str | Path | None = None,
    judge_as: str | None = None,
    max_tokens: int = 2048,
    progress: Callable[[int], None] | None = None,
) -> list[Measurement]:
    """measure() for several quantizations of one reference: the reference evaluates each row once."""
    from pipeline.evaluate import perplexity

    reference = Path(reference)
    lora = Path(lora) if lora else None
    for p in (*quants, reference, *([lora] if lora else [])):
        if not Path(p).is_file():
            raise DistanceError(f"{p} does not exist: give the GGUF file's path")
    types = [judged_type(Path(q), reference, judge_as) for q in quants]
    tokenizer = load_tokenizer(Path(tokenizer_dir))
    encoded = [perplexity.encode(tokenizer, r, n) for n, r in enumerate(rows, 1)]
    kept = [e for e in encoded if len(e.ids) <= max_tokens]
    if not kept:
        raise DistanceError(f"every row is longer than --max-tokens {max_tokens}: raise it")
    n_ctx = max(len(e.ids) for e in kept) + 8
    tallies = [Tally() for _ in quants]
    with contextlib.ExitStack() as stack:
        ref = stack.enter_context(llama_model(reference, lora, n_ctx))
        models = [stack.enter_context(llama_model(Path(q), lora, n_ctx)) for q in quants]
        for q, model in zip(quants, models, strict=True):
            check_same_model(ref, model, reference, Path(q), max(max(e.ids) for e in kept))
        for e in kept:
            positions, targets = scored_positions(e.answer)
            want = np.array(e.ids)[targets]
            ref_logits = row_logits(ref, e.ids, positions)
            for tally, model in zip(tallies, models, strict=True):
                tally.add(compare_logits(ref_logits, row_logits(model, e.ids, positions), want))
            if progress:
                progress(1)
    digests = {"reference": sha256(reference), **({"lora": sha256(lora)} if lora else {})}
    when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return [
        Measurement(
            quant=Path(q).name,
            reference=reference.name,
            lora=lora.name if lora else None,
            judged_as=t.name,
            distance=tally.result(),
            tolerance=t.tolerance,
            skipped_too_long=len(encoded) - len(kept),
            sha256={"quant": sha256(Path(q)), **digests},
            measured_at=when,
        )
        for q, t, tally in zip(quants, types, tallies, strict=True)
    ]


def load_tokenizer(folder: Path):
    """The Hugging Face tokenizer that renders and masks the rows, as `eval perplexity` loads it."""
    from transformers import AutoTokenizer

    if not (folder / "tokenizer_config.json").is_file():
        raise DistanceError(
            f"--hf {folder} holds no tokenizer (tokenizer_config.json): give the base model's Hugging Face "
            "folder, or the adapter folder when it carries the tokenizer it was trained with"
        )
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if not tok.is_fast or not getattr(tok, "chat_template", None):
        raise DistanceError(f"the tokenizer in {folder} needs to be a fast tokenizer with a chat template")
    return tok


def check_same_model(ref, quant, ref_path: Path, quant_path: Path, largest_id: int) -> None:
    """Both files must be the same model, and hold every token id the tokenizer gives."""
    n_ref, n_quant = ref.n_vocab(), quant.n_vocab()
    arch = (ref.metadata.get("general.architecture"), quant.metadata.get("general.architecture"))
    if n_ref != n_quant or arch[0] != arch[1]:
        raise DistanceError(
            f"{quant_path} ({arch[1]}, {n_quant} tokens) is not a quantization of {ref_path} ({arch[0]}, "
            f"{n_ref} tokens): give the F16 file it was quantized from as --reference"
        )
    if largest_id >= n_ref:
        raise DistanceError(
            f"the tokenizer gives token id {largest_id}, past the model's {n_ref} tokens: give --hf the "
            "folder of the model these GGUF files were exported from"
        )


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


# --- the sidecar -------------------------------------------------------------------------------------------


def sidecar_path(quant_gguf: Path) -> Path:
    return quant_gguf.with_name(quant_gguf.name + SIDECAR_SUFFIX)


def sidecar_key(m: Measurement) -> str:
    """Entries of one sidecar: the file alone ("base") and each adapter measured on it ("lora:NAME")."""
    return f"lora:{m.lora}" if m.lora else "base"


def write_sidecar(quant_gguf: Path, m: Measurement) -> Path:
    """Add (or replace) this measurement in the file's sidecar, atomically; entries for a former version
    of the file (another sha256) are dropped."""
    path = sidecar_path(quant_gguf)
    entries = {}
    old = read_sidecar(quant_gguf, digest=m.sha256["quant"])
    if old is not None:
        entries = old["measurements"]
    entries[sidecar_key(m)] = m.to_json()
    doc = {"schema": SCHEMA, "file": quant_gguf.name, "sha256": m.sha256["quant"], "measurements": entries}
    return atomic.write_text(path, json.dumps(doc, indent=2) + "\n")


def read_sidecar(quant_gguf: Path, digest: str | None = None) -> dict | None:
    """The sidecar of a GGUF, or None where it has none, cannot be read, or describes another version of
    the file (its sha256 differs from `digest`, computed here when not given)."""
    path = sidecar_path(Path(quant_gguf))
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(doc, dict)
        or doc.get("schema") != SCHEMA
        or not isinstance(doc.get("measurements"), dict)
    ):
        return None
    if doc.get("sha256") != (digest or sha256(Path(quant_gguf))):
        return None
    return doc
