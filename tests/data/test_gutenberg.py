import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.data import gutenberg as g

runner = CliRunner()


def prose(n: int, tag: str = "") -> str:
    """n hard-wrapped paragraphs of three sentences each."""
    paras = []
    for i in range(n):
        paras.append(
            f"The traveller{tag} walked on through the valley number {i}, and the\n"
            f"wind followed her all the way. She did not stop to rest. Mr. Grey\n"
            f"watched from the hill and said nothing at all about it."
        )
    return "\n\n".join(paras)


def write(path: Path, text: str, encoding: str = "utf-8", newline: str = "\n") -> Path:
    path.write_bytes(text.replace("\n", newline).encode(encoding))
    return path


def run(*args: str):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


# --- cleaning -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "header, footer",
    [
        (
            "*** START OF THE PROJECT GUTENBERG EBOOK A TALE ***",
            "*** END OF THE PROJECT GUTENBERG EBOOK A TALE ***",
        ),
        (
            "*** START OF THIS PROJECT GUTENBERG EBOOK A TALE ***",
            "*** END OF THIS PROJECT GUTENBERG EBOOK A TALE ***",
        ),
        (
            "***START OF THE PROJECT GUTENBERG EBOOK A TALE***",
            "***END OF THE PROJECT GUTENBERG EBOOK A TALE***",
        ),
        (
            "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*",
            "End of the Project Gutenberg EBook of A Tale",
        ),
        (
            "*** START OF THE PROJECT GUTENBERG EBOOK A TALE ***",
            "End of Project Gutenberg's A Tale, by Nobody",
        ),
    ],
)
def test_header_and_footer_variants_are_stripped(header, footer):
    text = (
        f"The Project Gutenberg EBook of A Tale\n\nLicense.\n\n{header}\n\n{prose(3)}\n\n{footer}\n\nLicense."
    )
    paras = g.story_paragraphs(text)
    assert len(paras) == 3
    assert not any("Gutenberg" in p or "License" in p for p in paras)


def test_books_without_markers_pass_through():
    assert len(g.story_paragraphs(prose(4))) == 4


def test_front_and_back_matter_are_dropped():
    text = (
        "A TALE OF TWO VALLEYS\n\nby Somebody Else\n\nProduced by Jane Doe and the Online Team\n\n"
        " CONTENTS\n\n Chapter 1\n Chapter 2\n\n   I. The Valley\n  II. The Hill\n III. The Road\n\n"
        f"CHAPTER I. The Valley\n\n{prose(2, 'A')}\n\n[Illustration: a hill]\n\nChapter 2\n\nII.\n\n"
        f"{prose(2, 'B')}\n\n* * * * *\n\n\u201cYes.\u201d\n\nTHE END\n\nFOOTNOTES\n\n[1] A note on the hill."
    )
    paras = g.story_paragraphs(text)
    assert paras[0].startswith("The travellerA walked on")
    assert paras[-1] == "\u201cYes.\u201d"  # a one-line paragraph of dialogue is story text
    joined = "\n".join(paras)
    for junk in ("CONTENTS", "Chapter", "CHAPTER", "Produced by", "Illustration", "THE END", "note", "* *"):
        assert junk not in joined
    assert "\n" not in paras[0]  # unwrapped
    assert "valley number 0, and the wind followed" in paras[0]


def test_italics_and_dashes_are_unwrapped():
    paras = g.story_paragraphs(
        prose(1) + "\n\nShe said it was _very_ late--\nlater than ever. It was.\n\n" + prose(1)
    )
    assert "She said it was very late--later than ever. It was." in paras


def test_corpus_books_are_cleaned(corpus_dir):
    for path in sorted(corpus_dir.glob("*.txt")):
        book = g.load_book(path)
        text = g.join_sentences(book.sentences)
        assert len(book.sentences) > 500, path
        assert "Project Gutenberg" not in text and "Produced by" not in text, path
        assert "\r" not in text and "\ufeff" not in text
        assert not any(s.strip().upper() in ("CONTENTS", "I.", "II.", "CHAPTER I") for s, _ in book.sentences)
    sherlock = g.load_book(corpus_dir / "pg1661-sherlock-holmes.txt").sentences
    assert sherlock[0][0] == "To Sherlock Holmes she is always THE woman."
    assert "ADVENTURE" not in sherlock[0][0]
    franken = g.load_book(corpus_dir / "pg84-frankenstein.txt").sentences
    assert franken[0][0].startswith("You will rejoice to hear")


# --- encodings and bad input ----------------------------------------------------------------------
ENCODINGS = [
    ("utf-8", b"", "\n"),
    ("utf-8", b"\xef\xbb\xbf", "\r\n"),
    ("utf-16", b"", "\r\n"),
    ("cp1252", b"", "\r\n"),
]


@pytest.mark.parametrize("encoding, bom, newline", ENCODINGS)
def test_encodings(tmp_path, encoding, bom, newline):
    text = (
        prose(3) + "\n\n\u201cCaf\u00e9 cr\u00e8me,\u201d said the na\u00efve waiter. He bowed. It was late."
    )
    path = tmp_path / "book.txt"
    path.write_bytes(bom + text.replace("\n", newline).encode(encoding))
    paras = g.story_paragraphs(g.read_text(path))
    assert paras[-1].startswith("\u201cCaf\u00e9 cr\u00e8me,\u201d said the na\u00efve waiter.")


def test_bad_files_are_refused_clearly(tmp_path):
    empty = write(tmp_path / "empty.txt", "  \n\n")
    with pytest.raises(g.BookError, match="empty"):
        g.read_text(empty)
    binary = tmp_path / "image.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 20)
    with pytest.raises(g.BookError, match="binary"):
        g.read_text(binary)
    front = write(
        tmp_path / "front.txt", "A TALE\n\nby Somebody\n\nCONTENTS\n\nChapter 1\nChapter 2\n\nProduced by X"
    )
    with pytest.raises(g.BookError, match="no story text"):
        g.load_book(front)
    with pytest.raises(g.BookError, match="does not exist"):
        g.expand_paths([tmp_path / "missing.txt"])
    with pytest.raises(g.BookError, match="no file matches"):
        g.expand_paths([str(tmp_path / "*.md")])


def test_cli_reports_every_skipped_book_and_fails_when_nothing_is_left(tmp_path):
    write(tmp_path / "empty.txt", "")
    write(tmp_path / "short.txt", prose(2))
    code, out = run("data", "gutenberg", str(tmp_path), "-o", str(tmp_path / "c.jsonl"))
    assert code == 2
    assert "empty.txt is empty" in out and "fewer than one window" in out and "nothing written" in out
    assert not (tmp_path / "c.jsonl").exists()


# --- windows --------------------------------------------------------------------------------------
def test_sentence_windows(tmp_path, corpus_dir):
    book = g.load_book(corpus_dir / "pg5200-metamorphosis.txt")
    spec = g.WindowSpec(context_sentences=8, continuation_sentences=2)
    wins = list(g.windows(book.sentences, spec))
    assert len(wins) == len(book.sentences) // 10
    start, context, continuation = wins[1]
    assert start == 10
    assert context.startswith(book.sentences[10][0]) and continuation.endswith(book.sentences[19][0])
    assert continuation.startswith(book.sentences[18][0])


def test_character_windows_split_on_a_sentence_boundary(corpus_dir):
    book = g.load_book(corpus_dir / "pg1661-sherlock-holmes.txt")
    spec = g.WindowSpec(chunk_chars=6500, split_ratio=0.6)
    wins = list(g.windows(book.sentences, spec))
    assert len(wins) > 50
    sentences = {s for s, _ in book.sentences}
    for _, context, continuation in wins[:20]:
        total = len(context) + len(continuation)
        assert 5000 < total <= 6500
        assert 0.5 < len(context) / total < 0.7
        assert any(context.endswith(s) for s in sentences)
        assert any(continuation.startswith(s) for s in sentences)


def test_caps_keep_windows_sane():
    long_sentence = ("\u201cAnd then, " + "and then, " * 300 + "we stopped.\u201d", False)
    sents = [(f"Sentence number {i}.", i % 3 == 0) for i in range(30)]
    sents[25] = long_sentence
    spec = g.WindowSpec(
        context_sentences=20, continuation_sentences=10, max_context_chars=200, max_continuation_chars=400
    )
    ((start, context, continuation),) = g.windows(sents, spec)
    assert len(context) <= 200 and context.endswith("Sentence number 19.") and start > 0
    assert len(continuation) <= 400 and "And then" not in continuation  # the long one is cut away
    assert "\n\n" in context  # paragraph breaks survive


def test_split_by_book_is_deterministic_and_never_inside_a_book(tmp_path, corpus_dir):
    out1, out2 = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    args = ["--context-sentences", "40", "--continuation-sentences", "10", "--val-ratio", "0.25"]
    assert run("data", "gutenberg", str(corpus_dir), "-o", str(out1), *args)[0] == 0
    assert run("data", "gutenberg", str(corpus_dir / "*.txt"), "-o", str(out2), *args)[0] == 0
    assert out1.read_bytes() == out2.read_bytes()
    records = [json.loads(line) for line in out1.read_text().splitlines()]
    splits: dict[str, set] = {}
    for r in records:
        splits.setdefault(r["book"], set()).add(r["split"])
        assert set(r) == {
            "id",
            "key",
            "book",
            "position",
            "sentence_start",
            "context",
            "continuation",
            "split",
        }
    assert all(len(s) == 1 for s in splits.values())
    assert {next(iter(s)) for s in splits.values()} == {"train", "validation"}
    assert len({r["key"] for r in records}) == len(records)


def test_duplicate_books_and_windows_are_removed(tmp_path, corpus_dir):
    src = (corpus_dir / "pg5200-metamorphosis.txt").read_bytes()
    (tmp_path / "a.txt").write_bytes(src)
    (tmp_path / "b.txt").write_bytes(src.replace(b"\r\n", b"\n"))  # same book, other line ends
    code, out = run(
        "data",
        "gutenberg",
        str(tmp_path),
        "-o",
        str(tmp_path / "c.jsonl"),
        "--context-sentences",
        "40",
        "--continuation-sentences",
        "10",
    )
    assert code == 0, out
    assert "same book as" in out
    records = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert {r["book"] for r in records} == {"a"}


def test_output_loads_with_datasets(tmp_path, corpus_dir):
    out = tmp_path / "chunks.jsonl"
    books = [str(corpus_dir / "pg11-alice.txt"), str(corpus_dir / "pg5200-metamorphosis.txt")]
    code, output = run("data", "gutenberg", *books, "-o", str(out), "--chunk-chars", "6500")
    assert code == 0, output
    import datasets

    ds = datasets.load_dataset("json", data_files=str(out), split="train")
    assert len(ds) > 10 and set(ds.column_names) >= {"context", "continuation", "split"}


def test_sentences_command_prints_one_sentence_per_line(corpus_dir):
    code, out = run("data", "sentences", str(corpus_dir / "pg5200-metamorphosis.txt"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == (
        "One morning, when Gregor Samsa woke from troubled dreams, he found himself "
        "transformed in his bed into a horrible vermin."
    )
    assert len(lines) == len(g.load_book(corpus_dir / "pg5200-metamorphosis.txt").sentences)
