"""`eval compare` against the stand-in Ollama server: same contexts, fixed seeds, missing and failing
models."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from contract import prompt, serving
from pipeline.cli import app
from pipeline.evaluate import report
from tests.fakes.ollama import refused_url
from tests.families import qwen, writer_template

CONTEXTS = [
    {
        "context": "The storm had raged for three days. Mara watched the harbour from the lighthouse.",
        "continuation": "At dawn the sea was flat and grey, and the boats came home one by one.",
    },
    {
        "context": "Nobody in the village spoke of the house on the hill, least of all the baker.",
        "continuation": "So when the baker climbed the hill one morning, everyone watched him go.",
    },
    {
        "context": "The letter arrived a week after the funeral, in her grandmother's careful hand.",
        "length": "short",
        "continuation": "She read it twice before she understood that it was meant for someone else.",
    },
]


def story(body: dict) -> str:
    """A deterministic 'model': the seed picks the words, so equal seeds give equal outputs."""
    seed = body["options"]["seed"]
    words = " ".join(["the", "sea", "was", "calm", "and", "she", "walked", "home", "slowly"][seed % 3 :] * 4)
    return f"<reasoning>Plan {seed}: keep the mood.</reasoning><answer>{words.capitalize()}.</answer>"


@pytest.fixture
def contexts_file(tmp_path):
    path = tmp_path / "contexts.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in CONTEXTS), encoding="utf-8")
    return path


@pytest.fixture
def server(fake_ollama):
    fake_ollama.add_model("writer", template=writer_template())
    fake_ollama.add_model(
        "plain", template="<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n"
    )
    fake_ollama.script("writer", text=story)
    fake_ollama.script("plain", text=lambda body: "Just a story with no tags, going on and on and on.")
    return fake_ollama


def run(*args):
    return CliRunner().invoke(app, ["eval", "compare", *map(str, args)])


def test_compare_writes_table_json_png_and_outputs(server, contexts_file, tmp_path):
    out = tmp_path / "cmp"
    result = run(
        "--model",
        "tuned=writer",
        "--model",
        "base=plain",
        "--contexts",
        contexts_file,
        "--host",
        server.url,
        "--samples",
        "2",
        "--seed",
        "7",
        "--reference-field",
        "continuation",
        "--workers",
        "1",
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "outputs.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * len(CONTEXTS) * 2
    tuned = [r for r in rows if r["model"] == "tuned"]
    assert [r["seed"] for r in tuned] == [7, 8] * len(CONTEXTS)
    assert all(r["parsed"] for r in tuned) and not any(r["parsed"] for r in rows if r["model"] == "base")
    assert tuned[0]["answer"].startswith("Sea was calm and")  # seed 7 picks the words from "sea" on
    assert tuned[0]["reasoning"] == "Plan 7: keep the mood."
    # the third context asked for a short continuation: its budget and its length ratio follow
    gens = server.calls("/api/generate")
    assert {g["options"]["num_predict"] for g in gens} == {
        serving.num_predict(None),
        serving.num_predict("short"),
    }
    short = [r for r in tuned if r["context_index"] == 2]
    assert all(r["asked_words"] == 100 and r["length_ratio"] == r["words"] / 100 for r in short)

    summary = json.loads((out / "summary.json").read_text())
    cols = summary["columns"]
    assert cols["tuned"]["status"] == "ok" and cols["tuned"]["metrics"]["parsed"]["mean"] == 1.0
    assert cols["base"]["metrics"]["parsed"]["mean"] == 0.0
    assert cols["reference"]["metrics"]["words"]["n"] == len(CONTEXTS)
    table = (out / "table.md").read_text()
    header = table.splitlines()[0]
    assert header == "| Metric | tuned | base | reference |"
    assert "| Parsed into reasoning + answer ↑ | **1.00** | 0.00 | — |" in table
    assert "Flesch Reading Ease" in table and "Gunning Fog" in table and "Subjectivity" in table
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_model_gets_the_writer_prompt_exactly_once(server, contexts_file, tmp_path):
    result = run(
        "--model",
        "tuned=writer",
        "--model",
        "base=plain",
        "--contexts",
        contexts_file,
        "--host",
        server.url,
        "--limit",
        "2",
        "--workers",
        "1",
        "-o",
        tmp_path / "o",
    )
    assert result.exit_code == 0, result.output
    gens = server.calls("/api/generate")
    by_model = {m: [g for g in gens if g["model"].startswith(m)] for m in ("writer", "plain")}
    # the writer model gets the chat text training rendered, raw; the plain one the writer prompt as its
    # user turn, through its own template
    qwen25 = qwen()
    assert [(g["prompt"], g["raw"]) for g in by_model["writer"]] == [
        (qwen25.prompt(prompt.render_prompt(c["context"])), True) for c in CONTEXTS[:2]
    ]
    assert [g["prompt"] for g in by_model["plain"]] == [
        prompt.render_prompt(c["context"]) for c in CONTEXTS[:2]
    ]
    assert all(r.count(prompt.TASK_LINE) == 1 for r in server.rendered)


def test_same_seed_same_outputs_across_runs(server, contexts_file, tmp_path):
    for name in ("a", "b"):
        result = run(
            "--model",
            "tuned=writer",
            "--contexts",
            contexts_file,
            "--host",
            server.url,
            "--seed",
            "3",
            "--workers",
            "1",
            "-o",
            tmp_path / name,
        )
        assert result.exit_code == 0, result.output
    a, b = ((tmp_path / n / "outputs.jsonl").read_text() for n in ("a", "b"))
    assert a == b


def test_a_model_failing_part_way_is_reported_beside_the_others(server, contexts_file, tmp_path):
    calls = []

    def fails_on_second_call(body):
        calls.append(body)
        if len(calls) >= 2:
            server.scripts["flaky:latest"].error_after = 2  # this stream breaks after two chunks
        return story(body)

    server.add_model("flaky", template=writer_template())
    server.script("flaky", text=fails_on_second_call)
    out = tmp_path / "o"
    result = run(
        "--model",
        "tuned=writer",
        "--model",
        "flaky=flaky",
        "--contexts",
        contexts_file,
        "--host",
        server.url,
        "--workers",
        "1",
        "-o",
        out,
    )
    assert result.exit_code == 1, result.output
    cols = json.loads((out / "summary.json").read_text())["columns"]
    assert cols["tuned"]["status"] == "ok" and cols["tuned"]["outputs"] == len(CONTEXTS)
    assert cols["flaky"]["status"] == "failed" and cols["flaky"]["outputs"] == 1
    assert "failed after 1 of 3 outputs" in cols["flaky"]["note"]
    table = (out / "table.md").read_text()
    assert "| Status | ok | **failed** |" in table and "failed after 1 of 3" in table
    # only complete columns compete: flaky's one output is never bolded over tuned
    assert "| Parsed into reasoning + answer ↑ | 1.00 | 1.00 |" in table


def test_a_model_the_server_lacks_is_named_before_any_output_and_nothing_is_written(
    server, contexts_file, tmp_path
):
    out = tmp_path / "o"
    result = run(
        "--model",
        "tuned=writer",
        "--model",
        "gone=no-such-model",
        "--contexts",
        contexts_file,
        "--host",
        server.url,
        "-o",
        out,
    )
    assert result.exit_code == 2, result.output
    assert "gone=no-such-model" in result.output and "pull or publish it" in result.output
    assert not out.exists() and server.calls("/api/generate") == []  # asked before any output


def test_unreachable_server_is_a_clear_error(contexts_file, tmp_path):
    result = run("--model", "a=writer", "--contexts", contexts_file, "--host", refused_url(), "-o", tmp_path)
    assert result.exit_code == 2
    assert "cannot reach Ollama" in result.output and "--host" in result.output


@pytest.mark.parametrize(
    ("rows", "extra", "message"),
    [
        ([{"text": "x"}], [], "has no 'context' field"),
        ([{"context": "   "}], [], "context 1: the context is empty"),
        ([{"context": "A story."}], ["--length", "huge"], "unknown length 'huge'"),
        ([{"context": "A story."}], ["--model", "a=b"], "given twice"),
    ],
)
def test_bad_input_is_named(server, tmp_path, rows, extra, message):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run(
        "--model", "a=writer", *extra, "--contexts", path, "--host", server.url, "-o", tmp_path / "o"
    )
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_best_per_metric_rules():
    def col(label, means, status="ok"):
        return report.Column(label, {k: {"mean": v, "n": 3} for k, v in means.items()}, status)

    cols = [
        col("a", {"gunning_fog": 8.0, "length_ratio": 1.3, "distinct_1": 0.5, "polarity": 0.2}),
        col("b", {"gunning_fog": 9.0, "length_ratio": 0.9, "distinct_1": 0.5, "polarity": 0.1}),
        col("c", {"gunning_fog": 1.0, "length_ratio": 1.0, "distinct_1": 0.9}, status="failed"),
    ]
    rows = {r.key: r for r in report.ROWS}
    assert report.best_columns(cols, rows["gunning_fog"]) == {"a"}  # lower is better; c is incomplete
    assert report.best_columns(cols, rows["length_ratio"]) == {"b"}  # closest to 1
    assert report.best_columns(cols, rows["distinct_1"]) == {"a", "b"}  # ties share the bold
    assert report.best_columns(cols, rows["polarity"]) == set()  # tone has no best


def test_outputs_stop_where_the_bot_stops_them(fake_ollama, contexts_file, tmp_path):
    # A model that writes on past its answer: the bot stops it at `</answer>` (and the template's turn
    # end) and puts the stripped stop back; compare must judge the same output, not the run-on text.
    fake_ollama.add_model("runon", template=writer_template())
    fake_ollama.script("runon", text=lambda body: "<reasoning>P.</reasoning><answer>Done.</answer> And more.")
    out = tmp_path / "cmp"
    result = run("--model", "x=runon", "--contexts", contexts_file, "--host", fake_ollama.url, "-o", out)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "outputs.jsonl").read_text().splitlines()]
    assert {r["output"] for r in rows} == {"<reasoning>P.</reasoning><answer>Done.</answer>"}
    stops = fake_ollama.calls("/api/generate")[0]["options"]["stop"]
    assert stops[0] == prompt.ANSWER_CLOSE and set(serving.served_template(writer_template()).stops) <= set(
        stops
    )
