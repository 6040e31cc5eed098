import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from contract import prompt as P
from pipeline.cli import app
from pipeline.data import teacher
from tests.fakes.ollama import FakeOllama
from tests.fakes.openai import FakeOpenAI, Step

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
REASONING = (
    "Gregor wants to be useful again, yet his sister fears what he has become. She will hesitate at the "
    "door, then decide to feed him, and the plot should move toward a quiet, painful routine."
)
STORY_WORDS = " ".join(f"word{i}" for i in range(60))


def make_chunks(path: Path, n: int, poison: set[int] = frozenset()) -> list[dict]:
    records = []
    for i in range(n):
        cont = f"POISON {i}." if i in poison else f"Then the door opened for the {i}th time and she came in."
        records.append(
            {
                "id": f"book:{i}",
                "key": f"k{i:03d}",
                "book": "book",
                "position": i,
                "context": f"Chapter text number {i}. She waited by the window.",
                "continuation": cont,
                "split": "validation" if i % 4 == 3 else "train",
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def reason_reply(body: dict) -> str:
    user = body["prompt"] if "prompt" in body else body["messages"][-1]["content"]  # Ollama or OpenAI
    if "POISON" in user:
        return "<reasoning>leaky</reasoning><answer>oops</answer>"
    return REASONING


def cli(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def fast(*extra: str) -> list[str]:
    return ["--backoff", "0.01", *extra]


# --- reply checks ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "reply, error",
    [
        ("", "empty"),
        ("   \n ", "empty"),
        ("<think>hmm</think>", "empty"),
        ("<think>still thinking about it", "unfinished"),
        ("Too short to use.", "too short"),
        (REASONING + " <answer>", "tags leak"),
        (REASONING + " Then the door opened for the 7th time and she came in.", "copies"),
        (REASONING + " WHAT HAPPENS NEXT shows it.", "instructions"),
    ],
)
def test_bad_reasoning_is_refused(reply, error):
    with pytest.raises(teacher.BadReply, match=error):
        teacher.clean_reasoning(reply, "Then the door opened for the 7th time and she came in.")


def test_reasoning_is_tidied():
    cont = "Something else happens."
    assert teacher.clean_reasoning(f"<think>x</think>\n<reasoning>{REASONING}</reasoning>", cont) == REASONING
    assert teacher.clean_reasoning(f"Here is the reasoning:\n\n{REASONING}", cont) == REASONING


def test_val_path_names():
    assert teacher.val_path_for(Path("out/train.jsonl")) == Path("out/val.jsonl")
    assert teacher.val_path_for(Path("out/cra-train.jsonl")) == Path("out/cra-val.jsonl")
    assert teacher.val_path_for(Path("rows.jsonl")) == Path("rows.val.jsonl")


# --- reason ---------------------------------------------------------------------------------------
def test_reason_end_to_end_with_ollama(tmp_path, corpus_dir, fake_ollama):
    chunks, out = tmp_path / "chunks.jsonl", tmp_path / "out" / "train.jsonl"
    code, output = cli(
        "data",
        "gutenberg",
        corpus_dir / "pg5200-metamorphosis.txt",
        corpus_dir / "pg11-alice.txt",
        "-o",
        chunks,
        "--context-sentences",
        "60",
        "--continuation-sentences",
        "15",
        "--val-ratio",
        "0.5",
    )
    assert code == 0, output
    fake_ollama.add_model("teacher")
    fake_ollama.script("teacher", text=REASONING)
    code, output = cli(
        "reason",
        chunks,
        "-o",
        out,
        "--teacher",
        "teacher",
        "--base-url",
        fake_ollama.url,
        "--concurrency",
        "3",
    )
    assert code == 0, output
    records = rows(chunks)
    train, val = rows(out), rows(tmp_path / "out" / "val.jsonl")
    assert len(train) == sum(r["split"] == "train" for r in records) and val
    expected = [
        P.training_row(r["context"], REASONING, r["continuation"]) for r in records if r["split"] == "train"
    ]
    assert train == expected
    calls = fake_ollama.calls("/api/generate")
    assert len(calls) == len(records)
    # Requests run concurrently, so the first record's request is found by its content, not its place;
    # a plain teacher: its system turn and the user turn go through its own template, not raw.
    first = [c for c in calls if records[0]["continuation"] in c["prompt"]]
    assert len(first) == 1 and first[0]["system"] and not first[0]["raw"]
    assert fake_ollama.max_in_flight <= 3
    assert "tokens:" in output and "0 failed" in output
    import datasets

    ds = datasets.load_dataset(
        "json", data_files={"train": str(out), "validation": str(out.with_name("val.jsonl"))}
    )
    assert ds["train"].column_names == ["messages"] and len(ds["validation"]) == len(val)


def test_reason_openai_retries_then_records_failures_then_resumes(tmp_path, monkeypatch):
    chunks, out = tmp_path / "chunks.jsonl", tmp_path / "train.jsonl"
    records = make_chunks(chunks, 8, poison={5})
    monkeypatch.setenv("TEACHER_KEY", "sk-test")
    with FakeOpenAI(reply=reason_reply, api_key="sk-test") as server:
        server.queue(
            Step(status=429, retry_after=0),
            Step(status=503),
            Step(raw="not json at all"),
            Step(text="<answer>garbage</answer>"),
        )
        code, output = cli(
            "reason",
            chunks,
            "-o",
            out,
            "--teacher",
            "t",
            "--backend",
            "openai",
            "--base-url",
            server.url,
            "--api-key-env",
            "TEACHER_KEY",
            "--retries",
            "2",
            *fast(),
        )
        assert code == 1, output
        assert "1 item(s) failed" in output and "run the same command again" in output
        logged = rows(tmp_path / "train.failed.jsonl")  # every item with a failed try, and its replies
        failed = [f for f in logged if f["status"] == "failed"]
        assert [f["id"] for f in failed] == ["book:5"] and "tags leak" in failed[0]["error"]
        assert {f["status"] for f in logged} == {"failed", "recovered"}  # the scripted faults, retried
        assert failed[0]["attempts"] == 3
        assert len(rows(out)) == 5 and len(rows(tmp_path / "val.jsonl")) == 2  # poison (a train item) missing
        assert all("POISON" not in json.dumps(r) for r in rows(out))
        sent = len(server.requests)
        assert sent == 8 + 4 + 2  # every item, the 4 scripted faults, 2 retries of the poison item

        server.reply = lambda body: REASONING  # the teacher behaves now: the re-run retries only the failure
        code, output = cli(
            "reason",
            chunks,
            "-o",
            out,
            "--teacher",
            "t",
            "--backend",
            "openai",
            "--base-url",
            server.url,
            "--api-key-env",
            "TEACHER_KEY",
            *fast(),
        )
        assert code == 0, output
        assert len(server.requests) == sent + 1 and "7 from an earlier run" in output
    train = rows(out)
    assert len(train) == 6 and len({json.dumps(r) for r in train}) == 6
    assert train[5]["messages"][1]["content"] == P.render_target(REASONING, records[6]["continuation"])
    history = [h for h in rows(tmp_path / "train.failed.jsonl") if h["status"] == "failed"]
    assert [h["id"] for h in history] == ["book:5"]  # the first run's failure is kept, with its replies
    assert len(history[0]["tries"]) == 3 and all(
        t["reply"] and "tags leak" in t["reason"] for t in history[0]["tries"]
    )


def test_timeouts_and_rate_limits_are_retried(tmp_path, fake_ollama):
    chunks, out = tmp_path / "chunks.jsonl", tmp_path / "train.jsonl"
    make_chunks(chunks, 3)
    fake_ollama.add_model("teacher")
    fake_ollama.script("teacher", text=REASONING, http_status=429, http_status_times=2)
    code, output = cli(
        "reason", chunks, "-o", out, "--teacher", "teacher", "--base-url", fake_ollama.url, *fast()
    )
    assert code == 0 and "2 retries" in output, output
    with FakeOpenAI(reply=REASONING) as server:
        server.queue(Step(delay=1.0))
        code, output = cli(
            "reason",
            chunks,
            "-o",
            tmp_path / "b" / "train.jsonl",
            "--teacher",
            "t",
            "--backend",
            "openai",
            "--base-url",
            server.url,
            "--timeout",
            "0.3",
            "--concurrency",
            "1",
            *fast(),
        )
    assert code == 0 and "1 retries" in output, output
    assert len(rows(tmp_path / "b" / "train.jsonl")) == 3


def test_concurrency_is_bounded(tmp_path):
    chunks = tmp_path / "chunks.jsonl"
    make_chunks(chunks, 9)
    with FakeOpenAI(reply=REASONING) as server:
        server.queue(*[Step(delay=0.2) for _ in range(9)])
        code, output = cli(
            "reason",
            chunks,
            "-o",
            tmp_path / "train.jsonl",
            "--teacher",
            "t",
            "--backend",
            "openai",
            "--base-url",
            server.url,
            "--concurrency",
            "3",
        )
        assert code == 0, output
        assert server.max_in_flight == 3


def test_fatal_errors_stop_the_run_clearly(tmp_path, fake_ollama, monkeypatch):
    chunks, out = tmp_path / "chunks.jsonl", tmp_path / "train.jsonl"
    make_chunks(chunks, 2)
    code, output = cli("reason", chunks, "-o", out, "--teacher", "missing", "--base-url", fake_ollama.url)
    assert code == 2 and "ollama pull missing" in output
    from tests.fakes.ollama import refused_url

    code, output = cli(
        "reason", chunks, "-o", out, "--teacher", "t", "--base-url", refused_url(), "--retries", "1", *fast()
    )
    assert code == 2 and "is the teacher server running" in output
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    code, output = cli("reason", chunks, "-o", out, "--teacher", "t", "--backend", "openai")
    assert code == 2 and "set OPENAI_API_KEY" in output
    monkeypatch.setenv("OPENAI_API_KEY", "wrong")
    with FakeOpenAI(api_key="right") as server:
        code, output = cli(
            "reason", chunks, "-o", out, "--teacher", "t", "--backend", "openai", "--base-url", server.url
        )
    assert code == 2 and "401" in output and "check OPENAI_API_KEY" in output
    assert not out.exists()
    (tmp_path / "bad.jsonl").write_text('{"context": "x"}\n')
    code, output = cli("reason", tmp_path / "bad.jsonl", "-o", out, "--teacher", "t")
    assert code == 2 and "lacks context/continuation" in output


def test_killed_run_resumes_without_duplicates(tmp_path):
    chunks, out = tmp_path / "chunks.jsonl", tmp_path / "train.jsonl"
    records = make_chunks(chunks, 10)
    journal = teacher.journal_path_for(out)
    with FakeOllama() as server:
        server.add_model("teacher")
        server.script("teacher", text=REASONING, first_token_delay=0.25)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline",
                "reason",
                str(chunks),
                "-o",
                str(out),
                "--teacher",
                "teacher",
                "--base-url",
                server.url,
                "--concurrency",
                "1",
            ],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not journal.exists() or journal.read_text().count("\n") < 3):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        done = journal.read_text().count("\n")
        assert 3 <= done < 10 and not out.exists()
        with open(journal, "a") as f:
            f.write('{"key": "k009", "id": "book:9", "spl')  # a line cut short by the crash
        before = len(server.calls("/api/generate"))
        server.script("teacher", text=REASONING)
        code, output = cli("reason", chunks, "-o", out, "--teacher", "teacher", "--base-url", server.url)
        assert code == 0, output
        assert len(server.calls("/api/generate")) - before == 10 - done
    train, val = rows(out), rows(tmp_path / "val.jsonl")
    assert len(train) + len(val) == 10
    assert [r["messages"][1]["content"] for r in train] == [
        P.render_target(REASONING, r["continuation"]) for r in records if r["split"] == "train"
    ]
    keys = [json.loads(line)["key"] for line in journal.read_text().splitlines()]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 10


# --- distill --------------------------------------------------------------------------------------
def test_distill_writes_stories_for_prompts(tmp_path, fake_ollama):
    pairs, out = tmp_path / "pairs.jsonl", tmp_path / "train.jsonl"
    prompts = ["A dragon counts sheep.", "A lighthouse keeper keeps a secret.", "Bad teacher day."]
    recs = [
        {
            "id": f"p{i}",
            "prompt_id": f"id{i % 3}",
            "prompt": prompts[i % 3],
            "story": "human story",
            "split": "validation" if i % 3 == 1 else "train",
        }
        for i in range(5)
    ]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in recs))

    def story(body: dict) -> str:
        user = body["prompt"] if "prompt" in body else body["messages"][-1]["content"]
        if "Bad teacher" in user:
            return "I would rather not write that."
        return f"<reasoning>{REASONING}</reasoning>\n<answer>{STORY_WORDS}</answer>"

    fake_ollama.add_model("teacher")
    fake_ollama.script("teacher", text=story)
    code, output = cli(
        "distill",
        pairs,
        "-o",
        out,
        "--teacher",
        "teacher",
        "--base-url",
        fake_ollama.url,
        "--length",
        "short",
        "--retries",
        "1",
        *fast(),
    )
    assert code == 1 and "1 item(s) failed" in output, output
    assert (
        len(fake_ollama.calls("/api/generate")) == 2 + 2
    )  # one per distinct prompt; the bad one tried twice
    train, val = rows(out), rows(tmp_path / "val.jsonl")
    assert train == [P.training_row(prompts[0], REASONING, STORY_WORDS, length="short")]
    assert val == [P.training_row(prompts[1], REASONING, STORY_WORDS, length="short")]
    # Requests run concurrently: pick the one for the first prompt, whatever order they arrived in.
    sent = next(c for c in fake_ollama.calls("/api/generate") if prompts[0] in c["prompt"])
    assert sent["prompt"] == P.render_prompt(
        prompts[0], length="short"
    )  # the teacher sees the student's prompt
    assert P.REASONING_OPEN in sent["system"] and "about 100 words" in sent["system"]
    assert "malformed reply: no_tags" in rows(tmp_path / "train.failed.jsonl")[0]["error"]


def test_a_trial_run_takes_each_split_in_its_share(tmp_path):
    """--limit N on chunks whose first records are all validation still writes training rows."""
    chunks, out = tmp_path / "chunks.jsonl", tmp_path / "train.jsonl"
    records = make_chunks(chunks, 12)
    for r in records:  # the validation book first, as the data step may order them
        r["split"] = "validation" if r["position"] < 8 else "train"
    chunks.write_text("".join(json.dumps(r) + "\n" for r in records))
    with FakeOpenAI(reply=reason_reply) as server:
        code, output = cli(
            "reason",
            chunks,
            "-o",
            out,
            "--teacher",
            "t",
            "--backend",
            "openai",
            "--base-url",
            server.url,
            "--limit",
            "3",
        )
    assert code == 0, output
    assert len(rows(out)) == 1 and len(rows(tmp_path / "val.jsonl")) == 2  # 4 of 12 train: 1 of 3
    assert P.split_prompt(rows(out)[0]["messages"][0]["content"])[0] == records[8]["context"]
