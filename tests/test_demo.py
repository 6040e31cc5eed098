"""`story-demo --quick`: the whole chain in one command, on this CPU (about 2.5 minutes on 2
cores; deselect with `-m 'not demo'`), run as docs/getting-started.md writes it (its first block marked
tested). The teacher is the real SmolLM2 through the local engine, the student a tiny random model; the
report's figures must be the run's own files."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from demo import panel
from tests.docs.blocks import REPO, blocks

pytestmark = [pytest.mark.demo, pytest.mark.timeout(480), pytest.mark.usefixtures("smollm2_gguf")]
pytest.importorskip("llama_cpp")
pytest.importorskip("peft")


def _the_page_line() -> list[str]:
    """The getting-started page's `story-demo` line, the first block it marks as tested."""
    first = next(b for b in blocks(REPO / "docs" / "getting-started.md") if b.tested)
    (line,) = first.commands()
    argv = shlex.split(line)
    assert argv[0] == "story-demo" and "--quick" in argv, line
    return argv[1:]


def test_the_quick_demo_runs_the_whole_chain_and_reports_its_own_figures(tmp_path, monkeypatch):
    from demo.cli import app
    from engines.local_engine import LocalModel

    args = [*_the_page_line(), "--samples", "2"]  # more than --quick's 1: the flag reaches the panel
    monkeypatch.chdir(tmp_path)  # the page's paths are relative to where it runs
    out = tmp_path / Path(args[args.index("-o") + 1])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output[-3000:]
    report = (out / "report.md").read_text(encoding="utf-8")
    for part in (
        "## The steps",
        "## The teacher",
        "## Held-out perplexity",
        "against the human reference",
        "## Sample continuations",
        "## The console session",
        "## The panel of simulated writers",
        "## The same with a 7B on a GPU and Ollama",
        "ollama create writer",
    ):
        assert part in report, part
    # Every step is a verb that ran in-process, and each left its file.
    for name in (
        "chunks.jsonl",
        "data/train.jsonl",
        "data/val.jsonl",
        "adapter/adapter_config.json",
        "adapter/loss.png",
        "eval/perplexity.json",
        "writer-lora.gguf",
        "base-f16.gguf",
        "writer-q4.gguf",
        "Writer.Modelfile",
        "eval/compare/chart.png",
        "eval/compare/table.md",
        "story-bot.db",
        "feedback/kto.jsonl",
        "feedback/dpo.jsonl",
        "feedback/preference.jsonl",
        "report.json",
    ):
        assert (out / name).is_file(), name
    # The figures are the files' own: perplexity and the comparison table.
    ppl = json.loads((out / "eval" / "perplexity.json").read_text())
    assert f"{ppl['adapter']['answer']['perplexity']:.3f}" in report
    assert (out / "eval" / "compare" / "table.md").read_text(encoding="utf-8") in report
    summary = json.loads((out / "eval" / "compare" / "summary.json").read_text())
    assert summary["columns"]["tuned"]["status"] == "ok" and summary["columns"]["base"]["status"] == "ok"
    for metric in ("flesch_reading_ease", "gunning_fog", "entropy", "polarity", "subjectivity"):
        assert any(metric in k for k in summary["columns"]["tuned"]["metrics"]), metric
    # The tuned GGUF carries our writer template, so the local engine sends it the training text raw.
    model = LocalModel(out / "writer-q4.gguf", n_ctx=512)
    try:
        assert model.ours and model.build_request("It rained.").raw
    finally:
        model.close()
    # The console drove the bot core: passages written, rated, in the database the export read.
    assert re.search(r"> /rate [+-]1", report) and "(passage 2 by the model" in report
    steps = re.findall(r"^\| (\d+) \| ", report, re.M)
    assert len(steps) >= 14
    # report.json holds the same figures for programs: perplexities, steps, the writers' actions.
    facts = json.loads((out / "report.json").read_text())
    assert facts["held_out_perplexity"]["tuned"] == ppl["adapter"]["answer"]
    assert len(facts["steps"]) >= 14 and all(f"| {st['name']} |" in report for st in facts["steps"])
    # One story: two takes rated, then take/keep/edit/erase; only after an erasure, the takes asked for
    # in its place are rated too (up to panel.RETRIES).
    actions = facts["loop"]["actions"]
    ratings = actions.pop("rating")
    assert set(actions) <= {"take", "keep", "edit", "erase", "no second take"}
    assert ratings <= 2 + (panel.RETRIES if "erase" in actions else 0)
    assert facts["sizes"]["samples"] == 2 and facts["panel"]["held_out"]["tuned"]["n"] == 2 * 2  # 2 contexts
    loop = facts["loop"]
    assert loop["preference_ran"] == (loop["preference_skipped_because"] is None)
    if loop["preference_ran"]:  # the preference model against SFT, slot by slot, and what it read
        vs = loop["preference_vs_sft"]
        assert vs["slots"] == 4 and vs["wins"] + vs["losses"] <= 4 and 0 < vs["p_one_sided"] <= 1
        assert sum(loop["preference_trained_on"].values()) == loop["feedback"]["rows"]
        assert f"on the same {vs['slots']} output slots" in report
    else:
        assert loop["preference_vs_sft"] is None and loop["preference_trained_on"] == {}


def test_the_full_demo_trains_in_bf16_only_where_the_cpu_multiplies_it_natively(monkeypatch):
    from demo import chain
    from pipeline.train import base

    for native, full, quick in ((True, "bf16", "auto"), (False, "auto", "auto")):
        monkeypatch.setattr(base, "detect_hardware", lambda n=native: base.Hardware("cpu", "CPU", n))
        assert (chain._precision(chain.FULL), chain._precision(chain.QUICK)) == (full, quick)
    monkeypatch.setattr(base, "detect_hardware", lambda: base.Hardware("cuda", "H100", True))
    assert chain._precision(chain.FULL) == "auto"  # train's own choice on a GPU
