"""The loop's data steps: writers use the bot (its core, no Discord) → ratings → `feedback export` in all
three formats → rows that `datasets` loads, TRL renders exactly as the served model reads its prompt, and
the training command's own loaders (`pipeline.train.rows`) accept without skipping any.
"""

from __future__ import annotations

import itertools
import json

import pytest
from typer.testing import CliRunner

from bot.core.service import Done, Limits, StoryService
from bot.core.story import Member
from bot.llm import OllamaBackend
from bot.store import Store
from contract import prompt
from pipeline.cli import app
from tests.families import qwen, writer_template

from .conftest import ALICE, BOB, CAROL, HERE, read_jsonl

DAN = Member("1004", "Dan")
FORMAT = qwen()


@pytest.fixture
async def service(fake_ollama, db):
    takes = itertools.count(1)

    def reply(_body: dict) -> str:
        n = next(takes)
        return (
            f"<reasoning>Plan {n}: the tide turns.</reasoning><answer>Take {n}: the boat drifted in.</answer>"
        )

    fake_ollama.add_model("writer", template=writer_template())
    fake_ollama.script("writer", text=reply)
    store = Store(db)
    backend = OllamaBackend(fake_ollama.url)
    yield StoryService(store, backend, lambda channel: "writer", limits=Limits(delta_every=1))
    await backend.close()
    store.close()


async def _done(events) -> Done:
    out = [e async for e in events]
    assert isinstance(out[-1], Done), out[-1]
    return out[-1]


async def _fill(service: StoryService) -> dict[str, int]:
    """A session in one channel: continue, rate, regenerate, undo, rate twice, a member opting out."""
    service.write(HERE, ALICE, "The harbour lights went out one by one as the fog came in from the sea.")
    take = await _done(service.continue_story(HERE, BOB))
    service.rate(take.generation_id, ALICE, 1)
    service.rate(take.generation_id, BOB, 1)
    worse = await _done(service.regenerate(HERE, CAROL, take.generation_id))
    service.rate(worse.generation_id, ALICE, -1)
    service.rate(worse.generation_id, ALICE, -1)  # twice: counted once
    kept = await _done(service.regenerate(HERE, CAROL, worse.generation_id))
    service.rate(kept.generation_id, CAROL, 1)
    service.write(HERE, ALICE, "A bell rang somewhere behind the breakwater.")
    undone = await _done(service.continue_story(HERE, ALICE))
    service.rate(undone.generation_id, BOB, -1)
    service.rate(undone.generation_id, BOB, 1)  # changed their mind: +1
    service.undo(HERE, ALICE)
    service.write(HERE, DAN, "Dan's own paragraph about the keeper's daughter and her lantern.")
    private = await _done(service.continue_story(HERE, ALICE))
    service.rate(private.generation_id, ALICE, 1)
    service.set_opt_out(DAN, True)
    return {
        "take": take.generation_id,
        "worse": worse.generation_id,
        "kept": kept.generation_id,
        "undone": undone.generation_id,
        "private": private.generation_id,
    }


def _export(db, fmt: str, out) -> str:
    result = CliRunner().invoke(app, ["feedback", "export", "--db", str(db), "--format", fmt, "-o", str(out)])
    assert result.exit_code == 0, result.output
    return result.output


def _conversational(row: dict) -> dict:
    """A plain-text preference row as TRL's conversational form (what the trainer's loader builds)."""
    out = {"prompt": [{"role": "user", "content": row["prompt"]}]}
    for key in ("chosen", "rejected", "completion"):
        if key in row:
            out[key] = [{"role": "assistant", "content": row[key]}]
    return out | ({"label": row["label"]} if "label" in row else {})


async def test_ratings_become_rows_the_trainers_take(service, db, tmp_path, fake_ollama):
    ids = await _fill(service)
    out = {fmt: tmp_path / f"{fmt}.jsonl" for fmt in ("sft", "kto", "dpo")}
    logs = {fmt: _export(db, fmt, path) for fmt, path in out.items()}
    assert "2 sft rows (2 positive)" in logs["sft"] and "rated up but undone" in logs["sft"]
    assert "4 kto rows (3 desirable, 1 undesirable)" in logs["kto"]
    assert "2 dpo rows (2 rating pairs)" in logs["dpo"] and "both versions rated up" in logs["dpo"]

    gens = {k: service.store.generation(v) for k, v in ids.items()}
    target = {k: prompt.render_target(g.reasoning, g.answer) for k, g in gens.items()}
    sft, kto, dpo = (read_jsonl(out[f]) for f in ("sft", "kto", "dpo"))
    assert [r["messages"][1]["content"] for r in sft] == [target["take"], target["kept"]]
    labels = [("take", True), ("worse", False), ("kept", True), ("undone", True)]  # undone: still a vote
    assert [(r["completion"], r["label"]) for r in kto] == [(target[k], label) for k, label in labels]
    pairs = [("take", "worse"), ("kept", "worse")]  # take vs kept: both liked, no preference
    assert [(r["chosen"], r["rejected"]) for r in dpo] == [(target[a], target[b]) for a, b in pairs]
    assert all("Dan's own paragraph" not in json.dumps(r) for r in sft + kto + dpo)
    assert sorted({r["prompt"] for r in dpo}) == [gens["take"].user_text]
    for fmt, path in out.items():  # deterministic: the same database gives the same bytes
        again = tmp_path / f"again-{fmt}.jsonl"
        _export(db, fmt, again)
        assert again.read_bytes() == path.read_bytes()

    from datasets import load_dataset

    loaded = {fmt: load_dataset("json", data_files=str(path), split="train") for fmt, path in out.items()}
    assert loaded["sft"].column_names == ["messages", "source"] and len(loaded["sft"]) == 2
    assert loaded["kto"].features["label"].dtype == "bool"
    assert loaded["dpo"].column_names == ["prompt", "chosen", "rejected", "source"]
    assert all(loaded["dpo"].features[c].dtype == "string" for c in ("prompt", "chosen", "rejected"))
    assert {r["source"]["action"] for r in loaded["dpo"]} == {"rating"}

    # TRL renders the rows through the base's chat template exactly as the served model read its prompt.
    from trl.data_utils import apply_chat_template, is_conversational

    from pipeline.tiny import train_tokenizer

    tokenizer = train_tokenizer([gens["take"].user_text, *target.values()], 300, FORMAT.pinned_jinja())
    served = fake_ollama.rendered[0]  # the first take's prompt after the model's TEMPLATE
    for row in loaded["dpo"]:
        conv = _conversational(row)
        assert is_conversational(conv)
        text = apply_chat_template(conv, tokenizer)
        assert text["prompt"] == served
        assert text["chosen"] == row["chosen"] + "<|im_end|>\n"
    for row in loaded["kto"]:
        text = apply_chat_template(_conversational(row), tokenizer)
        assert text["completion"].startswith(row["completion"]) and isinstance(row["label"], bool)
    first = apply_chat_template({"messages": loaded["sft"][0]["messages"]}, tokenizer)["text"]
    assert first.startswith(served) and first == FORMAT.render(loaded["sft"][0]["messages"])

    # The training command's loaders take every row, and the prompt tokens are the served prompt.
    from pipeline.train import rows

    examples, stats = rows.load_sft(out["sft"], tokenizer, max_length=4096)
    assert stats.kept == 2 and stats.total == 2
    n_prompt = examples[0]["labels"].count(-100)
    assert tokenizer.decode(examples[0]["input_ids"][:n_prompt]) == served
    for method in ("kto", "dpo"):
        _, stats = rows.load_preference(out[method], tokenizer, method, max_length=4096)
        assert stats.kept == stats.total == len(loaded[method])
