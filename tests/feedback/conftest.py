from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from bot.core.story import Channel, Member
from bot.store import Store
from contract import prompt
from pipeline.feedback import export, snapshot

ALICE, BOB, CAROL, DAN = (Member(str(1000 + i), n) for i, n in enumerate(("Alice", "Bob", "Carol", "Dan"), 1))
HERE = Channel("5001", guild_id="9001")
_counter = itertools.count(1)


class Bot:
    """Fills a database through the bot's own store, in the order the service does things."""

    def __init__(self, store: Store, channel: Channel = HERE):
        self.store, self.channel = store, channel

    @property
    def story_id(self) -> int:
        return self.store.ensure_story(self.channel, ALICE)

    def write(self, member: Member, text: str) -> int:
        return self.store.add_passage(self.story_id, member, text).id

    def generate(
        self,
        member: Member = ALICE,
        *,
        model: str = "writer",
        slot: int | None = None,
        answer: str | None = None,
        reasoning: str = "She weighs the cost.",
        user_text: str | None = None,
        issues: tuple[str, ...] = (),
    ) -> int:
        """A finished generation on the story so far (for a regeneration: minus the slot's passage)."""
        passages = [p for p in self.store.passages(self.story_id) if p.id != slot]
        context = "\n\n".join(p.text for p in passages)
        n = next(_counter)
        gid = self.store.begin_generation(
            self.story_id,
            member,
            model,
            user_text=user_text or prompt.render_prompt(context),
            prompt=context,
            raw=False,
            options={},
            context={"passage_ids": [p.id for p in passages]},
            direction=None,
            length=None,
            slot=slot,
        )
        answer = answer or f"Version {n}: the door creaked open."
        out = f"<reasoning>{reasoning}</reasoning><answer>{answer}</answer>"
        self.store.finish_generation(
            gid,
            requested_by=member,
            output=out,
            reasoning=reasoning,
            answer=answer,
            issues=list(issues),
            stats={},
        )
        return gid

    def no_passage(self, output: str, issues: list[str] | None, member: Member = ALICE) -> int:
        """A generation the bot showed nothing of: `issues` when the parser found no passage in a
        finished output, None when it was cut short (an error or a cancel)."""
        context = "\n\n".join(p.text for p in self.store.passages(self.story_id))
        gid = self.store.begin_generation(
            self.story_id,
            member,
            "writer",
            user_text=prompt.render_prompt(context),
            prompt=context,
            raw=False,
            options={},
            context={"passage_ids": [p.id for p in self.store.passages(self.story_id)]},
            direction=None,
            length=None,
            slot=None,
        )
        self.store.fail_generation(gid, "no passage", output, issues)
        return gid

    def slot(self, gid: int) -> int:
        return self.store.generation(gid).passage_id

    def rate(self, gid: int, *votes: tuple[Member, int]) -> None:
        for member, value in votes:
            self.store.rate(gid, member.id, value)


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "story.db"


@pytest.fixture
def bot(db):
    store = Store(db)
    yield Bot(store)
    store.close()


def rows_of(db: Path, fmt: str, **filters) -> tuple[list[dict], export.Report]:
    return export.export(snapshot.read(db), fmt, export.Filters(**filters))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def bodies(rows: list[dict]) -> list[dict]:
    """Rows without their `source` (what a trainer reads)."""
    return [{k: v for k, v in r.items() if k != "source"} for r in rows]
