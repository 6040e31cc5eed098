"""`eval judge` end to end: `eval compare` writes two models' outputs through the stand-in Ollama server,
then a scripted judge on the same server compares them in both orders (so the win rate, its interval and
the consistency are known exactly); bad inputs and a missing judge leave no file; the real small model
judges through in-process llama.cpp."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from contract import prompt
from pipeline.cli import app
from pipeline.evaluate import judge
from tests.evaluate.test_compare import story
from tests.families import writer_template

CONTEXTS = [
    "The storm had raged for three days. Mara watched the harbour from the lighthouse.",
    "Nobody in the village spoke of the house on the hill, least of all the baker.",
    "The letter arrived a week after the funeral, in her grandmother's careful hand.",
    "The train stopped in a field at midnight, and the conductor walked away into the wheat.",
]
PLAIN = "Just a story with no tags, going on and on and on."  # what `base` writes


def scripted_judge(body: dict) -> str:
    """Per context: 1 always prefers tuned (both orders agree); 2 always says A (position bias: the
    orders split); 3 answers nothing readable; 4 calls a tie. Context 1 also answers every criterion."""
    text = body["prompt"]
    if "### Continuation A:" not in text:  # the check that the judge answers at all
        return "A"
    first = text.split("### Continuation A:\n", 1)[1].split("### Continuation B:", 1)[0]
    tuned, base = ("A", "B") if PLAIN not in first else ("B", "A")
    if CONTEXTS[0] in text:
        return f"Context: {tuned}\nMotivation: {tuned}\nPacing: tie\nProse: **{base}**\nOverall: {tuned}"
    if CONTEXTS[1] in text:
        return "A"
    if CONTEXTS[2] in text:
        return "Both continuations have their merits and I would not choose."
    return "overall: a tie"


@pytest.fixture
def server(fake_ollama):
    """Two writers, tuned (our writer template) and base (a plain model), and the scripted judge."""
    fake_ollama.add_model("writer", template=writer_template())
    fake_ollama.add_model("plain", template="<|im_start|>user\n{{ .Prompt }}<|im_end|>\n")
    fake_ollama.add_model("judge", template="{{ .System }}\n{{ .Prompt }}")
    fake_ollama.script("writer", text=story)
    fake_ollama.script("plain", text=lambda body: PLAIN)
    fake_ollama.script("judge", text=scripted_judge)
    return fake_ollama


@pytest.fixture
def contexts(tmp_path):
    path = tmp_path / "contexts.jsonl"
    path.write_text("".join(json.dumps({"context": c}) + "\n" for c in CONTEXTS))
    return path


@pytest.fixture
def compared(server, contexts, tmp_path):
    """The outputs of `eval compare` for tuned and base on four contexts."""
    out = tmp_path / "cmp"
    result = run(
        "compare",
        "--model",
        "tuned=writer",
        "--model",
        "base=plain",
        "--contexts",
        contexts,
        "--host",
        server.url,
        "--workers",
        "1",
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    return out


def run(verb: str, *args):
    return CliRunner().invoke(app, ["eval", verb, *map(str, args)])


def test_judge_compares_two_models_in_both_orders(compared, server, tmp_path):
    out = tmp_path / "judged"
    result = run("judge", compared, "--judge", "judge", "--base-url", server.url, "-o", out)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["a"], summary["b"], summary["prompt_version"]) == ("tuned", "base", judge.PROMPT_VERSION)
    overall = summary["overall"]
    # item scores: 1 (tuned both orders), 0.5 (split), unread, 0.5 (tie) -> 2 of 3 judged items
    assert (overall["items"], overall["judged"], overall["win_rate"]) == (4, 3, pytest.approx(2 / 3))
    assert overall["ci95"] == pytest.approx([0.2077, 0.9385], abs=1e-4)  # Wilson, 2 of 3, z = 1.96
    assert overall["consistency"] == pytest.approx(2 / 3) and overall["split"] == 1
    assert overall["unparsed_verdicts"] == 2 and overall["unparsed"] == 1
    assert summary["first_shown_rate"] == pytest.approx(3 / 4)  # A, B on context 1; A, A on context 2
    criteria = summary["criteria"]
    assert (criteria["context"]["win_rate"], criteria["pacing"]["win_rate"]) == (1.0, 0.5)
    assert criteria["prose"]["win_rate"] == 0.0 and criteria["prose"]["judged"] == 1
    assert summary["judge_prompt"]["user"] == judge.RUBRIC

    gens = [g for g in server.calls("/api/generate") if g["model"].startswith("judge")]
    assert len(gens) == 2 * len(CONTEXTS) and all(g["options"]["temperature"] == 0 for g in gens)
    assert all(g["system"] == judge.SYSTEM and g["prompt"].count(judge.RUBRIC[:40]) == 1 for g in gens)
    verdicts = [json.loads(line) for line in (out / "verdicts.jsonl").read_text().splitlines()]
    assert [(v["order"], v["shown_a"]) for v in verdicts[:2]] == [(1, "tuned"), (2, "base")]
    assert [v["winner"] for v in verdicts] == ["tuned", "tuned", "tuned", "base", None, None, "tie", "tie"]

    table = (out / "table.md").read_text()
    assert "| Overall | 66.7% | 20.8% – 93.9% | 1 | 0 | 1 | 1 | 2 | 66.7% of 3 |" in table
    assert "| Prose | 0.0% |" in table and judge.PROMPT_VERSION in table and "Wilson" in table
    assert "75.0% of its decisive verdicts" in table
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "66.7%" in result.output and "2 verdicts could not be read" in result.output


def test_one_command_generates_then_judges(server, contexts, tmp_path):
    out = tmp_path / "judged"
    result = run(
        "judge",
        "--contexts",
        contexts,
        "--model",
        "tuned=writer",
        "--model",
        "base=plain",
        "--host",
        server.url,
        "--judge",
        "judge",
        "--base-url",
        server.url,
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["a"], summary["b"]) == ("tuned", "base")
    assert summary["overall"]["win_rate"] == pytest.approx(2 / 3) and summary["overall"]["judged"] == 3
    outputs = [json.loads(line) for line in (out / "outputs.jsonl").read_text().splitlines()]
    assert len(outputs) == 2 * len(CONTEXTS)
    assert {o["answer"] for o in outputs if o["model"] == "base"} == {PLAIN}
    assert "95% interval" in result.output
    generated = summary["settings"]["generated"]
    assert generated["models"] == ["tuned=writer", "base=plain"] and generated["contexts"] == str(contexts)


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give either `eval compare` outputs or --contexts"),
        (["--model", "tuned=writer"], "needs two --model NAME=MODEL to compare, not 1"),
        (["--model", "a=writer", "--model", "b=plain", "--backend", "vllm"], "--backend 'vllm': use one of"),
        (["--model", "tuned=writer", "--model", "base=gone"], "not on the server: base=gone"),
        (["--model", "tuned=writer", "--model", "base=plain", "--judge", "nope"], "the judge model 'nope'"),
    ],
)
def test_generating_needs_two_models_that_exist(server, contexts, tmp_path, args, message):
    out = tmp_path / "judged"
    extra = ["--contexts", contexts] if args else []
    judge_flag = [] if "--judge" in args else ["--judge", "judge"]
    result = run(
        "judge", *extra, *args, "--host", server.url, *judge_flag, "--base-url", server.url, "-o", out
    )
    assert result.exit_code == 2 and message in result.output
    assert not out.exists()
    if "nope" in args:  # the judge is asked first: no model wrote a word for nothing
        assert not [g for g in server.calls("/api/generate") if g["model"] != "nope"]


def test_a_judge_the_server_lacks_is_named_and_nothing_is_written(server, tmp_path):
    _outputs(tmp_path / "outputs.jsonl", {"tuned": CONTEXTS[:1], "base": CONTEXTS[:1]})
    out = tmp_path / "judged"
    result = run("judge", tmp_path / "outputs.jsonl", "--judge", "gone", "--base-url", server.url, "-o", out)
    assert result.exit_code == 2
    assert "the judge model 'gone' is not on" in result.output and "--judge" in result.output
    assert not out.exists()


def _outputs(path, rows_by_model: dict[str | None, list[str]]) -> None:
    rows = [
        {
            **({"model": m} if m else {}),
            "context_index": i,
            "sample": 0,
            "prompt": prompt.render_prompt(c),
            "answer": f"{m} continues: {c.split()[1]} went on.",
        }
        for m, ctxs in rows_by_model.items()
        for i, c in enumerate(ctxs)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize(
    "files, message",
    [
        ({"a.jsonl": {"tuned": CONTEXTS[:2]}, "b.jsonl": {"base": CONTEXTS[1:3]}}, "different prompts"),
        ({"a.jsonl": {"tuned": CONTEXTS[:2], "base": CONTEXTS[:1]}}, "rerun `eval compare`"),
        ({"a.jsonl": {}}, "holds no rows"),
        ({"a.jsonl": {None: CONTEXTS[:1]}}, "the outputs name no model (no 'model' field)"),
    ],
)
def test_bad_inputs_are_one_line_and_leave_nothing(tmp_path, files, message):
    for name, rows in files.items():
        _outputs(tmp_path / name, rows)
    out = tmp_path / "judged"
    result = run(
        "judge",
        *(tmp_path / n for n in files),
        "--judge",
        "judge",
        "--base-url",
        "http://127.0.0.1:9",
        "-o",
        out,
    )
    assert result.exit_code == 2 and message in result.output
    assert not out.exists()


def test_the_small_real_model_judges_in_process(tmp_path, smollm2_gguf):
    pytest.importorskip("llama_cpp")
    _outputs(tmp_path / "outputs.jsonl", {"tuned": CONTEXTS[:1], "base": CONTEXTS[:1]})
    out = tmp_path / "judged"
    result = run(
        "judge",
        tmp_path,
        "--judge",
        "smollm2",
        "--backend",
        "llama.cpp",
        "--max-tokens",
        "8",
        "--n-ctx",
        "2048",
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    overall = summary["overall"]
    assert overall["items"] == 1 and summary["settings"]["backend"] == "llama.cpp"
    assert overall["unparsed_verdicts"] + 2 * overall["both_parsed"] + overall["one_unparsed"] == 2
    assert overall["consistency"] is None or 0 <= overall["consistency"] <= 1
    verdicts = [json.loads(line) for line in (out / "verdicts.jsonl").read_text().splitlines()]
    assert len(verdicts) == 2 and all(isinstance(v["reply"], str) for v in verdicts)
    assert all(v["parsed"] == (v["overall"] is not None) for v in verdicts)
    assert "Consistency" in (out / "table.md").read_text()


def test_an_openai_compatible_judge_is_retried_past_a_busy_server(tmp_path):
    from tests.fakes.openai import FakeOpenAI, Step

    _outputs(tmp_path / "outputs.jsonl", {"tuned": CONTEXTS[:2], "base": CONTEXTS[:2]})

    def prefers_tuned(body: dict) -> str:
        user = body["messages"][1]["content"]
        return "Overall: A" if user.index("tuned continues") < user.index("base continues") else "Overall: B"

    with FakeOpenAI(reply=prefers_tuned) as server:
        server.queue(Step(status=503, retry_after=0.01))
        openai = ("--judge", "judge-model", "--backend", "openai", "--base-url", server.url)
        result = run("judge", tmp_path, *openai, "-o", tmp_path / "judged")
        assert result.exit_code == 0, result.output
        assert len(server.requests) == 1 + 4  # the refused one, then two items in two orders
        assert server.requests[-1]["messages"][0] == {"role": "system", "content": judge.SYSTEM}
        overall = json.loads((tmp_path / "judged" / "summary.json").read_text())["overall"]
        assert (overall["win_rate"], overall["consistency"], overall["a_both"]) == (1.0, 1.0, 2)

        server.queue(*[Step(status=503, retry_after=0.01)] * 2)
        out = tmp_path / "again"
        result = run("judge", tmp_path, *openai, "--retries", "1", "-o", out)
        assert result.exit_code == 2 and "503" in result.output and "(2 tries)" in result.output
        assert not out.exists()


def test_a_judge_gguf_that_is_not_there_is_named(tmp_path):
    _outputs(tmp_path / "outputs.jsonl", {"tuned": CONTEXTS[:1], "base": CONTEXTS[:1]})
    out = tmp_path / "judged"
    result = run("judge", tmp_path, "--judge", tmp_path / "gone.gguf", "--backend", "llama.cpp", "-o", out)
    assert result.exit_code == 2 and "the judge" in result.output
    assert "gone.gguf is not a file" in result.output
    assert not out.exists()
