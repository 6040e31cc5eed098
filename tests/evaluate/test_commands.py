"""`eval metrics` from the command line: files written, bad input named, light imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from pipeline.cli import app


def invoke(*args):
    result = CliRunner().invoke(app, ["eval", "metrics", *map(str, args)])
    return result, " ".join(result.output.split())


@pytest.fixture
def passages_file(corpus_dir, tmp_path):
    text = (corpus_dir / "pg11-alice.txt").read_text(encoding="utf-8-sig")
    rows = [{"text": text[i : i + 640], "id": i} for i in range(5000, 5000 + 640 * 12, 640)]
    rows += [{"text": ""}, {"text": "Hello"}, {"text": "Le chat dort sur la table de la cuisine ce matin."}]
    path = tmp_path / "texts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_metrics_writes_per_text_scores_and_summary(passages_file, tmp_path):
    import textstat

    result, output = invoke(passages_file, "--workers", "1", "-o", tmp_path / "m")
    assert result.exit_code == 0, result.output
    scores = [json.loads(line) for line in (tmp_path / "m" / "scores.jsonl").read_text().splitlines()]
    assert len(scores) == 15 and [s["row"] for s in scores] == list(range(1, 16))
    first = json.loads(passages_file.read_text().splitlines()[0])["text"]
    assert scores[0]["flesch_reading_ease"] == textstat.flesch_reading_ease(first)
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert summary["texts"] == 15 and summary["notes"] == {"empty": 1, "very_short": 1, "non_english": 1}
    assert summary["metrics"]["flesch_reading_ease"]["n"] == 14  # the empty text is left out
    assert 0 < summary["distinct_1_all"] < 1
    # the odd texts are said out loud, not silently averaged in
    assert "1 of 15 texts have no words" in output and "look non-English" in output


def test_metrics_on_model_outputs(tmp_path):
    rows = [
        {
            "output": "<reasoning>Plan.</reasoning><answer>" + "She ran. " * 25 + "</answer>",
            "length": "short",
        },
        {"output": "Untagged text that rambles on for a while.", "length": 40},
    ]
    path = tmp_path / "outputs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result, _ = invoke(path, "--field", "output", "--outputs", "--workers", "1", "-o", tmp_path / "m")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert summary["metrics"]["parsed"]["mean"] == 0.5
    assert summary["metrics"]["length_ratio"]["mean"] == pytest.approx((50 / 100 + 8 / 40) / 2)


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        (
            '{"text": "fine"}\n{"txt": "typo"}\n',
            [],
            "row 2 has no 'text' field (it has: txt): pick one with --field",
        ),
        ('{"text": "fine"}\nnot json\n', [], "line 2 is not valid JSON"),
        ('{"text": 3}\n', [], "'text' is a int, not text"),
        ("\n\n", [], "holds no rows"),
        ('{"text": "x", "length": "huge"}\n', ["--outputs"], "row 1: unknown length 'huge'"),
    ],
)
def test_bad_input_is_named(tmp_path, content, extra, message):
    path = tmp_path / "in.jsonl"
    path.write_text(content)
    result, output = invoke(path, *extra, "-o", tmp_path / "m")
    assert result.exit_code == 2
    assert message in output
    assert not (tmp_path / "m").exists()  # nothing half-written


def test_missing_file(tmp_path):
    result, output = invoke(tmp_path / "nope.jsonl", "-o", tmp_path / "m")
    assert result.exit_code == 2 and "does not exist" in output


def test_cli_help_imports_nothing_heavy():
    code = (
        "import sys; from pipeline.cli import app; "
        "heavy = [m for m in ('torch', 'textstat', 'textblob', 'matplotlib', 'transformers', 'nltk') "
        "if m in sys.modules]; print(heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
