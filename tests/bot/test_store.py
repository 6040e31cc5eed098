"""The SQLite store: migrations, transactions, recovery after a kill."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.core.messages import STOPPED
from bot.core.story import AuthorKind, Channel, Member
from bot.store import SCHEMA_VERSION, SchemaError, Store, schema_version
from bot.store.leases import HOST, new_owner, owner_alive, retire

ALICE = Member("1", "Alice")
ROOM = Channel("c1", "g1")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(engine_store):
    return engine_store


def _begin(store: Store, story_id: int, context: dict | None = None, slot=None) -> int:
    return store.begin_generation(
        story_id,
        ALICE,
        "writer",
        user_text="u",
        prompt="p",
        raw=False,
        options={},
        direction=None,
        length=None,
        context=context or {"passage_ids": []},
        slot=slot,
    )


def test_fresh_database_is_migrated_in_wal_mode(tmp_path):
    store = Store(tmp_path / "a.db")
    assert schema_version(store.conn) == SCHEMA_VERSION
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    again = Store(tmp_path / "a.db")  # reopening migrates nothing and keeps the data
    assert schema_version(again.conn) == SCHEMA_VERSION


def test_a_newer_schema_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "b.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaError, match="upgrade the bot"):
        Store(path)


def test_the_status_enums_are_the_values_the_schema_allows():
    from contract.store.migrations import MIGRATIONS
    from contract.store.status import AuthorKind, DeliveryState, Status

    def allowed(column: str) -> list[list[str]]:
        found = re.findall(rf"\b{column}\s+TEXT[^,]*CHECK \({column} IN \(([^)]*)\)\)", "".join(MIGRATIONS))
        return [re.findall(r"'([^']*)'", values) for values in found]

    assert allowed("status") == [list(Status), list(Status)]  # generations, summaries
    assert allowed("delivery") == [list(DeliveryState)]
    assert allowed("author_kind") == [list(AuthorKind)]


def test_new_story_archives_the_old_one(store):
    first = store.ensure_story(ROOM, ALICE)
    store.add_passage(first, ALICE, "Once.")
    second = store.start_story(ROOM, ALICE, "Two")
    assert second != first and store.active_story_id(ROOM.id) == second
    assert store.story(second).passages == () and store.story(first).passages[0].text == "Once."
    assert not store.reads.story_active(first)


def test_a_unit_commits_together_or_not_at_all(store):
    sid = store.ensure_story(ROOM, ALICE)
    with pytest.raises(RuntimeError), store.unit() as u:
        u.add_passage(sid, AuthorKind.MEMBER, ALICE, "Half.")
        assert [p.text for p in u.passages(sid)] == ["Half."]  # a unit reads its own writes
        raise RuntimeError("the process died here")
    assert store.passages(sid) == []  # rolled back: nothing of it was written
    with store.unit() as u:
        first = u.add_passage(sid, AuthorKind.MEMBER, ALICE, "Once.")
        u.remove_passages([first.id])
        u.add_passage(sid, AuthorKind.MEMBER, ALICE, "Twice.")
    assert [p.text for p in store.passages(sid)] == ["Twice."]


def test_finish_lands_only_if_the_context_is_still_there(store):
    sid = store.ensure_story(ROOM, ALICE)
    p = store.add_passage(sid, ALICE, "Once.")
    kept = _begin(store, sid, {"passage_ids": [p.id]})
    landed = store.finish_generation(
        kept, requested_by=ALICE, output="o", reasoning="r", answer="Then.", issues=[], stats={}
    )
    assert landed is not None and landed.position == 2 and landed.generation_id == kept
    gone = _begin(store, sid, {"passage_ids": [p.id, landed.id]})
    store.remove_passages([landed.id])
    assert (
        store.finish_generation(
            gone, requested_by=ALICE, output="o", reasoning="r", answer="X", issues=[], stats={}
        )
        is None
    )
    assert store.generation(gone).status == "discarded"
    assert [x.text for x in store.passages(sid)] == ["Once."]


def test_ratings_are_one_per_member_and_changeable(store):
    sid = store.ensure_story(ROOM, ALICE)
    gen = _begin(store, sid)
    store.rate(gen, "1", 1)
    store.rate(gen, "2", 1)
    store.rate(gen, "1", -1)
    assert store.tally(gen) == (1, 1)


def test_recover_marks_running_generations_failed(store):
    sid = store.ensure_story(ROOM, ALICE)
    gen = _begin(store, sid)
    store.set_message_ref(gen, "chan/msg")
    [lost] = store.recover()
    assert (lost.generation_id, lost.channel_id, lost.message_ref) == (gen, "c1", "chan/msg")
    assert store.generation(gen).status == "failed" and store.generation(gen).error == STOPPED
    assert store.recover() == []
    assert store.undelivered() == [gen]  # its message is owed the failure


def test_a_lease_is_held_until_released_or_expired_and_renewing_keeps_it(store, clock):
    mine, theirs = new_owner(), new_owner()
    assert store.claim("story:c1", mine, 0.3) is None
    assert store.claim("story:c1", theirs, 0.3) == mine  # held by a live owner: refused, holder named
    assert store.claim("story:c1", mine, 0.3) is None  # the holder may claim again (renews)
    clock.advance(0.2)
    assert store.renew(["story:c1"], mine, 0.3) == []
    clock.advance(0.2)
    assert store.claim("story:c1", theirs, 0.3) == mine  # renewed: 0.4 s after the claim, still held
    store.release("story:c1", theirs)  # only the holder releases
    assert store.claim("story:c1", theirs, 0.3) == mine
    clock.advance(0.09)
    assert store.claim("story:c1", theirs, 0.3) == mine  # renewed at 0.2 s for 0.3 s: held at 0.49 s
    clock.advance(0.02)
    assert store.claim("story:c1", theirs, 5) is None  # expired: free to take
    assert store.renew(["story:c1"], mine, 5) == ["story:c1"]  # taken over: the old holder is told
    retire(theirs)
    assert store.claim("story:c1", mine, 5) is None  # a retired owner (this process) is gone at once


def test_owners_on_this_host_are_gone_with_their_process_elsewhere_only_by_expiry(store, clock):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert not owner_alive(f"{HOST}:{dead.pid}:abc") and owner_alive(f"{HOST}:{os.getppid()}:abc")
    assert owner_alive("elsewhere:1:abc") and not owner_alive(None)
    sid = store.ensure_story(ROOM, ALICE)
    gen = store.begin_generation(
        sid,
        ALICE,
        "writer",
        user_text="u",
        prompt="p",
        raw=False,
        options={},
        direction=None,
        length=None,
        context={"passage_ids": []},
        slot=None,
        owner="elsewhere:1:abc",
    )
    assert store.claim("story:c1", "elsewhere:1:abc", 0.3) is None
    assert store.recover() == []  # another host's live lease: its generation is left alone
    clock.advance(0.35)
    assert [lost.generation_id for lost in store.recover()] == [gen]  # expired: its owner is gone


def test_a_regeneration_makes_the_replaced_take_owed_its_new_state(store):
    sid = store.ensure_story(ROOM, ALICE)
    p = store.add_passage(sid, ALICE, "Once.")
    first = _begin(store, sid, {"passage_ids": [p.id]})
    store.set_message_ref(first, "c:1")
    done = store.finish_generation(
        first, requested_by=ALICE, output="o", reasoning="r", answer="A.", issues=[], stats={}
    )
    store.set_delivery(first, "done")
    second = _begin(store, sid, {"passage_ids": [p.id]}, slot=done.id)
    store.finish_generation(
        second, requested_by=ALICE, output="o", reasoning="r", answer="B.", issues=[], stats={}
    )
    assert store.undelivered() == [first]
    old = store.delivery(first)
    assert (old.text, old.current, old.alternatives, old.position) == ("A.", False, 1, 2)
    new = store.delivery(second)
    assert (new.text, new.current, new.alternatives) == ("B.", True, 2)


WRITER_LOOP = """
import sys
from bot.core.story import AuthorKind, Channel, Member
from bot.store import Store
store, who, room = Store(sys.argv[1]), Member("1", "A"), Channel("c")
sid = store.ensure_story(room, who)
print("ready", flush=True)
i = 0
while True:
    i += 1
    p = store.add_passage(sid, who, "x" * 500)
    g = store.begin_generation(sid, who, "m", user_text="u" * 2000, prompt="p", raw=False, options={},
                               context={"passage_ids": [p.id]}, direction=None, length=None, slot=None)
    if i % 3:
        store.finish_generation(g, requested_by=who, output="o", reasoning="r", answer="y" * 500,
                                issues=[], stats={})
    if i % 5 == 0:
        store.remove_passages([p.id])
"""


def test_a_process_killed_mid_write_leaves_a_consistent_database(tmp_path):
    path = tmp_path / "kill.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER_LOOP, str(path)], stdout=subprocess.PIPE, env=env)
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(0.4)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = Store(path)
    assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert store.conn.execute("PRAGMA foreign_key_check").fetchall() == []
    n = store.conn.execute("SELECT count(*) FROM passages").fetchone()[0]
    assert n > 3
    # Every model passage points at a finished generation that points back at it.
    bad = store.conn.execute(
        "SELECT count(*) FROM passages p JOIN generations g ON g.id = p.generation_id "
        "WHERE p.author_kind = 'model' AND (g.status != 'done' OR g.passage_id != p.id)"
    ).fetchone()[0]
    assert bad == 0
    store.recover()
    assert store.conn.execute("SELECT count(*) FROM generations WHERE status = 'running'").fetchone()[0] == 0


def test_a_process_killed_mid_write_leaves_a_consistent_postgresql_store(postgres_url):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER_LOOP, postgres_url], stdout=subprocess.PIPE, env=env
    )
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(0.6)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = Store(postgres_url)
    assert store.conn.execute("SELECT count(*) FROM passages").fetchone()[0] > 3
    bad = store.conn.execute(
        "SELECT count(*) FROM passages p JOIN generations g ON g.id = p.generation_id "
        "WHERE p.author_kind = 'model' AND (g.status != 'done' OR g.passage_id != p.id)"
    ).fetchone()[0]
    assert bad == 0
    store.recover()  # the killed writer's pid is dead: its running generation fails at once
    assert store.conn.execute("SELECT count(*) FROM generations WHERE status = 'running'").fetchone()[0] == 0
    store.close()


def test_processes_starting_at_once_on_postgresql_migrate_once(postgres_url):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = "import sys; from bot.store import Store; Store(sys.argv[1]).close(); print('ok')"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, postgres_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for _ in range(3)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert out.strip() == b"ok", err.decode()
    store = Store(postgres_url)
    assert schema_version(store.conn) == SCHEMA_VERSION
    assert store.conn.execute("SELECT count(*) FROM story_bot_schema").fetchone()[0] == 1
    store.close()


def test_a_newer_postgresql_schema_is_refused_with_what_to_do(postgres_url):
    Store(postgres_url).close()
    from contract.store.engine import PgConnection

    conn = PgConnection(postgres_url)
    conn.execute("UPDATE story_bot_schema SET version = version + 1")
    conn.close()
    with pytest.raises(SchemaError, match="upgrade the bot"):
        Store(postgres_url)


def test_the_store_names_a_postgresql_database_without_its_password(postgres_url):
    from contract.store.engine import shown

    assert shown("postgresql://bot:s3cret@db.example:5433/stories?sslmode=require") == (
        "postgresql://bot@db.example:5433/stories"
    )
    store = Store(postgres_url)
    assert store.path.startswith("postgresql://postgres@127.0.0.1:") and "options" not in store.path
    store.close()


def test_gateway_leases_cover_shard_ranges_and_refuse_any_overlap(store):
    from bot.store.leases import gateway_key, parse_gateway_key

    assert gateway_key([0, 1, 2, 3, 6], 8) == "gateway:8:0-3,6"
    assert parse_gateway_key("gateway:8:0-3,6") == (8, {0, 1, 2, 3, 6})
    assert parse_gateway_key("gateway:4:2") == (4, {2})  # issue 18's one-shard keys read the same
    a, b, c = new_owner(), new_owner(), new_owner()
    assert store.claim_gateway(range(0, 4), 8, a, 5) is None
    assert store.claim_gateway(range(4, 8), 8, b, 5) is None  # disjoint: both run
    assert store.claim_gateway([3, 4], 8, c, 5) == a  # overlaps the first range
    assert store.claim_gateway([0], 1, c, 5) == a  # the whole bot overlaps everything
    assert store.claim_gateway(range(0, 4), 16, c, 5) == a  # another count: Discord routes differently
    retire(a)
    assert store.claim_gateway([2, 3], 8, c, 5) is None  # its holder is gone: free
    for owner in (b, c):
        retire(owner)


def test_a_postgresql_store_reconnects_after_the_server_drops_its_connection(postgres_url):
    from contract.store.engine import PgConnection

    store = Store(postgres_url)
    sid = store.ensure_story(ROOM, ALICE)
    admin = PgConnection(postgres_url)
    pid = store.conn.raw.info.backend_pid
    admin.execute("SELECT pg_terminate_backend(?)", (pid,))  # as a server restart or a network cut
    admin.close()
    import psycopg

    with pytest.raises(psycopg.OperationalError):  # the call that meets the break fails, changing nothing
        store.add_passage(sid, ALICE, "Lost in the break.")
    store.add_passage(sid, ALICE, "Once.")  # the next one works, on a new connection
    assert [p.text for p in store.passages(sid)] == ["Once."]
    store.close()
