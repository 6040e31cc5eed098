"""Bad input to every `story-pipeline` verb, as a new user would type it: one clear line naming the
problem and the fix, the right exit code, no traceback, and not a byte written or changed.

Each case runs the real CLI (typer's CliRunner on the app) in a folder of prepared inputs and compares
the whole folder before and after.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.store import Store
from pipeline.cli import app

TEXT_ROW = {"text": "The harbour was quiet. Mara watched the boats come home one by one."}
CONTEXT_ROW = {"context": "The harbour was quiet.", "continuation": "Mara watched the boats."}


@pytest.fixture
def world(tmp_path, monkeypatch) -> Path:
    """A working folder: inputs of each kind, an existing output of each kind, a file and a folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "texts.jsonl").write_text(json.dumps(TEXT_ROW) + "\n")
    (tmp_path / "contexts.jsonl").write_text(json.dumps(CONTEXT_ROW) + "\n")
    (tmp_path / "binary.jsonl").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "book.txt").write_text("It was a dark night. The wind rose. " * 40)
    (tmp_path / "afile").write_text("not a folder\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "exists.jsonl").write_text('{"old": true}\n')
    (tmp_path / "exists.Modelfile").write_text("FROM old\n")
    (tmp_path / "done").mkdir()
    for name in ("scores.jsonl", "summary.json", "outputs.jsonl", "feedback-stats.md"):
        (tmp_path / "done" / name).write_text("old\n")
    Store(tmp_path / "bot.db").close()
    return tmp_path


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes (None for a folder): what a run must leave as it was."""
    return {
        str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
        if "-wal" not in p.name and "-shm" not in p.name
    }


def refused(world: Path, argv: list[str], message: str, code: int = 1) -> str:
    before = tree(world)
    result = CliRunner().invoke(app, argv)
    text = " ".join(result.output.split())
    assert result.exit_code == code, result.output
    assert message in text, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, AssertionError)
    assert tree(world) == before, "the run wrote or changed files"
    return text


TEACHER = ["--teacher", "t", "--base-url", "http://127.0.0.1:9"]
FEEDBACK = ["feedback", "export", "--db", "bot.db", "--format", "sft"]

# (verb and arguments with OUT where the output goes, what the output is: file or folder)
OUTPUTS = [
    (["data", "gutenberg", "book.txt", "-o", "OUT"], "file"),
    (["data", "writing-prompts", "--source", "adir", "-o", "OUT"], "file"),
    (["reason", "texts.jsonl", "-o", "OUT", *TEACHER], "file"),
    (["distill", "texts.jsonl", "-o", "OUT", *TEACHER], "file"),
    (["modelfile", "--from", "qwen2.5:7b", "-o", "OUT"], "file"),
    ([*FEEDBACK, "-o", "OUT"], "file"),
    (["feedback", "stats", "--db", "bot.db", "-o", "OUT"], "folder"),
    (["eval", "metrics", "texts.jsonl", "-o", "OUT"], "folder"),
    (["eval", "compare", "--model", "a=x", "--contexts", "contexts.jsonl", "-o", "OUT"], "folder"),
    (["eval", "judge", "texts.jsonl", "--judge", "j", "-o", "OUT"], "folder"),
    (["train", "--base", "adir", "--data", "texts.jsonl", "-o", "OUT", "--no-qlora"], "folder"),
    (["models", "tiny", "--books", "adir", "-o", "OUT"], "folder"),
]


def _with(argv: list[str], out: str) -> list[str]:
    return [out if a == "OUT" else a for a in argv]


@pytest.mark.parametrize(("argv", "kind"), OUTPUTS, ids=[" ".join(a[:2]) for a, _ in OUTPUTS])
def test_an_output_of_the_wrong_kind(world, argv, kind):
    if kind == "file":
        refused(world, _with(argv, "adir"), "adir is a folder: the output is a file, give its path")
    else:
        refused(world, _with(argv, "afile"), "afile is a file: the output is a folder", 1)


@pytest.mark.parametrize(("argv", "kind"), OUTPUTS, ids=[" ".join(a[:2]) for a, _ in OUTPUTS])
def test_an_output_under_a_file(world, argv, kind):
    refused(world, _with(argv, "afile/out"), "afile/out lies under afile, which is a file, not a folder")


EXISTING = [
    (["data", "gutenberg", "book.txt", "-o", "exists.jsonl"], "exists.jsonl already exists: pass --force"),
    (["data", "writing-prompts", "--source", "adir", "-o", "exists.jsonl"], "exists.jsonl already exists"),
    (["reason", "texts.jsonl", "-o", "exists.jsonl", *TEACHER], "exists.jsonl already exists: pass --force"),
    (["distill", "texts.jsonl", "-o", "exists.jsonl", *TEACHER], "exists.jsonl already exists: pass --force"),
    (
        ["modelfile", "--from", "qwen2.5:7b", "-o", "exists.Modelfile"],
        "exists.Modelfile already exists: pass --force",
    ),
    ([*FEEDBACK, "-o", "exists.jsonl"], "exists.jsonl already exists: pass --force"),
    (["feedback", "stats", "--db", "bot.db", "-o", "done"], "feedback-stats.md already exists: pass --force"),
    (["eval", "metrics", "texts.jsonl", "-o", "done"], "scores.jsonl already exists: pass --force"),
    (
        ["eval", "compare", "--model", "a=x", "--contexts", "contexts.jsonl", "-o", "done"],
        "outputs.jsonl already exists",
    ),
    (
        ["eval", "judge", "texts.jsonl", "--judge", "j", "-o", "done"],
        "summary.json already exists: pass --force",
    ),
    (["models", "tiny", "--books", "adir", "-o", "done"], "done already exists: pass --force"),
]


@pytest.mark.parametrize(("argv", "message"), EXISTING, ids=[" ".join(a[:2]) for a, _ in EXISTING])
def test_an_existing_output_needs_force(world, argv, message):
    refused(world, argv, message)


def test_export_refuses_an_existing_output_and_names_force(world):
    refused(
        world,
        ["export-gguf", "adir", "--base", "adir", "-o", "exists.jsonl"],
        "pass --force to replace it",
        2,
    )


NUMBERS = [
    (["train", "--base", "adir", "--data", "texts.jsonl", "-o", "new", "--lr", "-1"], "--lr"),
    (["train", "--base", "adir", "--data", "texts.jsonl", "-o", "new", "--epochs", "0"], "--epochs"),
    (["train", "--base", "adir", "--data", "texts.jsonl", "-o", "new", "--max-steps", "-3"], "--max-steps"),
    (["train", "--base", "adir", "--data", "texts.jsonl", "-o", "new", "--max-steps", "0"], "--max-steps"),
    (["train", "--base", "adir", "--data", "texts.jsonl", "-o", "new", "--rank", "0"], "--rank"),
    (["train", "--base", "adir", "--data", "texts.jsonl", "-o", "new", "--dropout", "1"], "--dropout"),
    (["reason", "texts.jsonl", "-o", "new.jsonl", *TEACHER, "--concurrency", "0"], "--concurrency"),
    (["reason", "texts.jsonl", "-o", "new.jsonl", *TEACHER, "--concurrency", "100000"], "--concurrency"),
    (["reason", "texts.jsonl", "-o", "new.jsonl", *TEACHER, "--retries", "-1"], "--retries"),
    (["distill", "texts.jsonl", "-o", "new.jsonl", *TEACHER, "--concurrency", "0"], "--concurrency"),
    (["distill", "texts.jsonl", "-o", "new.jsonl", *TEACHER, "--timeout", "0"], "--timeout"),
    (["eval", "metrics", "texts.jsonl", "-o", "new", "--window", "0"], "--window"),
    (["eval", "metrics", "texts.jsonl", "-o", "new", "--window", "-5"], "--window"),
    (["eval", "metrics", "texts.jsonl", "-o", "new", "--workers", "0"], "--workers"),
    (
        [
            "eval",
            "compare",
            "--model",
            "a=x",
            "--contexts",
            "contexts.jsonl",
            "-o",
            "new",
            "--temperature",
            "-3",
        ],
        "--temperature",
    ),
    (
        ["eval", "compare", "--model", "a=x", "--contexts", "contexts.jsonl", "-o", "new", "--limit", "0"],
        "--limit",
    ),
    (["eval", "perplexity", "--base", "adir", "--data", "texts.jsonl", "--batch-size", "0"], "--batch-size"),
    (["eval", "judge", "texts.jsonl", "--judge", "j", "-o", "new", "--max-tokens", "0"], "--max-tokens"),
    (["eval", "judge", "texts.jsonl", "--judge", "j", "-o", "new", "--temperature", "-1"], "--temperature"),
    (["modelfile", "--from", "qwen2.5:7b", "-o", "new.Modelfile", "--num-ctx", "999999999999"], "--num-ctx"),
    (["modelfile", "--from", "qwen2.5:7b", "-o", "new.Modelfile", "--num-ctx", "0"], "--num-ctx"),
    ([*FEEDBACK, "-o", "new.jsonl", "--min-votes", "100000000000000000000"], "--min-votes"),
    ([*FEEDBACK, "-o", "new.jsonl", "--min-votes", "0"], "--min-votes"),
    (["data", "writing-prompts", "--source", "adir", "-o", "new.jsonl", "--val-ratio", "2"], "--val-ratio"),
    (["data", "gutenberg", "book.txt", "-o", "new.jsonl", "--val-ratio", "1"], "--val-ratio"),
    (["data", "gutenberg", "book.txt", "-o", "new.jsonl", "--context-sentences", "0"], "--context-sentences"),
    (["publish", "--modelfile", "exists.Modelfile", "--name", "Bad Name!!"], "--name"),
    (["verify-gguf", "--hf", "adir", "--gguf", "afile", "--tolerance", "0"], "--tolerance"),
]


@pytest.mark.parametrize(("argv", "flag"), NUMBERS, ids=[f"{a[0]} {' '.join(a[-2:])}" for a, _ in NUMBERS])
def test_a_value_out_of_range_is_a_usage_error(world, argv, flag):
    refused(world, argv, f"Invalid value for '{flag}'", 2)


@pytest.mark.parametrize(
    ("verb", "shown"),
    [
        (["train"], "x>0"),  # --lr, --epochs
        (["train"], "x!=0"),  # --max-steps
        (["reason"], "1<=x<=64"),
        (["distill"], "x>=0"),
        (["eval", "metrics"], "x>=1"),
        (["eval", "compare"], "0<=x<=100"),
        (["modelfile"], "4<=x<=1048576"),
        (["feedback", "export"], "1<=x<=1000000"),
        (["data", "writing-prompts"], "x<1"),
    ],
)
def test_the_ranges_are_in_the_help(verb, shown):
    result = CliRunner().invoke(app, [*verb, "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0 and shown in result.output, result.output


# --- the rows of the issue, one by one ---------------------------------------------------------------
def test_binary_input_is_named(world):
    refused(world, ["eval", "metrics", "binary.jsonl", "-o", "new"], "binary.jsonl is not UTF-8 text", 2)
    refused(
        world, ["reason", "binary.jsonl", "-o", "new.jsonl", *TEACHER], "binary.jsonl is not UTF-8 text", 2
    )


def test_a_folder_is_not_reported_as_missing(world):
    text = refused(world, ["eval", "metrics", "adir", "-o", "new"], "adir is a folder, not a file", 2)
    assert "does not exist" not in text
    refused(world, ["reason", "adir", "-o", "new.jsonl", *TEACHER], "adir is a folder, not a file", 2)


def test_a_missing_local_folder_is_not_a_hub_puzzle(world):
    text = refused(
        world,
        ["data", "writing-prompts", "--source", "./gone", "-o", "new.jsonl"],
        "./gone does not exist",
        2,
    )
    assert "Repo id" not in text
    argv = ["train", "--base", "./gone", "--data", "texts.jsonl", "-o", "new", "--no-qlora"]
    assert "Repo id" not in refused(world, argv, "--base ./gone does not exist", 2)


def test_the_reference_field_error_names_its_own_flag(world):
    argv = [
        "eval",
        "compare",
        "--model",
        "a=x",
        "--contexts",
        "contexts.jsonl",
        "-o",
        "new",
        "--reference-field",
        "human",
    ]
    text = refused(world, argv, "pick one with --reference-field", 2)
    assert "with --field" not in text


def test_an_unknown_method_is_said_once(world):
    argv = ["train", "--base", "adir", "--data", "texts.jsonl", "-o", "new", "--method", "ppo"]
    text = refused(world, argv, "--method must be one of sft, dpo, kto, not 'ppo'", 2)
    assert "SFT adapter" not in text


def test_a_run_that_cannot_reach_its_teacher_leaves_no_journal_or_folder(world):
    (world / "chunks.jsonl").write_text(json.dumps({**CONTEXT_ROW, "split": "train"}) + "\n")
    argv = ["reason", "chunks.jsonl", "-o", "out/train.jsonl", *TEACHER, "--retries", "0"]
    refused(world, argv, "cannot reach Ollama at http://127.0.0.1:9", 2)
    assert not (world / "out").exists()


def test_train_target_modules_are_checked_against_the_base(world, tiny_model):
    argv = [
        "train",
        "--base",
        str(tiny_model("qwen2")),
        "--data",
        "texts.jsonl",
        "-o",
        "new",
        "--no-qlora",
        "--target-modules",
        "q_proj,foo_proj",
    ]
    text = refused(world, argv, "--target-modules foo_proj: ", 2)
    assert "has no such linear layer; its layers are" in text and "q_proj" in text


@pytest.mark.parametrize("data", ["binary.jsonl", "adir", "texts.jsonl"])
def test_train_on_bad_data_leaves_no_output_folder(world, tiny_model, data):
    argv = ["train", "--base", str(tiny_model("qwen2")), "--data", data, "-o", "new", "--no-qlora"]
    message = {
        "binary.jsonl": "is not UTF-8 text",
        "adir": "adir is a folder",
        "texts.jsonl": "no usable SFT rows",
    }
    refused(world, argv, message[data], 2)


def test_a_database_that_is_not_sqlite_is_refused_by_feedback(world):
    (world / "other.db").write_bytes(b"not a database at all" * 10)
    refused(
        world, ["feedback", "export", "--db", "other.db", "--format", "sft", "-o", "new.jsonl"], "other.db", 2
    )
    refused(
        world,
        ["feedback", "export", "--db", "adir", "--format", "sft", "-o", "new.jsonl"],
        "adir is a folder",
        2,
    )


# --- the boundary itself -----------------------------------------------------------------------------
def test_an_unexpected_os_error_is_one_line_and_debug_shows_the_traceback(world, monkeypatch):
    from pipeline.evaluate import records

    def broken(*a, **k):
        raise PermissionError(13, "Permission denied", "/somewhere/locked.jsonl")

    monkeypatch.setattr(records, "read_jsonl", broken)
    refused(
        world, ["eval", "metrics", "texts.jsonl", "-o", "new"], "/somewhere/locked.jsonl: permission denied"
    )
    result = CliRunner().invoke(app, ["--debug", "eval", "metrics", "texts.jsonl", "-o", "new"])
    assert isinstance(result.exception, PermissionError)  # raised on: a traceback, with --debug only


def test_a_sqlite_error_is_one_line(world, monkeypatch):
    from pipeline.feedback import snapshot

    def broken(path):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(snapshot, "read", broken)
    refused(world, [*FEEDBACK, "-o", "new.jsonl"], "SQLite: database is locked")


def test_a_bug_is_one_line_that_points_at_debug(world, monkeypatch):
    from pipeline.evaluate import records

    monkeypatch.setattr(records, "read_jsonl", lambda *a: 1 / 0)
    refused(world, ["eval", "metrics", "texts.jsonl", "-o", "new"], "unexpected ZeroDivisionError")
    assert "story-pipeline --debug" in " ".join(
        CliRunner().invoke(app, ["eval", "metrics", "texts.jsonl", "-o", "new"]).output.split()
    )


def test_an_output_folder_without_write_permission(world, monkeypatch):
    locked = world / "locked"
    locked.mkdir()
    real = os.access
    # as a user without write permission sees it (root, which runs these tests in CI, may write anywhere)
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == Path("locked") else real(p, mode))
    refused(world, ["data", "gutenberg", "book.txt", "-o", "locked/out.jsonl"], "cannot write in locked")


def test_a_run_with_nothing_to_write_keeps_the_old_output_even_with_force(world):
    wp = world / "wp"
    wp.mkdir()
    (wp / "train.wp_source").write_text("[ WP ] A door opens .\n")
    (wp / "train.wp_target").write_text("Too short a story .\n")
    argv = ["data", "writing-prompts", "--source", "wp", "-o", "exists.jsonl", "--force"]
    refused(world, argv, "no pair of 1 read passed the filters", 2)


@pytest.mark.parametrize(
    "text",
    [
        'FROM x\nTEMPLATE """abc\n',
        "FROM x\nPARAMETER num_ctx\n",
        "FROM x\nPARAMETER\n",
        "FROM x\nFROM",
        'FROM x\nSYSTEM """a\n',
        "FROM x\nMESSAGE bob hi\n",
        "FROM x\nPARAMETER num_ctx abc\r\n",
    ],
)
def test_modelfile_check_names_lines_the_file_has(world, text):
    (world / "two.Modelfile").write_text(text, newline="")
    result = CliRunner().invoke(app, ["modelfile", "check", "two.Modelfile"])
    assert result.exit_code == 1 and "error" in result.output
    lines = [int(m) for m in re.findall(r"two\.Modelfile:(\d+)", result.output)]
    assert lines and max(lines) <= 2, result.output
    assert "unexpected a line end" not in result.output and ":0:" not in result.output


def test_a_config_file_obeys_the_same_ranges(world):
    (world / "run.toml").write_text("lr = -1\nepochs = 0\n")
    argv = ["train", "--config", "run.toml", "--base", "adir", "--data", "texts.jsonl", "-o", "new"]
    text = refused(world, argv, "--epochs 0 is not in the valid range x>0", 2)
    assert "--lr -1 is not in the valid range x>0 and x<=1" in text


def test_an_existing_teacher_output_with_its_journal_is_resumed_without_force(world):
    from pipeline.data.gutenberg import text_key

    (world / "chunks.jsonl").write_text(json.dumps({**CONTEXT_ROW, "split": "train"}) + "\n")
    row = {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}
    key = text_key(CONTEXT_ROW["context"], CONTEXT_ROW["continuation"])
    (world / "train.jsonl").write_text("{}\n")
    (world / "train.jsonl.journal").write_text(
        json.dumps({"key": key, "id": "1", "split": "train", "row": row}) + "\n"
    )
    result = CliRunner().invoke(app, ["reason", "chunks.jsonl", "-o", "train.jsonl", *TEACHER])
    assert result.exit_code == 0, result.output  # every row is in the journal: the teacher is not asked
    assert json.loads((world / "train.jsonl").read_text()) == row
