"""verify-quant: the metric core on known inputs, the one declaration of the quant types, the sidecar, and
the command end to end on the small real model (SmolLM2-135M) and on a tiny model with an adapter."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from contract import prompt
from pipeline.cli import app
from pipeline.export import distance
from pipeline.export.distance import Tally, compare_logits, scored_positions
from pipeline.export.quants import (
    QUANT_TYPES,
    Tolerance,
    by_file_type,
    no_looser_than_finer,
    quant_type,
    tolerance_from,
)
from tests.export.conftest import leftovers
from tests.train.helpers import sft_rows

runner = CliRunner()
ROWS = [
    prompt.training_row(
        "The storm had raged for three days. Mara watched the harbour from the lighthouse, counting the "
        "boats that had not come home.",
        "Mara waits for her brother; the calm brings him or news of him.",
        "At dawn the sea was flat and grey, and the boats came home one by one.",
    ),
]


# --- the metric core -------------------------------------------------------------------------------------


def test_kl_top1_and_nll_on_known_logits():
    ref = np.array([[0.0, 0.0], [2.0, 0.0]])
    quant = np.array([[math.log(3), 0.0], [0.0, 2.0]])  # row 0: [.75, .25]; row 1: the top token flips
    s = compare_logits(ref, quant, np.array([1, 0]))
    # KL([.5, .5] || [.75, .25]) = .5 ln(.5/.75) + .5 ln(.5/.25) = .5 ln(4/3)
    assert s.kl[0] == pytest.approx(0.5 * math.log(4 / 3), rel=1e-12)
    p = np.exp([2.0, 0.0]) / np.exp([2.0, 0.0]).sum()
    assert s.kl[1] == pytest.approx(float((p * np.log(p / p[::-1])).sum()), rel=1e-12)
    assert s.agree.tolist() == [True, False]  # argmax of a tie is the first: both rows pick token 0 in row 0
    assert s.nll_ref[0] == pytest.approx(math.log(2)) and s.nll_quant[0] == pytest.approx(math.log(4))
    assert s.nll_quant[1] == pytest.approx(-math.log(p[1]))


def test_identical_logits_are_at_distance_zero_and_shapes_must_match():
    logits = np.random.default_rng(0).normal(size=(5, 50)).astype(np.float32) * 30
    s = compare_logits(logits, logits, np.arange(5))
    assert np.all(s.kl == 0) and s.agree.all() and np.allclose(s.nll_ref, s.nll_quant)
    with pytest.raises(ValueError, match="do not match"):
        compare_logits(logits, logits[:4], np.arange(5))


def test_tally_weights_tokens_and_gives_perplexity():
    tally = Tally()
    tally.add(
        distance.TokenStats(
            np.array([0.1, 0.3]), np.array([True, False]), np.log([2.0, 2.0]), np.log([4.0, 4.0])
        )
    )
    tally.add(distance.TokenStats(np.array([0.2]), np.array([True]), np.log([2.0]), np.log([4.0])))
    d = tally.result()
    assert (d.rows, d.tokens) == (2, 3) and d.mean_kl == pytest.approx(0.2) and d.max_kl == pytest.approx(0.3)
    assert (
        d.top1 == pytest.approx(2 / 3) and d.ppl_f16 == pytest.approx(2) and d.ppl_ratio == pytest.approx(2)
    )
    with pytest.raises(distance.DistanceError, match="no answer token"):
        Tally().result()


def test_scored_positions_predict_each_answer_token_from_the_one_before():
    logit_rows, targets = scored_positions([False, False, True, True, False])
    assert targets.tolist() == [2, 3] and logit_rows.tolist() == [1, 2]


# --- the types and their tolerances ----------------------------------------------------------------------


def test_one_declaration_feeds_the_cli_and_the_quantizer():
    from pipeline.export.commands import Quant

    assert [q.value for q in Quant] == list(QUANT_TYPES)
    assert {"q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0"} <= set(QUANT_TYPES)
    for q in QUANT_TYPES.values():
        assert q.ftype.name == f"MOSTLY_{q.label}" and by_file_type(int(q.ftype)) is q
    # coarser types are allowed further from F16
    kls = [q.tolerance.mean_kl for q in QUANT_TYPES.values()]
    assert kls == sorted(kls)
    with pytest.raises(ValueError, match="use one of q8_0"):
        quant_type("q3_k")


def test_tolerance_misses_name_each_measure_and_margin_is_applied():
    tol = tolerance_from(0.01, 0.9, 1.05)
    assert tol.mean_kl == pytest.approx(0.02) and tol.top1 == pytest.approx(0.8)
    assert tol.ppl_ratio == pytest.approx(1.10)
    assert Tolerance(0.01, 0.9, 1.1).misses(0.005, 0.95, 1.0) == []
    misses = Tolerance(0.01, 0.9, 1.1).misses(0.02, 0.5, 1.2)
    assert [m.split(" ")[0] for m in misses] == ["mean", "top-1", "perplexity"]
    # a coarser type measured closer than a finer one still gets at least the finer one's tolerance
    fine, coarse = no_looser_than_finer([Tolerance(0.2, 0.8, 1.2), Tolerance(0.1, 0.9, 1.1)])
    assert fine == Tolerance(0.2, 0.8, 1.2) and coarse == fine


# --- the sidecar -----------------------------------------------------------------------------------------


def _measurement(lora: str | None, digest: str) -> distance.Measurement:
    d = distance.Distance(rows=1, tokens=10, mean_kl=0.01, max_kl=0.1, top1=0.9, ppl_f16=10, ppl_quant=10.5)
    return distance.Measurement(
        quant="m.gguf",
        reference="f16.gguf",
        lora=lora,
        judged_as="q4_k_m",
        distance=d,
        tolerance=QUANT_TYPES["q4_k_m"].tolerance,
        sha256={"quant": digest},
    )


def test_sidecar_keeps_base_and_adapter_entries_and_drops_a_stale_file(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF one")
    digest = distance.sha256(model)
    assert distance.read_sidecar(model) is None
    path = distance.write_sidecar(model, _measurement(None, digest))
    distance.write_sidecar(model, _measurement("writer.gguf", digest))
    assert path == tmp_path / "m.gguf.distance.json" and leftovers(tmp_path) == []
    doc = distance.read_sidecar(model)
    assert doc is not None and set(doc["measurements"]) == {"base", "lora:writer.gguf"}
    base = doc["measurements"]["base"]
    assert base["distance"]["ppl_ratio"] == pytest.approx(1.05) and base["passed"] is True
    model.write_bytes(b"GGUF two")  # re-exported: the figures describe the old file
    assert distance.read_sidecar(model) is None
    distance.write_sidecar(model, _measurement(None, distance.sha256(model)))
    doc = distance.read_sidecar(model)
    assert doc is not None and set(doc["measurements"]) == {"base"}


# --- end to end: the small real model --------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_files(smollm2_gguf, tmp_path_factory, tiny_texts) -> dict[str, Path]:
    """F16 (llama.cpp dequantizes the shipped Q4_1), Q8_0 and Q4_0 of it by our quantizer, and the
    tokenizer as a Hugging Face folder."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from transformers import AutoTokenizer

    from pipeline.export.gguf_model import quantize

    work = tmp_path_factory.mktemp("smollm2-quant")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize = 1, True  # MOSTLY_F16 from the Q4_1 file
    assert (
        llama_cpp.llama_model_quantize(str(smollm2_gguf).encode(), str(work / "f16.gguf").encode(), params)
        == 0
    )
    files = {"f16": work / "f16.gguf", "tok": work / "tok"}
    for name in ("q8_0", "q4_0"):
        files[name] = quantize(files["f16"], work / f"{name}.gguf", name).path
    tok = AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    tok.save_pretrained(files["tok"])
    # corpus windows past those the tolerances were measured on (benchmarks/bench_quant.py starts at 200)
    rows = sft_rows(tiny_texts, 2, start=300, context_words=30, answer_words=40)
    (work / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    files["rows"] = work / "rows.jsonl"
    return files


def _verify_quant(files, quant: Path, *extra):
    args = [
        "verify-quant",
        "--gguf",
        quant,
        "--reference",
        files["f16"],
        "--hf",
        files["tok"],
        "--data",
        files["rows"],
        *extra,
    ]
    return runner.invoke(app, [str(a) for a in args])


def test_q8_passes_and_carries_its_distance(smollm2_files, tmp_path):
    report = tmp_path / "report.json"
    result = _verify_quant(smollm2_files, smollm2_files["q8_0"], "-o", report)
    assert result.exit_code == 0, result.output
    assert "PASS: within the q8_0 tolerance" in result.output and "top-1 agreement" in result.output
    doc = distance.read_sidecar(smollm2_files["q8_0"])
    assert doc is not None
    base = doc["measurements"]["base"]
    assert base["passed"] and base["judged_as"] == "q8_0" and base["distance"]["tokens"] > 10
    assert base["data"] == str(smollm2_files["rows"]) and base["sha256"]["quant"] == doc["sha256"]
    assert 0 < base["distance"]["mean_kl"] <= QUANT_TYPES["q8_0"].tolerance.mean_kl
    assert json.loads(report.read_text())["distance"] == base["distance"]


def test_q4_judged_by_the_q8_tolerance_fails_by_name(smollm2_files, tmp_path):
    report = tmp_path / "q4.json"
    result = _verify_quant(smollm2_files, smollm2_files["q4_0"], "--as", "q8_0", "--no-sidecar", "-o", report)
    assert result.exit_code == 1, result.output
    assert "FAIL: outside the q8_0 tolerance: mean KL" in result.output
    assert not distance.sidecar_path(smollm2_files["q4_0"]).exists()
    d = json.loads(report.read_text())["distance"]  # by its own type's tolerance the same figures pass
    assert QUANT_TYPES["q4_0"].tolerance.misses(d["mean_kl"], d["top1"], d["ppl_ratio"]) == []


def test_a_quantized_reference_and_an_adapter_as_model_are_refused(smollm2_files, smollm2_gguf, tmp_path):
    args = [
        "verify-quant",
        "--gguf",
        smollm2_files["q8_0"],
        "--reference",
        smollm2_files["q4_0"],
        "--hf",
        smollm2_files["tok"],
        "--data",
        smollm2_files["rows"],
    ]
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 2 and "is quantized" in result.output and "F16" in result.output
    # the shipped Q4_1 file is of no type we quantize to: judged only by a named type's tolerance
    with pytest.raises(distance.DistanceError, match="pass --as TYPE"):
        distance.judged_type(smollm2_gguf, smollm2_files["f16"], None)
    assert distance.judged_type(smollm2_gguf, smollm2_files["f16"], "q4_0").name == "q4_0"


# --- end to end: an adapter on a quantized base (tiny model: the mechanics) -------------------------------


def test_adapter_on_the_quantized_base_is_measured_beside_the_base(
    make_adapter, base_gguf, tiny_model, tmp_path
):
    from pipeline.export.gguf_adapter import export_adapter
    from pipeline.export.gguf_model import quantize

    f16 = base_gguf("llama", "f16")
    q8 = quantize(f16, tmp_path / "q8.gguf", "q8_0").path
    lora = export_adapter(make_adapter("llama"), tiny_model("llama"), tmp_path / "writer.gguf").path
    plain = distance.measure(q8, f16, tiny_model("llama"), ROWS)
    with_lora = distance.measure(q8, f16, tiny_model("llama"), ROWS, lora=lora)
    assert with_lora.lora == "writer.gguf" and with_lora.sha256["lora"] == distance.sha256(lora)
    # the adapter changes what is compared: other distributions on both sides
    assert with_lora.distance.ppl_f16 != pytest.approx(plain.distance.ppl_f16, rel=1e-3)
    assert with_lora.distance.tokens == plain.distance.tokens > 0
    distance.write_sidecar(q8, plain)
    distance.write_sidecar(q8, with_lora)
    doc = distance.read_sidecar(q8)
    assert doc is not None and set(doc["measurements"]) == {"base", "lora:writer.gguf"}
    with pytest.raises(distance.DistanceError, match="give it as --lora|goes in --lora"):
        distance.measure(lora, f16, tiny_model("llama"), ROWS)


def test_every_declared_type_is_written_by_llama_cpp_under_its_file_type(base_gguf, tmp_path):
    """What --quantize offers, llama.cpp writes, and verify-quant reads the type back from the file."""
    from pipeline.export.gguf_model import quantize

    f16 = base_gguf("llama", "f16")
    for q in QUANT_TYPES.values():
        out = quantize(f16, tmp_path / f"{q.name}.gguf", q.name).path
        assert distance.file_type(out) == q.ftype and distance.judged_type(out, f16, None) is q
