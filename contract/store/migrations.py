"""The bot's database schema, as numbered migrations. This module owns the schema, on both engines.

The migrations are written in SQLite's SQL; on PostgreSQL (:func:`postgres_sql`) the types become
PostgreSQL's (an `INTEGER PRIMARY KEY` an identity column, `INTEGER` BIGINT, `REAL` DOUBLE PRECISION) and
the few statements PostgreSQL reads otherwise are rewritten in :data:`_POSTGRES_FIXES`.

The number of migrations applied is `PRAGMA user_version` on SQLite, the one row of `story_bot_schema`
on PostgreSQL; readers (the feedback export) check it against :data:`SCHEMA_VERSION`. Each migration runs
in one transaction with the version bump, so a process killed mid-migration leaves the previous version
intact, and two processes starting at once migrate once. Never edit a shipped migration: append a new one.
Migration 5 keeps what writers do to a story as rows the feedback export can read plainly:
`passage_versions` (every edit: passage, version, take edited, text, who, when; at a passage's first edit
its earlier text is kept as the version before it, and a take's own words stay in `generations.answer`),
`take_choices` (passage, chosen generation, who, when), `erasures` (story, from position, who, when,
redone by/at) with `passages.erasure_id` on the passages erased, and forks (`stories.forked_from`,
`stories.forked_at`, `passages.origin_id`); `stories.home_id` is the channel whose list shows a story,
`passages.revision` the version check of edits and takes.
Migration 6 adds `story_settings` (a story's model and sampling, newest row standing), writers' summaries
(`summaries.edited_by`), `stories.summary_paused`, `stories.imported_at` and `personas` (the cast).
The values of the enumerated columns are named in status.py; the migrations keep them as literals (a test
holds the two together).
"""

from __future__ import annotations

import re
import sqlite3

from contract.store.engine import dialect, write_lock

MIGRATIONS: tuple[str, ...] = (
    # 1: stories, passages, generations, ratings, opt-outs.
    """
    CREATE TABLE stories (
        id          INTEGER PRIMARY KEY,
        channel_id  TEXT NOT NULL,          -- a Discord channel or thread id, or 'console'
        guild_id    TEXT,
        title       TEXT,
        created_by  TEXT,
        created_at  REAL NOT NULL,
        archived_at REAL                    -- set when a new story replaces it in the channel
    );
    CREATE UNIQUE INDEX stories_one_active ON stories(channel_id) WHERE archived_at IS NULL;

    -- One row per attempt at a model passage. Regenerations of a passage share its passage_id (the
    -- "slot"): they were asked with the same context, so the export can pair them by rating.
    CREATE TABLE generations (
        id            INTEGER PRIMARY KEY,
        story_id      INTEGER NOT NULL REFERENCES stories(id),
        passage_id    INTEGER REFERENCES passages(id),   -- the slot; NULL until a first attempt lands
        requested_by  TEXT NOT NULL,
        model         TEXT NOT NULL,
        direction     TEXT,
        length        TEXT,
        user_text     TEXT NOT NULL,         -- the writer prompt exactly as the model read it
        prompt        TEXT NOT NULL,         -- the `prompt` field sent to /api/generate
        raw           INTEGER NOT NULL,      -- 1 when sent with raw=true (chat format applied by us)
        options       TEXT NOT NULL,         -- JSON: the Ollama options sent
        context       TEXT NOT NULL,         -- JSON: what the context builder used (passage ids, budget)
        status        TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'discarded')),
        output        TEXT,                  -- the model's whole output
        reasoning     TEXT,
        answer        TEXT,
        parse_issues  TEXT,                  -- JSON list of contract.prompt.Issue values
        error         TEXT,
        message_ref   TEXT,                  -- the driver's handle on the message showing it
        created_at    REAL NOT NULL,
        finished_at   REAL,
        first_token_s REAL,
        prompt_tokens INTEGER,
        output_tokens INTEGER,
        model_ns      INTEGER                -- the server's total_duration
    );
    CREATE INDEX generations_story ON generations(story_id);
    CREATE INDEX generations_slot ON generations(passage_id);
    CREATE INDEX generations_running ON generations(status) WHERE status = 'running';

    CREATE TABLE passages (
        id            INTEGER PRIMARY KEY,
        story_id      INTEGER NOT NULL REFERENCES stories(id),
        position      INTEGER NOT NULL,
        author_kind   TEXT NOT NULL CHECK (author_kind IN ('member', 'model')),
        author_id     TEXT NOT NULL,         -- the member who wrote it, or who asked the model
        author_name   TEXT NOT NULL,
        text          TEXT NOT NULL,
        generation_id INTEGER REFERENCES generations(id),  -- the alternative shown (model passages)
        created_at    REAL NOT NULL,
        removed_at    REAL,                  -- undone or reset; kept, never deleted
        UNIQUE (story_id, position)
    );

    CREATE TABLE ratings (
        generation_id INTEGER NOT NULL REFERENCES generations(id),
        member_id     TEXT NOT NULL,
        value         INTEGER NOT NULL CHECK (value IN (-1, 1)),
        rated_at      REAL NOT NULL,
        PRIMARY KEY (generation_id, member_id)
    );

    CREATE TABLE opt_outs (
        member_id    TEXT PRIMARY KEY,
        opted_out_at REAL NOT NULL
    );
    """,
    # 2: long stories: memory and author's note (kept as a history), the lorebook, rolling summaries.
    """
    -- The newest row of a kind is the story's current memory or note; '' clears it. Older rows stay,
    -- so two members setting it at once lose nothing, and generations name the row they used.
    CREATE TABLE story_notes (
        id        INTEGER PRIMARY KEY,
        story_id  INTEGER NOT NULL REFERENCES stories(id),
        kind      TEXT NOT NULL CHECK (kind IN ('memory', 'note')),
        text      TEXT NOT NULL,
        set_by    TEXT NOT NULL,
        set_at    REAL NOT NULL
    );
    CREATE INDEX story_notes_current ON story_notes(story_id, kind, id);

    CREATE TABLE lore_entries (
        id          INTEGER PRIMARY KEY,
        story_id    INTEGER NOT NULL REFERENCES stories(id),
        name        TEXT NOT NULL,
        name_key    TEXT NOT NULL,             -- the name casefolded: one live entry per name
        keywords    TEXT NOT NULL,             -- JSON list, as typed; matched case-insensitively
        text        TEXT NOT NULL,
        always_on   INTEGER NOT NULL DEFAULT 0,
        version     INTEGER NOT NULL DEFAULT 1, -- bumped by every edit: an edit made from an older
                                                -- version is refused instead of overwriting
        created_by  TEXT NOT NULL,
        created_at  REAL NOT NULL,
        updated_by  TEXT NOT NULL,
        updated_at  REAL NOT NULL,
        removed_at  REAL                       -- removed entries are kept, never deleted
    );
    CREATE UNIQUE INDEX lore_one_name ON lore_entries(story_id, name_key) WHERE removed_at IS NULL;

    -- A rolling summary covers every passage of the story up to `upto_position` (the previous summary's
    -- passages included). `digest` fingerprints the covered passages (ids and texts): once one of them is
    -- undone or replaced the summary no longer matches the story and is not used.
    CREATE TABLE summaries (
        id            INTEGER PRIMARY KEY,
        story_id      INTEGER NOT NULL REFERENCES stories(id),
        previous_id   INTEGER REFERENCES summaries(id),
        upto_position INTEGER NOT NULL,
        passage_ids   TEXT NOT NULL,           -- JSON list of the covered passages
        digest        TEXT NOT NULL,
        model         TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'discarded')),
        text          TEXT,
        error         TEXT,
        created_at    REAL NOT NULL,
        finished_at   REAL
    );
    CREATE INDEX summaries_story ON summaries(story_id, status);
    """,
    # 3: ownership across processes (leases) and delivery of a generation's final state to its driver.
    """
    -- A lease: one process owns `key` until `expires_at` (wall clock, renewed while it works).
    -- 'story:<channel id>': the story's one generation at a time; 'summary:<story id>': its summary being
    -- written; 'delivery:<generation id>': showing a generation's final state in the driver's messages;
    -- 'gateway:<shard count>:<shard id>': the process receiving that shard of the bot's Discord events.
    -- `owner` is "host:pid:token"; a lease whose owner is gone (expired, or a dead pid on this host) is free.
    CREATE TABLE leases (
        key        TEXT PRIMARY KEY,
        owner      TEXT NOT NULL,
        expires_at REAL NOT NULL
    );
    -- Who ran a generation (or summary): it is running only while that owner holds the story's lease.
    ALTER TABLE generations ADD COLUMN owner TEXT;
    ALTER TABLE summaries ADD COLUMN owner TEXT;
    -- NULL: no driver messages to keep up to date (the console, rows from before); 'pending': the
    -- messages in message_ref do not show the final state yet; 'done': they do; 'lost': they cannot
    -- (deleted, no access).
    ALTER TABLE generations ADD COLUMN delivery TEXT CHECK (delivery IN ('pending', 'done', 'lost'));
    CREATE INDEX generations_undelivered ON generations(delivery) WHERE delivery = 'pending';
    UPDATE generations SET delivery = 'pending' WHERE status = 'running' AND message_ref IS NOT NULL;
    """,
    # 4: which Ollama server wrote a generation (several in a pool): each server's load across processes.
    """
    ALTER TABLE generations ADD COLUMN host TEXT;
    CREATE INDEX generations_host ON generations(host, finished_at);
    """,
    # 5: writers shape the story: edits (every version kept), takes chosen, erased runs and redo, forks,
    # and a channel's library of stories (stories in threads the bot opened).
    """
    -- "Erase to here": passages from `from_position` to the end taken out at once (kept, each marked
    -- with passages.erasure_id and removed_at). `redone_at`/`redone_by`: /redo brought them back.
    CREATE TABLE erasures (
        id            INTEGER PRIMARY KEY,
        story_id      INTEGER NOT NULL REFERENCES stories(id),
        from_position INTEGER NOT NULL,
        erased_by     TEXT NOT NULL,
        erased_at     REAL NOT NULL,
        redone_by     TEXT,
        redone_at     REAL
    );
    CREATE INDEX erasures_story ON erasures(story_id, id);

    -- passages.text stays the text the story shows now; `revision` is bumped by every change of it (an
    -- edit, a take chosen, a regeneration landing), so a form opened on an older revision is refused
    -- instead of overwriting. `erasure_id`: the erased run it belongs to (removed_at set with it).
    -- `origin_id`: for a fork's copy, the passage it was copied from. `message_ref`: a member passage's
    -- messages on Discord ("channel:id,id"), edited with it.
    ALTER TABLE passages ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE passages ADD COLUMN erasure_id INTEGER REFERENCES erasures(id);
    ALTER TABLE passages ADD COLUMN origin_id INTEGER REFERENCES passages(id);
    ALTER TABLE passages ADD COLUMN message_ref TEXT;

    -- Every edit of a passage, one row each: `version` counts from 1 per passage, and at a passage's
    -- first edit the text it had until then is kept as version 1 (by its author, when it was added).
    -- A model passage's edits name the take they edit (`generation_id`); that take's own words stay in
    -- generations.answer. The newest row of a take is its current text.
    CREATE TABLE passage_versions (
        id            INTEGER PRIMARY KEY,
        passage_id    INTEGER NOT NULL REFERENCES passages(id),
        version       INTEGER NOT NULL,
        generation_id INTEGER REFERENCES generations(id),
        text          TEXT NOT NULL,
        edited_by     TEXT NOT NULL,
        edited_at     REAL NOT NULL,
        UNIQUE (passage_id, version)
    );

    -- Every take chosen for a model passage (the ◀ ▶ buttons, /take K): which finished generation of
    -- the slot it shows from then on, who chose it and when. The newest row is the choice standing
    -- (passages.generation_id); a regeneration landing shows its own take without a row here.
    CREATE TABLE take_choices (
        id            INTEGER PRIMARY KEY,
        passage_id    INTEGER NOT NULL REFERENCES passages(id),
        generation_id INTEGER NOT NULL REFERENCES generations(id),
        chosen_by     TEXT NOT NULL,
        chosen_at     REAL NOT NULL
    );
    CREATE INDEX take_choices_passage ON take_choices(passage_id, id);

    CREATE INDEX passages_erasure ON passages(erasure_id) WHERE erasure_id IS NOT NULL;

    -- A story's library: `home_id` is the channel whose `/story list` shows it (a story in a thread: the
    -- thread's parent channel). A fork: `forked_from` the story it was copied from, at `forked_at` (the
    -- position of the last passage copied); its passages name their origins (passages.origin_id).
    ALTER TABLE stories ADD COLUMN home_id TEXT;
    ALTER TABLE stories ADD COLUMN forked_from INTEGER REFERENCES stories(id);
    ALTER TABLE stories ADD COLUMN forked_at INTEGER;
    CREATE INDEX stories_home ON stories(home_id);
    """,
    # 6: the story's world in the writers' hands: settings per story, the rolling summary edited, paused
    # and restored, personas (the cast), and stories brought in from a file.
    """
    -- A story's generation settings as set at one moment (the newest row stands; a fork copies it):
    -- `settings` is JSON with only the keys set (model, temperature, top_p, repeat_penalty, length).
    CREATE TABLE story_settings (
        id          INTEGER PRIMARY KEY,
        story_id    INTEGER NOT NULL REFERENCES stories(id),
        settings    TEXT NOT NULL,
        set_by      TEXT NOT NULL,
        set_at      REAL NOT NULL
    );
    CREATE INDEX story_settings_story ON story_settings(story_id, id);

    -- A summary a writer wrote (`/story summary edit`): a row like the model's, covering the same
    -- passages as the one it replaces, with `edited_by` set. `/story summary restore` sets the current
    -- one aside (status 'discarded', kept) so the one before it stands again.
    ALTER TABLE summaries ADD COLUMN edited_by TEXT;
    -- 1 while `/story summary pause` holds: no new summary is asked (the current one still serves).
    ALTER TABLE stories ADD COLUMN summary_paused INTEGER NOT NULL DEFAULT 0;
    -- A story recreated from a JSON file (`/story import`): its rows are not the bot's own record of
    -- who wrote what, so the feedback export leaves them out.
    ALTER TABLE stories ADD COLUMN imported_at REAL;

    -- Which character a member writes in a story (`/persona set`): one live persona per member per
    -- story; a change or a clear marks the old row removed (kept).
    CREATE TABLE personas (
        id          INTEGER PRIMARY KEY,
        story_id    INTEGER NOT NULL REFERENCES stories(id),
        member_id   TEXT NOT NULL,
        member_name TEXT NOT NULL,
        name        TEXT NOT NULL,
        description TEXT NOT NULL,
        set_at      REAL NOT NULL,
        removed_at  REAL
    );
    CREATE UNIQUE INDEX personas_one ON personas(story_id, member_id) WHERE removed_at IS NULL;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaError(RuntimeError):
    pass


#: PostgreSQL's reading of a migration, where it differs beyond the types: (migration index, SQLite
#: text, PostgreSQL text). Migration 1 names `passages` before creating it, which PostgreSQL refuses.
_POSTGRES_FIXES: tuple[tuple[int, str, str], ...] = (
    (0, "passage_id    INTEGER REFERENCES passages(id),", "passage_id    INTEGER,"),
    (
        0,
        "CREATE TABLE opt_outs (",
        "ALTER TABLE generations ADD FOREIGN KEY (passage_id) REFERENCES passages(id);\n"
        "CREATE TABLE opt_outs (",
    ),
)


def postgres_sql(index: int) -> str:
    """Migration `index` (0-based) as PostgreSQL runs it."""
    script = MIGRATIONS[index]
    for i, old, new in _POSTGRES_FIXES:
        if i == index:
            if old not in script:
                raise AssertionError(f"a PostgreSQL fix of migration {index + 1} no longer matches")
            script = script.replace(old, new)
    script = re.sub(r"\bINTEGER PRIMARY KEY\b", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", script)
    script = re.sub(r"\bINTEGER\b", "BIGINT", script)
    return re.sub(r"\bREAL\b", "DOUBLE PRECISION", script)


def schema_version(conn) -> int:
    if dialect(conn) == "sqlite":
        return conn.execute("PRAGMA user_version").fetchone()[0]
    if conn.execute("SELECT to_regclass('story_bot_schema')").fetchone()[0] is None:
        return 0
    row = conn.execute("SELECT version FROM story_bot_schema").fetchone()
    return row[0] if row else 0


def migrate(conn) -> int:
    """Bring the database up to :data:`SCHEMA_VERSION`; returns the version it started from."""
    start = _check(schema_version(conn))
    postgres = dialect(conn) == "postgresql"
    while True:
        conn.execute("BEGIN" if postgres else "BEGIN IMMEDIATE")
        try:
            if postgres:
                write_lock(conn)
                conn.execute("CREATE TABLE IF NOT EXISTS story_bot_schema (version INTEGER NOT NULL)")
            version = _check(schema_version(conn))  # another process may have migrated meanwhile
            if version == SCHEMA_VERSION:
                conn.execute("COMMIT")
                return start
            script = postgres_sql(version) if postgres else MIGRATIONS[version]
            for statement in _statements(script):
                conn.execute(statement)
            if postgres:
                conn.execute("DELETE FROM story_bot_schema")
                conn.execute(f"INSERT INTO story_bot_schema (version) VALUES ({version + 1})")
            else:
                conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _check(version: int) -> int:
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"the database has schema version {version}, newer than this bot's {SCHEMA_VERSION}: "
            "upgrade the bot, or point STORY_BOT_DB at another database"
        )
    return version


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit on its own, outside our transaction)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return [s for s in out if s]
