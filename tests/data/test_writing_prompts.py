import json

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.data import writing_prompts as wp

runner = CliRunner()

STORY = (
    "`` I do n't know , '' she said . `` It 's late ! '' <newline> <newline> He wo n't go ( not today ) ... "
    "I 'm sure of it . The rain fell on the roofs of the town and nobody came out to see it . "
)


def story(n_words: int, tag: str = "") -> str:
    words = STORY.split(" ")
    body = " ".join((words * (n_words // 40 + 1))[: n_words + n_words // 3])
    return f"{tag} {body}".strip()


def write_split(folder, name, rows):
    (folder / f"{name}.wp_source").write_text("".join(p + "\n" for p, _ in rows), encoding="utf-8")
    (folder / f"{name}.wp_target").write_text("".join(s + "\n" for _, s in rows), encoding="utf-8")


@pytest.fixture
def wp_dir(tmp_path):
    d = tmp_path / "writingPrompts"
    d.mkdir()
    rows = [
        (f"[ WP ] A dragon counts sheep number {i} and can not sleep .", story(150, str(i)))
        for i in range(12)
    ]
    rows.append(
        ("[ WP ] A dragon counts sheep number 3 and can not sleep .", story(200, "again"))
    )  # same prompt
    rows.append(("[ IP ] [ OT ] Too short a story .", story(20)))
    rows.append(("[ EU ] Far too long a story .", story(3000)))
    write_split(d, "train", rows)
    write_split(
        d, "valid", [("[ CW ] Write about a lighthouse keeper who keeps a secret .", story(120, "v"))]
    )
    return d


def test_detokenize_undoes_the_preprocessing():
    text = wp.detokenize(STORY)
    assert text.startswith(
        "\"I don't know,\" she said. \"It's late!\"\n\nHe won't go (not today)... I'm sure of it."
    )
    assert " ," not in text and " ." not in text and "<newline>" not in text and "``" not in text


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("[ WP ] You wake up .", "You wake up ."),
        ("[WP] [ IP ] Two tags", "Two tags"),
        ("(TT) Theme thursday", "Theme thursday"),
        ("No tag at all", "No tag at all"),
        ("[ WP ] [ A ] is not a tag", "is not a tag"),
    ],
)
def test_prompt_tags_are_stripped(raw, clean):
    assert wp.strip_tags(raw) == clean


def test_pairs_filtered_and_split_by_prompt(tmp_path, wp_dir):
    out = tmp_path / "pairs.jsonl"
    result = runner.invoke(
        app,
        [
            "data",
            "writing-prompts",
            "--source",
            str(wp_dir),
            "-o",
            str(out),
            "--min-words",
            "100",
            "--max-words",
            "1000",
            "--val-ratio",
            "0.5",
        ],
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 14  # 12 + the second story of prompt 3 + the valid file; 2 filtered out
    assert "1 too short, 1 too long" in result.output
    assert all(not r["prompt"].startswith("[") and "<newline>" not in r["story"] for r in records)
    by_prompt: dict[str, set] = {}
    for r in records:
        by_prompt.setdefault(r["prompt_id"], set()).add(r["split"])
    assert len(by_prompt) == 13 and all(len(s) == 1 for s in by_prompt.values())
    assert {r["split"] for r in records} == {"train", "validation"}
    import datasets

    ds = datasets.load_dataset("json", data_files=str(out), split="train")
    assert set(ds.column_names) == {"id", "prompt_id", "prompt", "story", "split"}


def test_hugging_face_layout_through_datasets(tmp_path):
    """A local copy of a Hub dataset with prompt/story columns (the euclaise/writingprompts layout)."""
    d = tmp_path / "hf"
    d.mkdir()
    rows = [{"prompt": f"[ WP ] Prompt {i} about a cat .", "story": story(120)} for i in range(3)]
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    stats = wp.PairStats()
    records = list(wp.pairs(str(d), stats, min_words=50))
    assert len(records) == 3 and records[0]["prompt"] == "Prompt 0 about a cat."


def test_bad_sources_are_refused(tmp_path, wp_dir):
    (wp_dir / "train.wp_target").write_text("only one line\n")
    with pytest.raises(wp.WritingPromptsError, match="different numbers of lines"):
        list(wp.pairs(str(wp_dir), wp.PairStats()))
    (wp_dir / "valid.wp_target").unlink()
    with pytest.raises(wp.WritingPromptsError, match="missing"):
        list(wp.pairs(str(wp_dir), wp.PairStats()))
    result = runner.invoke(
        app, ["data", "writing-prompts", "--source", str(tmp_path / "nope"), "-o", str(tmp_path / "p.jsonl")]
    )
    assert result.exit_code == 2 and "nope does not exist: give the folder of .wp_source" in result.output
    assert not (tmp_path / "p.jsonl").exists()
