"""Stories and lorebooks in and out as files, from the console: a story exported as JSON imports into
another channel and exports again byte for byte; SillyTavern World Info and NovelAI lorebooks (written
here by their documented formats) import with a report per entry; bad files are refused, nothing
half-written."""

from __future__ import annotations

import json

import pytest

from bot.console import CHANNEL
from bot.core.files import MAX_FILE_BYTES
from bot.core.service import Limits, StoryService
from bot.core.story import Channel
from bot.llm import OllamaBackend

from .conftest import WRITER
from .test_console_history import ALICE, BOB, Session, takes_script

pytestmark = pytest.mark.timeout(60)
OTHER = Channel("other-channel")


@pytest.fixture
async def service(ollama_server, store):
    ollama_server.add_model("writer-b", template=WRITER)
    takes_script(ollama_server, "writer-b")
    backend = OllamaBackend(ollama_server.url)
    s = StoryService(
        store, backend, lambda c: "writer", limits=Limits(), models_allowed=lambda c: ["writer-b"]
    )
    yield s
    await s.aclose()
    await backend.close()


def count(service, table: str) -> int:
    return service.store.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


async def rich_story(s: Session) -> None:
    """A story with all a file holds: passages by two members, a model passage with two takes (the first
    shown, edited), memory, note, lore, settings, cast and a summary a writer rewrote."""
    await s.do(ALICE, "/story settings model=writer-b temperature=0.7 length=medium")
    await s.do(ALICE, "The harbour slept under the fog.")
    await s.do(BOB, "Mara untied the boat — quietly.")
    await s.do(ALICE, "/continue")
    await s.do(BOB, "/regenerate")
    await s.do(ALICE, "/take 1")
    await s.do(ALICE, "/edit 3 Mara rowed into the fog, the lamp dark.")
    await s.do(ALICE, "The bell rang twice.")
    await s.do(ALICE, "/story memory A quiet harbour town; past tense.")
    await s.do(ALICE, "/story note Keep it tense.")
    await s.do(ALICE, "/lore add Mara | Mara, the smuggler | Mara owes the harbour master a boat.")
    await s.do(ALICE, "/lore add The sea | | Always cold here. --always")
    await s.do(ALICE, "/persona set Mara | A smuggler in debt.")
    await s.do(BOB, "/persona set Jon | A fisherman.")
    story_id = s.service.store.active_story_id(CHANNEL.id)
    passages = s.service.store.passages(story_id)
    sid = s.service.store.begin_summary(story_id, 2, passages[:2], None, "writer")
    s.service.store.finish_summary(sid, "The harbour slept; Mara untied the boat.")
    await s.do(ALICE, "/story summary edit The harbour slept, and Mara slipped her boat loose.")
    await s.do(ALICE, "/story summary pause")


async def test_a_story_exported_as_json_imports_into_another_channel_and_exports_again_identically(
    service, tmp_path
):
    s = Session(service)
    await rich_story(s)
    first = tmp_path / "story.json"
    assert f"(exported to {first})" in await s.do(ALICE, f"/export --json {first}")
    doc = json.loads(first.read_text())
    assert doc["format"] == "story-bot.story" and doc["version"] == 1
    model_passage = doc["passages"][2]
    assert model_passage["author"] == "model" and model_passage["take"] == 1
    assert [t["text"] for t in model_passage["takes"]] == ["Take 1 of the harbour.", "Take 2 of the harbour."]
    assert [v["text"] for v in model_passage["versions"]] == [
        "Take 1 of the harbour.",
        "Mara rowed into the fog, the lamp dark.",
    ]
    assert doc["summary"] == {
        "covers": 2,
        "text": "The harbour slept, and Mara slipped her boat loose.",
        "model": "writer",
        "edited_by": ALICE.id,
    }
    assert doc["summary_paused"] is True and [p["name"] for p in doc["cast"]] == ["Mara", "Jon"]
    assert doc["settings"] == {"model": "writer-b", "temperature": 0.7, "length": "medium"}

    # Into another channel: the same story, the same bytes out again.
    story, report, notes = service.import_story(OTHER, BOB, first.read_bytes())
    assert notes == [] and report.summary() == "its lorebook: 2 kept, 0 merged, 0 skipped"
    assert [p.text for p in story.passages] == [p.text for p in service.show(CHANNEL).passages]
    assert service.export_json(OTHER) == first.read_text()
    original = (await service.context_preview(CHANNEL, ALICE)).user_text
    assert (await service.context_preview(OTHER, BOB)).user_text == original  # the same next prompt

    # And in the console's own channel: the story there is kept (archived), the import is the story now.
    said = await s.do(ALICE, f"/import {first}")
    assert "(imported story 3 “untitled”: 4 passages; the story here before is kept: /stories)" in said
    again = tmp_path / "again.json"
    await s.do(ALICE, f"/export --json {again}")
    assert again.read_bytes() == first.read_bytes()
    assert "[3 · model · take 1/2 · edited] Mara rowed into the fog, the lamp dark." in await s.do(
        ALICE, "/show"
    )
    # Imported takes are not training data: the file does not say what the model read.
    rows = service.store.conn.execute(
        "SELECT g.user_text, s.imported_at IS NOT NULL FROM generations g "
        "JOIN stories s ON s.id = g.story_id WHERE s.id = 3"
    ).fetchall()
    assert [tuple(r) for r in rows] == [("", 1), ("", 1)]
    # The Markdown export stays.
    assert "<!-- passage 1 by Alice -->" in await s.do(ALICE, "/export")


def tavern_file() -> dict:
    """SillyTavern World Info as its editor writes it: `entries` keyed by uid."""

    def entry(uid: int, comment: str, key: list, content: str, **kw) -> dict:
        base = {
            "uid": uid,
            "key": key,
            "keysecondary": [],
            "comment": comment,
            "content": content,
            "constant": False,
            "vectorized": False,
            "selective": True,
            "selectiveLogic": 0,
            "addMemo": True,
            "order": 100,
            "position": 0,
            "disable": False,
            "excludeRecursion": False,
            "probability": 100,
            "useProbability": True,
            "depth": 4,
            "group": "",
            "displayIndex": uid,
        }
        return {**base, **kw}

    entries = [
        entry(0, "Mara", ["Mara", "smuggler"], "Mara owes the harbour master a boat."),
        entry(
            1,
            "The lighthouse",
            ["lighthouse"],
            "The lighthouse has been dark for a year.",
            keysecondary=["night"],
        ),
        entry(2, "The sea", [], "The sea is always cold here.", constant=True),
        entry(3, "Old rumour", ["rumour"], "Nobody believes it.", disable=True),
        entry(4, "Mara", ["boat"], "A second Mara."),
        entry(5, "Huge", ["huge"], "x" * 1500),
        entry(6, "Jon", ["Mara"], "Jon is Mara's brother."),
        entry(7, "Gulls", ["/gulls?/i", "birds"], "Gulls circle the harbour."),
    ]
    return {"entries": {str(e["uid"]): e for e in entries}}


def novelai_file() -> dict:
    """A NovelAI lorebook as NovelAI exports it (`.lorebook`)."""

    def entry(name: str, keys: list, text: str, **kw) -> dict:
        base = {
            "text": text,
            "contextConfig": {
                "prefix": "",
                "suffix": "\n",
                "tokenBudget": 1,
                "reservedTokens": 0,
                "budgetPriority": 400,
                "trimDirection": "trimBottom",
                "insertionType": "newline",
                "maximumTrimType": "sentence",
                "insertionPosition": -1,
            },
            "lastUpdatedAt": 1702478809363,
            "displayName": name,
            "id": f"id-{name}",
            "keys": keys,
            "searchRange": 1000,
            "enabled": True,
            "forceActivation": False,
            "keyRelative": False,
            "nonStoryActivatable": False,
            "category": "",
            "loreBiasGroups": [],
        }
        return {**base, **kw}

    return {
        "lorebookVersion": 5,
        "entries": [
            entry("The harbour master", ["harbour master"], "He keeps the ledger of debts."),
            entry("Weather", [], "Fog every morning.", forceActivation=True),
            entry("Unused", ["unused"], "Off.", enabled=False),
            entry("Mara", ["Mara the smuggler"], "Mara is fleeing north now."),
        ],
        "settings": {"orderByKeyLocations": False},
        "categories": [],
    }


async def test_sillytavern_and_novelai_lorebooks_import_with_a_report_per_entry(service, tmp_path):
    s = Session(service)
    await s.do(ALICE, "The harbour slept.")
    await s.do(ALICE, "/lore add Mara | Mara | Mara is a smuggler.")
    tavern = tmp_path / "world.json"
    tavern.write_text(json.dumps(tavern_file()))
    said = await s.do(ALICE, f"/lore import {tavern}")
    assert "(SillyTavern World Info: 3 kept, 1 merged, 4 skipped)" in said
    lines = [line.strip() for line in said.splitlines()[1:]]
    assert lines[0].startswith("1. Mara: merged, the story had an entry of this name")
    assert lines[1].startswith("2. The lighthouse: kept, its secondary keys were dropped")
    assert lines[2] == "3. The sea: kept, added"
    assert lines[3] == "4. Old rumour: skipped, it is disabled in the file"
    assert lines[4] == "5. Mara: skipped, entry 1 of the file has the same name (that one was used)"
    assert lines[5].startswith("6. Huge: skipped, the entry's text has 1,500 characters, over the limit")
    assert lines[6].startswith("7. Jon: skipped, the keyword 'Mara' already brings in the entry 'Mara'")
    assert lines[7].startswith("8. Gulls: kept, the regular-expression key '/gulls?/i' was dropped")
    entries = {e.name: e for e in service.lore(CHANNEL)}
    assert entries["Mara"].keywords == ("Mara", "smuggler") and entries["Mara"].version == 2
    assert entries["Mara"].text == "Mara owes the harbour master a boat."
    assert entries["The sea"].always_on and entries["Gulls"].keywords == ("birds",)
    assert sorted(entries) == ["Gulls", "Mara", "The lighthouse", "The sea"]

    novel = tmp_path / "harbour.lorebook"
    novel.write_text(json.dumps(novelai_file()))
    said = await s.do(ALICE, f"/lore import {novel}")
    assert "(NovelAI lorebook: 2 kept, 1 merged, 1 skipped)" in said
    assert "3. Unused: skipped, it is disabled in the file" in said
    assert service.lore_entry(CHANNEL, "Weather").always_on
    assert service.lore_entry(CHANNEL, "Mara").keywords == ("Mara", "smuggler", "Mara the smuggler")
    header = (await service.context_preview(CHANNEL, ALICE)).record
    assert {e["name"] for e in header["lore"]} >= {"The sea", "Weather"}

    # Out again, in SillyTavern's format: it imports into another story as it was.
    out = tmp_path / "out.json"
    assert f"(exported to {out})" in await s.do(ALICE, f"/lore export --sillytavern {out}")
    exported = json.loads(out.read_text())
    assert exported["entries"]["0"]["comment"] == "Gulls" and exported["entries"]["0"]["key"] == ["birds"]
    service.write(OTHER, BOB, "Elsewhere.")
    report = service.import_lore(OTHER, BOB, out.read_bytes())
    assert report.summary() == "SillyTavern World Info: 6 kept, 0 merged, 0 skipped"
    assert service.export_lore(OTHER) == service.export_lore(CHANNEL)
    ours = tmp_path / "ours.json"
    await s.do(ALICE, f"/lore export {ours}")
    assert json.loads(ours.read_text())["format"] == "story-bot.lorebook"
    assert "already exists" in await s.do(ALICE, f"/lore export {ours}")


async def test_bad_files_are_refused_by_name_and_nothing_is_half_written(service, tmp_path):
    s = Session(service)
    await rich_story(s)
    good = tmp_path / "story.json"
    await s.do(ALICE, f"/export --json {good}")
    doc = json.loads(good.read_text())
    before = {
        t: count(service, t) for t in ("stories", "passages", "generations", "lore_entries", "personas")
    }

    def file(name: str, content: str | bytes) -> str:
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    cases = {
        "big.json": (b" " * (MAX_FILE_BYTES + 1), f"over the limit of {MAX_FILE_BYTES:,}"),
        "text.json": ("The harbour slept.", "the file is not JSON (line 1, column 1"),
        "binary.json": (b"\xff\xfe\x00garbage", "the file is not text (UTF-8)"),
        "lorebook.json": (json.dumps(novelai_file()), "the file is a lorebook file of ours"),
        "newer.json": (json.dumps({**doc, "version": 2}), "version 2, newer than this bot reads (1)"),
        "unknown.json": (json.dumps({**doc, "colour": "red"}), "colour: Extra inputs are not permitted"),
        "long.json": (
            json.dumps({**doc, "passages": [{**doc["passages"][0], "text": "x" * 7000}]}),
            "passages.1.text: 7,000 characters, over the limit of 6,000",
        ),
        "take.json": (
            json.dumps({**doc, "passages": [{**doc["passages"][2], "take": 3}]}),
            "passages.1.take: give which of its 2 takes is shown",
        ),
        "cast.json": (json.dumps({**doc, "cast": doc["cast"] + doc["cast"][:1]}), "one persona per member"),
        "settings.json": (
            json.dumps({**doc, "settings": {"temperature": 9}}),
            "settings: temperature 9 is out",
        ),
    }
    for name, (content, message) in cases.items():
        said = await s.do(ALICE, f"/import {file(name, content)}")
        assert said.startswith("! ") and message in said, (name, said)
    for name in ("big.json", "text.json", "newer.json"):
        said = await s.do(ALICE, f"/lore import {tmp_path / name}")
        assert said.startswith("! "), said
    said = await s.do(ALICE, f"/lore import {file('other.json', json.dumps({'characters': []}))}")
    assert "! the file is not a lorebook we read" in said
    newer = json.dumps({"format": "story-bot.lorebook", "version": 9, "entries": []})
    assert "! the lorebook file has version 9" in await s.do(
        ALICE, f"/lore import {file('ours9.json', newer)}"
    )
    assert "! cannot read" in await s.do(ALICE, f"/import {tmp_path / 'missing.json'}")
    after = {t: count(service, t) for t in before}
    assert after == before  # nothing half-written

    # A model the target channel may not use is left out, and said.
    service.models_allowed = lambda c: []
    story, _, notes = service.import_story(OTHER, BOB, good.read_bytes())
    assert notes == [
        "the model 'writer-b' is not one this channel may use: the story uses the channel's (writer)"
    ]
    assert service.settings(OTHER)[0].values() == {"temperature": 0.7, "length": "medium"}
