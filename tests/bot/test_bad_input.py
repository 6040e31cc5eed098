"""Bad input to `story-bot`: a database that is not the bot's, a Discord that cannot be reached, a
server that is not Ollama, an empty prompt. One line each, the right exit code, and files left as they
were, byte for byte."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.store import SCHEMA_VERSION, Store, schema_version
from bot.store.opening import APPLICATION_ID, NotTheBotsDatabase
from tests.fakes.ollama import refused_url


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("STORY_BOT_CONFIG", "STORY_BOT_DB", "STORY_BOT_DISCORD_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _foreign(path, app_id: int = 0) -> bytes:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute("INSERT INTO invoices (total) VALUES (12.5)")
    conn.execute("PRAGMA user_version = 3")
    if app_id:
        conn.execute(f"PRAGMA application_id = {app_id}")
    conn.commit()
    conn.close()
    return path.read_bytes()


def _csv(path) -> bytes:
    path.write_bytes(b"name,total\nrent,12.5\n")
    return path.read_bytes()


def _corrupt(path) -> bytes:
    Store(path).close()
    data = bytearray(path.read_bytes())
    data[100:1100] = b"\xa5" * 1000  # the schema table on page 1, past the header
    path.write_bytes(bytes(data))
    return bytes(data)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_foreign, "is another application's database (tables invoices)"),
        (lambda p: _foreign(p, 0x4D594150), "is another application's database (application id 0x4d594150)"),
        (_csv, "is not a SQLite database"),
        (_corrupt, "is damaged or not a database SQLite can read"),
    ],
    ids=["foreign-tables", "foreign-id", "not-sqlite", "corrupt"],
)
def test_a_file_that_is_not_the_bots_is_refused_and_left_untouched(env, make, message):
    path = env / "other-app.sqlite"
    before = make(path)
    with pytest.raises(NotTheBotsDatabase, match=re.escape(message)):
        Store(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in env.iterdir()) == ["other-app.sqlite"]  # no -wal, no -journal


def test_a_folder_or_a_path_under_a_file_is_said_plainly(env):
    (env / "db").mkdir()
    with pytest.raises(NotTheBotsDatabase, match="db is a folder, not a database file"):
        Store(env / "db")
    (env / "afile").write_text("x")
    with pytest.raises(NotTheBotsDatabase, match="lies under .*afile, which is a file"):
        Store(env / "afile" / "story.db")
    assert list((env / "db").iterdir()) == [] and (env / "afile").read_text() == "x"


def test_a_read_only_database_is_said_plainly(env):
    path = env / "story.db"
    Store(path).close()
    before = path.read_bytes()
    path.chmod(0o444)
    try:
        with pytest.raises(NotTheBotsDatabase, match="is read-only: the bot writes to its database"):
            Store(path)
    finally:
        path.chmod(0o644)
    assert path.read_bytes() == before


def test_a_new_database_is_marked_as_the_bots(env):
    Store(env / "new.db").close()
    conn = sqlite3.connect(env / "new.db")
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    conn.close()
    Store(env / "new.db").close()  # and opens again


def test_a_bot_database_from_before_the_application_id_keeps_working(env):
    path = env / "old.db"
    store = Store(path)
    store.conn.execute("PRAGMA application_id = 0")  # as every database made before the id was
    store.close()
    again = Store(path)
    assert schema_version(again.conn) == SCHEMA_VERSION
    assert again.conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    again.close()


def test_console_refuses_another_apps_database_and_writes_nothing(env, ollama_server):
    path = env / "other-app.sqlite"
    before = _foreign(path)
    argv = ["console", "--db", str(path), "--model", "writer", "--host", ollama_server.url]
    result = CliRunner().invoke(app, argv, input="")
    assert result.exit_code == 1, result.output
    assert "story-bot: " in result.output and "another application's database" in result.output
    assert "STORY_BOT_DB" in result.output and "Traceback" not in result.output
    assert path.read_bytes() == before


def test_an_empty_prompt_is_one_line(env):
    result = CliRunner().invoke(app, ["prompt", ""])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "the context is empty" in result.output and "Traceback" not in result.output


def test_run_when_discord_cannot_be_reached_is_one_line(env, ollama_server, monkeypatch):
    import discord

    monkeypatch.setattr(discord.http.Route, "BASE", refused_url() + "/api/v10")
    monkeypatch.setenv("STORY_BOT_DISCORD_TOKEN", "a-token")
    monkeypatch.setenv("STORY_BOT_OLLAMA_HOST", ollama_server.url)
    monkeypatch.setenv("STORY_BOT_MODEL", "writer")
    monkeypatch.setenv("STORY_BOT_DB", str(env / "story.db"))
    before = list(env.iterdir())
    result = CliRunner().invoke(app, ["run"])
    assert result.exit_code == 1, result.output
    assert "cannot reach Discord" in result.output and "check the network connection" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert list(env.iterdir()) == before  # the store it opened was new: removed, nothing left behind


class _NotOllama(BaseHTTPRequestHandler):
    """Answers /api/show with a JSON object that lacks what Ollama always sends."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.dumps({"template": "{{ .Prompt }}"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_server_that_is_not_ollama_is_said_so_at_start(env):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotOllama)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host = f"http://127.0.0.1:{server.server_address[1]}"
        argv = ["console", "--db", str(env / "s.db"), "--model", "writer", "--host", host]
        result = CliRunner().invoke(app, argv, input="")
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 1, result.output
    assert (
        "answered /api/show for 'writer' not as Ollama does (missing or wrong: model_info)" in result.output
    )
    assert "mid-passage" not in result.output and "validation error" not in result.output
    assert not (env / "s.db").exists()


def test_the_boundary_keeps_failures_to_one_line_and_debug_shows_them(env, monkeypatch):
    import bot.config

    def broken(*a, **k):
        raise IsADirectoryError(21, "Is a directory", "/etc")

    monkeypatch.setattr(bot.config, "load_settings", broken)
    result = CliRunner().invoke(app, ["sync"])
    assert (
        result.exit_code == 1
        and result.output == "story-bot: /etc is a folder, not a file: give the path of a file\n"
    )
    result = CliRunner().invoke(app, ["--debug", "sync"])
    assert isinstance(result.exception, IsADirectoryError)


async def test_console_export_refuses_an_existing_file_without_force(make_service, tmp_path):
    import io

    from bot.console import Console
    from bot.core.story import Member

    existing = tmp_path / "mine.md"
    existing.write_text("my notes\n")

    async def lines(*items):
        for item in items:
            yield item

    out = io.StringIO()
    console = Console(make_service("writer"), out, Member("console:me", "me"))
    await console.run(lines("A line of story.", f"/export {existing}", f"/export {tmp_path}", "/quit"))
    text = out.getvalue()
    assert f"{existing} already exists: /export --force {existing} replaces it" in text
    assert f"{tmp_path} is a folder: the output is a file" in text
    assert existing.read_text() == "my notes\n"
    out = io.StringIO()
    await Console(make_service("writer"), out, Member("console:me", "me")).run(
        lines("A line of story.", f"/export --force {existing}", "/quit")
    )
    assert "(exported to" in out.getvalue() and existing.read_text().startswith("# ")


def test_run_keeps_a_database_it_did_not_create_when_discord_cannot_be_reached(
    env, ollama_server, monkeypatch
):
    import discord

    Store(env / "story.db").close()
    before = sorted(p.name for p in env.iterdir())
    monkeypatch.setattr(discord.http.Route, "BASE", refused_url() + "/api/v10")
    monkeypatch.setenv("STORY_BOT_DISCORD_TOKEN", "a-token")
    monkeypatch.setenv("STORY_BOT_OLLAMA_HOST", ollama_server.url)
    monkeypatch.setenv("STORY_BOT_MODEL", "writer")
    monkeypatch.setenv("STORY_BOT_DB", str(env / "story.db"))
    result = CliRunner().invoke(app, ["run"])
    assert result.exit_code == 1 and "cannot reach Discord" in result.output, result.output
    assert "story.db" in before and "story.db" in {p.name for p in env.iterdir()}  # the writers' store stays
