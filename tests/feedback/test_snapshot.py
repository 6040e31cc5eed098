"""Reading the bot's database: read-only, one consistent snapshot, clear refusals, older schemas."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time

import pytest

from bot.core.story import Channel
from bot.store import Store
from contract.store import migrations
from pipeline.feedback import export, snapshot

from .conftest import ALICE, BOB, HERE, Bot, rows_of


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_empty_bot_database_gives_empty_exports(db):
    Store(db).close()
    for fmt in export.FORMATS:
        rows, report = rows_of(db, fmt)
        assert rows == [] and report.rows == 0 and report.generations == 0 and not report.left_out


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no database at"),
        (lambda p: p.write_bytes(b"not a database, just some bytes" * 200), "cannot be read as SQLite"),
        (lambda p: p.write_bytes(b""), "is not a story-bot database"),
        (
            lambda p: sqlite3.connect(p).execute("CREATE TABLE notes (x)").connection.commit(),
            "not a story-bot",
        ),
    ],
    ids=["missing", "garbage", "empty-file", "another-sqlite-file"],
)
def test_files_that_are_not_the_bots_database_are_refused_by_name(db, make, message):
    make(db)
    with pytest.raises(snapshot.FeedbackError, match=message) as e:
        snapshot.read(db)
    assert str(db) in str(e.value)


def test_a_newer_schema_is_refused(db):
    Store(db).close()
    with sqlite3.connect(db) as c:
        c.execute(f"PRAGMA user_version = {migrations.SCHEMA_VERSION + 1}")
    with pytest.raises(snapshot.FeedbackError, match="newer than this pipeline knows.*update the pipeline"):
        snapshot.read(db)


def test_an_older_schema_is_migrated_in_a_copy_and_the_file_is_left_alone(db, bot, monkeypatch):
    bot.write(ALICE, "Once upon a time the sea froze over.")
    gid = bot.generate()
    bot.rate(gid, (ALICE, 1))
    bot.store.close()
    before, version = _sha(db), migrations.SCHEMA_VERSION
    # The next schema version (issue 9 will add one like it): the reader must migrate a copy.
    monkeypatch.setattr(
        migrations, "MIGRATIONS", (*migrations.MIGRATIONS, "ALTER TABLE generations ADD lore TEXT;")
    )
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", version + 1)

    snap = snapshot.read(db)
    assert snap.migrated_from == version and snap.schema_version == version + 1
    rows, report = export.export(snap, "sft")
    assert len(rows) == 1 and "migrated in memory" in "\n".join(report.lines())
    assert _sha(db) == before
    with sqlite3.connect(db) as c:
        assert migrations.schema_version(c) == version
        assert "lore" not in {r[1] for r in c.execute("PRAGMA table_info(generations)")}


def test_the_reader_cannot_write(db):
    Store(db).close()
    conn = snapshot._connect_ro(db)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("INSERT INTO opt_outs VALUES ('x', 0)")
    conn.close()


def test_a_snapshot_is_consistent_while_the_bot_writes(db):
    """A writer adds a generation and its two votes in one transaction, as fast as it can; every read
    must see whole transactions (two votes per generation), and nothing may fail with 'locked'."""
    store = Store(db)
    story = store.ensure_story(HERE, ALICE)
    stop = threading.Event()
    written = []

    def write() -> None:
        writer = Store(db)
        while not stop.is_set():
            with writer.tx() as c:
                gid = c.execute(
                    "INSERT INTO generations (story_id, requested_by, model, user_text, prompt, raw, "
                    "options, context, status, reasoning, answer, parse_issues, created_at) "
                    "VALUES (?, '1', 'writer', 'p', 'p', 0, '{}', '{}', 'done', 'r', 'a', '[]', ?)",
                    (story, time.time()),
                ).lastrowid
                for member in (ALICE, BOB):
                    c.execute("INSERT INTO ratings VALUES (?, ?, 1, ?)", (gid, member.id, time.time()))
            written.append(gid)
        writer.close()

    thread = threading.Thread(target=write)
    thread.start()
    try:
        seen = []
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline or len(seen) < 5:
            snap = snapshot.read(db)
            votes, _ = export.counted_votes(snap)
            assert all(votes.get(g.id) == (2, 0) for g in snap.generations)
            assert len(snap.ratings) == 2 * len(snap.generations)
            seen.append(len(snap.generations))
    finally:
        stop.set()
        thread.join()
        store.close()
    assert seen == sorted(seen) and len(set(seen)) > 1  # it did read while the bot wrote
    assert max(seen) <= len(written)


def test_an_imported_storys_generations_are_not_read(db, bot):
    """A story recreated from a file (`/story import`) holds takes whose prompts the file does not say:
    the snapshot leaves them out, and keeps the bot's own."""
    bot.write(ALICE, "The door was shut.")
    own = bot.generate()
    imported = Bot(bot.store, Channel("5002", guild_id="9001"))
    imported.write(BOB, "The window was open.")
    theirs, story_id = imported.generate(), imported.story_id
    with bot.store.unit() as u:
        u.mark_imported(story_id)
    assert [g.id for g in snapshot.read(db).generations] == [own]
    assert theirs != own
