"""`story-pipeline feedback export|stats` as a user runs them."""

from __future__ import annotations

import sqlite3

import pytest
from typer.testing import CliRunner

from bot.store import Store
from contract.store import migrations
from pipeline.cli import app

from .conftest import ALICE, read_jsonl


def _run(*args: str):
    return CliRunner().invoke(app, ["feedback", *map(str, args)])


def test_an_empty_database_writes_an_empty_file_and_says_why(db, tmp_path):
    Store(db).close()
    out = tmp_path / "kto.jsonl"
    result = _run("export", "--db", db, "--format", "kto", "-o", out)
    assert result.exit_code == 0, result.output
    assert out.read_text() == "" and "0 kto rows" in result.output
    assert "is empty: the database holds no ratings yet" in result.output


def test_export_with_filters_and_stats(bot, db, tmp_path):
    bot.write(ALICE, "The wind carried salt and ash.")
    gid = bot.generate(model="writer:latest")
    bot.rate(gid, (ALICE, 1))
    out = tmp_path / "sft.jsonl"
    result = _run(
        "export", "--db", db, "--format", "sft", "-o", out, "--model", "writer", "--since", "2020-01-01"
    )
    assert result.exit_code == 0, result.output
    assert "1 sft rows (1 positive) from 1 finished generations and 1 counted votes" in result.output
    assert read_jsonl(out)[0]["messages"][0]["content"] == bot.store.generation(gid).user_text
    result = _run("export", "--db", db, "--format", "kto", "-o", tmp_path / "kto.jsonl")
    assert "1 kto rows (1 desirable)" in result.output and "has only one kind" in result.output
    result = _run("export", "--db", db, "--format", "sft", "-o", out, "--since", "2999-01-01", "--force")
    assert "1  written before --since" in result.output and read_jsonl(out) == []
    result = _run("stats", "--db", db, "-o", tmp_path / "stats")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "stats" / "feedback-stats.md").is_file() and (
        tmp_path / "stats" / "feedback-stats.png"
    ).is_file()


def test_bad_input_is_refused_with_the_fix(db, tmp_path):
    out = tmp_path / "x.jsonl"
    result = _run("export", "--db", db, "--format", "dpo", "-o", out)
    assert result.exit_code == 2 and "no database at" in result.output and not out.exists()
    Store(db).close()
    with sqlite3.connect(db) as c:
        c.execute(f"PRAGMA user_version = {migrations.SCHEMA_VERSION + 1}")
    result = _run("stats", "--db", db, "-o", tmp_path)
    assert result.exit_code == 2 and "newer than this pipeline knows" in result.output
    result = _run("export", "--db", db, "--format", "orpo", "-o", out)
    assert result.exit_code == 2 and "orpo" in result.output
    result = _run("export", "--db", db, "--format", "sft", "-o", out, "--since", "last tuesday")
    assert result.exit_code == 2 and "is not a date" in result.output
    result = _run("export", "--db", db, "--format", "sft", "-o", out, "--min-votes", "0")
    assert result.exit_code == 2 and not out.exists()


def test_export_and_stats_read_a_postgresql_store(postgres_url, tmp_path):
    from .conftest import BOB, Bot

    store = Store(postgres_url)
    bot = Bot(store)
    bot.write(ALICE, "The wind carried salt and ash.")
    good, bad = bot.generate(), bot.generate(answer="It was all a dream.")
    bot.rate(good, (ALICE, 1), (BOB, 1))
    bot.rate(bad, (ALICE, -1))
    store.set_opt_out(BOB.id, True)
    out = tmp_path / "kto.jsonl"
    result = _run("export", "--db", postgres_url, "--format", "kto", "-o", out)
    assert result.exit_code == 0, result.output
    rows = read_jsonl(out)
    assert sorted(r["label"] for r in rows) == [False, True]
    assert len(rows) == 2  # one row per rated passage, Bob's vote left out (opted out)
    result = _run("stats", "--db", postgres_url, "-o", tmp_path / "stats")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "stats" / "feedback-stats.md").is_file()
    # The reader's transaction is read-only: the server itself refuses a write through it.
    from contract.store.engine import PgConnection

    conn = PgConnection(postgres_url)
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    with pytest.raises(Exception, match="read-only"):
        conn.execute("DELETE FROM ratings")
    conn.execute("ROLLBACK")
    conn.close()
    store.close()


def test_a_postgresql_store_that_cannot_be_read_is_refused_with_the_fix(postgres_url, tmp_path):
    out = tmp_path / "x.jsonl"
    result = _run("export", "--db", postgres_url, "--format", "sft", "-o", out)
    assert result.exit_code == 2 and "holds no story-bot tables" in result.output
    store = Store(postgres_url)
    store.conn.execute(f"UPDATE story_bot_schema SET version = {migrations.SCHEMA_VERSION + 1}")
    store.close()
    result = _run("stats", "--db", postgres_url, "-o", tmp_path)
    assert result.exit_code == 2 and "newer than this pipeline knows" in result.output
    dead = "postgresql://nobody@127.0.0.1:1/none"
    result = _run("export", "--db", dead, "--format", "sft", "-o", out)
    assert result.exit_code == 2 and "cannot connect to" in result.output and not out.exists()
