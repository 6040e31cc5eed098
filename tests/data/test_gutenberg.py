import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.data import gutenberg

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
    paras = gutenberg.story_paragraphs(text)
    assert len(paras) == 3
    assert not any("Gutenberg" in p or "License" in p for p in paras)


def test_books_without_markers_pass_through():
    assert len(gutenberg.story_paragraphs(prose(4))) == 4


def test_front_and_back_matter_are_dropped():
    text = (
        "A TALE OF TWO VALLEYS\n\nby Somebody Else\n\nProduced by Jane Doe and the Online Team\n\n"
        " CONTENTS\n\n Chapter 1\n Chapter 2\n\n   I. The Valley\n  II. The Hill\n III. The Road\n\n"
        f"CHAPTER I. The Valley\n\n{prose(2, 'A')}\n\n[Illustration: a hill]\n\nChapter 2\n\nII.\n\n"
        f"{prose(2, 'B')}\n\n* * * * *\n\n\u201cYes.\u201d\n\nTHE END\n\nFOOTNOTES\n\n[1] A note on the hill."
    )
    paras = gutenberg.story_paragraphs(text)
    assert paras[0].startswith("The travellerA walked on")
    assert paras[-1] == "\u201cYes.\u201d"  # a one-line paragraph of dialogue is story text
    joined = "\n".join(paras)
    for junk in ("CONTENTS", "Chapter", "CHAPTER", "Produced by", "Illustration", "THE END", "note", "* *"):
        assert junk not in joined
    assert "\n" not in paras[0]  # unwrapped
    assert "valley number 0, and the wind followed" in paras[0]


def test_italics_and_dashes_are_unwrapped():
    paras = gutenberg.story_paragraphs(
        prose(1) + "\n\nShe said it was _very_ late--\nlater than ever. It was.\n\n" + prose(1)
    )
    assert "She said it was very late--later than ever. It was." in paras


def test_corpus_books_are_cleaned(corpus_dir):
    for path in sorted(corpus_dir.glob("*.txt")):
        book = gutenberg.load_book(path)
        text = gutenberg.join_sentences(book.sentences)
        assert len(book.sentences) > 500, path
        assert "Project Gutenberg" not in text and "Produced by" not in text, path
        assert "\r" not in text and "\ufeff" not in text
        assert not any(s.strip().upper() in ("CONTENTS", "I.", "II.", "CHAPTER I") for s, _ in book.sentences)
    sherlock = gutenberg.load_book(corpus_dir / "pg1661-sherlock-holmes.txt").sentences
    assert sherlock[0][0] == "To Sherlock Holmes she is always THE woman."
    assert "ADVENTURE" not in sherlock[0][0]
    franken = gutenberg.load_book(corpus_dir / "pg84-frankenstein.txt").sentences
    assert franken[0][0].startswith("You will rejoice to hear")


# --- where the story starts: front matter by what it is, not by length --------------------------
FIRST_SENTENCES = {
    "pg11-alice.txt": (
        "Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing "
        "to do: once or twice she had peeped into the book her sister was reading, but it had no pictures "
        "or conversations in it, 'and what is the use of a book,' thought Alice 'without pictures or "
        "conversations?'"
    ),
    "pg1661-sherlock-holmes.txt": "To Sherlock Holmes she is always THE woman.",
    "pg5200-metamorphosis.txt": (
        "One morning, when Gregor Samsa woke from troubled dreams, he found himself transformed in his bed "
        "into a horrible vermin."
    ),
    "pg84-frankenstein.txt": (
        "You will rejoice to hear that no disaster has accompanied the commencement of an enterprise which "
        "you have regarded with such evil forebodings."
    ),
}


@pytest.mark.parametrize("name", sorted(FIRST_SENTENCES))
def test_corpus_books_start_at_their_first_sentence(corpus_dir, name):
    sentences = gutenberg.load_book(corpus_dir / name).sentences
    assert sentences[0] == (FIRST_SENTENCES[name], True)


PRIDE = (
    "\ufeffThe Project Gutenberg eBook of Pride and Prejudice, by Jane Austen\r\n\r\n"
    "This eBook is for the use of anyone anywhere in the United States.\r\n\r\n"
    "Title: Pride and Prejudice\r\n\r\nAuthor: Jane Austen\r\n\r\n"
    "*** START OF THE PROJECT GUTENBERG EBOOK PRIDE AND PREJUDICE ***\r\n\r\n\r\n"
    "Produced by Anonymous Volunteers\r\n\r\n\r\n"
    "                            PRIDE AND PREJUDICE\r\n\r\n"
    "                                By Jane Austen\r\n\r\n\r\n"
    "                                   CONTENTS\r\n\r\n"
    " Chapter 1\r\n Chapter 2\r\n Chapter 3\r\n\r\n\r\n\r\n"
    "Chapter 1\r\n\r\n\r\n"
    "It is a truth universally acknowledged, that a single man in possession\r\n"
    "of a good fortune, must be in want of a wife.\r\n\r\n"
    "However little known the feelings or views of such a man may be on his\r\n"
    "first entering a neighbourhood, this truth is so well fixed in the minds\r\n"
    "of the surrounding families, that he is considered the rightful property\r\n"
    "of some one or other of their daughters.\r\n\r\n"
    "\u201cMy dear Mr. Bennet,\u201d said his lady to him one day, \u201chave you heard that\r\n"
    "Netherfield Park is let at last?\u201d\r\n\r\n"
    "Mr. Bennet replied that he had not.\r\n\r\n"
    "\u201cBingley.\u201d\r\n\r\n\r\n\r\nChapter 2\r\n\r\n\r\n"
    "Mr. Bennet was among the earliest of those who waited on Mr. Bingley.\r\n\r\n"
    "*** END OF THE PROJECT GUTENBERG EBOOK PRIDE AND PREJUDICE ***\r\n\r\nThe Full License.\r\n"
)


def test_a_short_first_line_of_prose_is_the_first_sentence(tmp_path):
    book = gutenberg.load_book(write(tmp_path / "pride.txt", PRIDE, newline="\n"))
    sentences = [s for s, _ in book.sentences]
    assert sentences[0] == (
        "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
        "must be in want of a wife."
    )
    assert "Mr. Bennet replied that he had not." in sentences and "\u201cBingley.\u201d" in sentences
    assert sentences[-1] == "Mr. Bennet was among the earliest of those who waited on Mr. Bingley."
    text = gutenberg.join_sentences(book.sentences)
    for junk in ("PRIDE AND PREJUDICE", "By Jane Austen", "CONTENTS", "Chapter", "Produced", "License"):
        assert junk not in text


ILLUSTRATED = """*** START OF THE PROJECT GUTENBERG EBOOK A TALE ***

                            [Illustration:

                             GEORGE ALLEN
                               PUBLISHER

                             RUSKIN HOUSE
                                   ]

                                A TALE
                                  by
                             Jane Doe,

                           with a Preface by
                           George Saintsbury

                       Ruskin House.        Cross Road.

PREFACE.

_Walt Whitman has somewhere a fine and just distinction between loving
by allowance and loving with personal love. This distinction applies
to books as well as to men and women; and in the case of the not very
numerous authors who are the objects of the personal affection, it
brings a curious consequence with it._

_In the first place, the book was in its first shape written very early,
somewhere about 1796, when the author was barely twenty-one._

_GEORGE SAINTSBURY._

[Illustration: List of Illustrations.]

                                                                    PAGE

Frontispiece                                                          iv

Heading to Chapter I.                                                  1

\u201cHe came down to see the place\u201d                                        12

[Illustration: \u00b7A TALE\u00b7

Chapter I.]

Snow fell.

\u201cWho is there?\u201d asked the keeper.

[Illustration:

\u201cHe came down to see the place\u201d

[_Copyright 1894 by George Allen._]]

Nobody answered him, and the lamp went out.
"""


def test_an_illustrated_edition_starts_after_its_preface_and_list_of_illustrations():
    paras = gutenberg.story_paragraphs(ILLUSTRATED)
    assert paras == [
        "Snow fell.",
        "\u201cWho is there?\u201d asked the keeper.",
        "Nobody answered him, and the lamp went out.",
    ]  # the caption inside an illustration spanning blank lines is no story


WHALE = "\n\n".join(
    [
        "MOBY-DICK;",
        "or, THE WHALE.",
        "By Herman Melville",
        "CONTENTS",
        "ETYMOLOGY.",
        "EXTRACTS (Supplied by a Sub-Sub-Librarian).",
    ]
    + [f"CHAPTER {i}. Title number {i}." for i in range(1, 8)]
    + [
        "Original Transcriber\u2019s Notes:",
        "This text is a combination of etexts, one from the now-defunct ERIS\nproject at Virginia Tech.",
        "  ETYMOLOGY.",
        "  (Supplied by a Late Consumptive Usher to a Grammar School.)",
        "  The pale Usher\u2014threadbare in coat, heart, body, and brain; I see him\n  now. He was ever"
        " dusting his old lexicons and grammars.",
        "  \u201cWhile you take in hand to school others, you deliver that which is not true.\u201d\n"
        "  \u2014_Hackluyt._",
        "  EXTRACTS. (Supplied by a Sub-Sub-Librarian).",
        "  It will be seen that this mere painstaking burrower and grub-worm of\n  a poor devil of a Sub-Sub"
        " appears to have gone through the long Vaticans.",
        "  \u201cAnd God created great whales.\u201d \u2014_Genesis_.",
        "CHAPTER 1. Loomings.",
        "Call me Ishmael. Some years ago\u2014never mind how long precisely\u2014having\n"
        "little or no money in my purse, I thought I would sail about a little.",
        "CHAPTER 2. The Carpet-Bag.",
        "I stuffed a shirt or two into my old carpet-bag.",
    ]
)


def test_contents_etymology_and_extracts_come_before_call_me_ishmael():
    sentences = [s for s, _ in gutenberg.sentences_of(gutenberg.story_paragraphs(WHALE))]
    assert sentences[0] == "Call me Ishmael."
    assert sentences[-1] == "I stuffed a shirt or two into my old carpet-bag."
    assert not any("Usher" in s or "whales" in s or "CHAPTER" in s or "Title" in s for s in sentences)


GATSBY = """                           The Great Gatsby
                                  by
                          F. Scott Fitzgerald

                           Table of Contents

I
II
III

                              Once again
                                  to
                                 Zelda

  Then wear the gold hat, if that will move her;
  If you can bounce high, bounce for her too,
  Till she cry \u201cLover, gold-hatted, high-bouncing lover,
  I must have you!\u201d

  Thomas Parke d\u2019Invilliers

                                  I

In my younger and more vulnerable years my father gave me some advice
that I\u2019ve been turning over in my mind ever since.
"""


def test_a_dedication_and_a_verse_epigraph_are_front_matter():
    assert gutenberg.story_paragraphs(GATSBY) == [
        "In my younger and more vulnerable years my father gave me some advice that I\u2019ve been turning "
        "over in my mind ever since."
    ]


MANUSCRIPT = """THE LAST MOTEL

by Jo Writer

It was late.

The sign over the office said:

NO VACANCY

She went in anyway.

\u201cHELLO?\u201d

Nobody answered. HELP WANTED was taped to the desk.

CLOSED

Chapter Two

THE MORNING AFTER

Morning came.

STOP!
"""


def test_a_manuscript_of_short_paragraphs_keeps_every_line_of_story_in_capitals_or_not():
    assert gutenberg.story_paragraphs(MANUSCRIPT) == [
        "It was late.",
        "The sign over the office said:",
        "NO VACANCY",  # a sign in the text
        "She went in anyway.",
        "\u201cHELLO?\u201d",  # a shouted line of dialogue
        "Nobody answered. HELP WANTED was taped to the desk.",
        "CLOSED",
        "Morning came.",  # "Chapter Two" and its title in capitals are headings
        "STOP!",
    ]


def test_a_manuscript_without_title_or_headings_starts_at_its_first_line():
    text = "Snow fell.\n\nShe waited.\n\n\u201cWho?\u201d\n\nNo one came. The night went on.\n"
    assert gutenberg.story_paragraphs(text) == [
        "Snow fell.",
        "She waited.",
        "\u201cWho?\u201d",
        "No one came. The night went on.",
    ]


def test_all_capital_headings_are_dropped_wherever_they_stand():
    text = (
        "BOOK THE FIRST\n\nCHAPTER I.\n\nTHE PERIOD\n\nIt was the best of times.\n\n"
        "A bell rang. The shop was shut.\n\nCHAPTER II.\n\nTHE MAIL\n\nIt was the Dover road.\n\n"
        "BOOK THE SECOND\n\nCHAPTER I.\n\nFIVE YEARS LATER\n\nTellson's Bank was an old place.\n"
    )
    assert gutenberg.story_paragraphs(text) == [
        "It was the best of times.",
        "A bell rang. The shop was shut.",
        "It was the Dover road.",
        "Tellson's Bank was an old place.",
    ]


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
    paras = gutenberg.story_paragraphs(gutenberg.read_text(path))
    assert paras[-1].startswith("\u201cCaf\u00e9 cr\u00e8me,\u201d said the na\u00efve waiter.")


def test_a_legacy_encoding_deep_in_an_ascii_book_is_detected(tmp_path):
    text = (
        prose(2000)
        + "\n\n\u201cCaf\u00e9 cr\u00e8me,\u201d said the na\u00efve waiter. He bowed. It was late."
    )
    path = write(tmp_path / "late.txt", text, encoding="cp1252")
    assert path.read_bytes().index(b"\x93") > 300_000  # the first byte that is not ASCII
    assert gutenberg.story_paragraphs(gutenberg.read_text(path))[-1].startswith(
        "\u201cCaf\u00e9 cr\u00e8me,\u201d"
    )


def test_bad_files_are_refused_clearly(tmp_path):
    empty = write(tmp_path / "empty.txt", "  \n\n")
    with pytest.raises(gutenberg.BookError, match="empty"):
        gutenberg.read_text(empty)
    binary = tmp_path / "image.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 20)
    with pytest.raises(gutenberg.BookError, match="binary"):
        gutenberg.read_text(binary)
    front = write(
        tmp_path / "front.txt", "A TALE\n\nby Somebody\n\nCONTENTS\n\nChapter 1\nChapter 2\n\nProduced by X"
    )
    with pytest.raises(gutenberg.BookError, match="no story text"):
        gutenberg.load_book(front)
    with pytest.raises(gutenberg.BookError, match="does not exist"):
        gutenberg.expand_paths([tmp_path / "missing.txt"])
    with pytest.raises(gutenberg.BookError, match="no file matches"):
        gutenberg.expand_paths([str(tmp_path / "*.md")])


def test_cli_reports_every_skipped_book_and_fails_when_nothing_is_left(tmp_path):
    write(tmp_path / "empty.txt", "")
    write(tmp_path / "short.txt", prose(2))
    code, out = run("data", "gutenberg", str(tmp_path), "-o", str(tmp_path / "c.jsonl"))
    assert code == 2
    assert "empty.txt is empty" in out and "fewer than one window" in out and "nothing written" in out
    assert not (tmp_path / "c.jsonl").exists()


# --- windows --------------------------------------------------------------------------------------
def test_sentence_windows(tmp_path, corpus_dir):
    book = gutenberg.load_book(corpus_dir / "pg5200-metamorphosis.txt")
    spec = gutenberg.WindowSpec(context_sentences=8, continuation_sentences=2)
    wins = list(gutenberg.windows(book.sentences, spec))
    assert len(wins) == len(book.sentences) // 10
    start, context, continuation = wins[1]
    assert start == 10
    assert context.startswith(book.sentences[10][0]) and continuation.endswith(book.sentences[19][0])
    assert continuation.startswith(book.sentences[18][0])


def test_character_windows_split_on_a_sentence_boundary(corpus_dir):
    book = gutenberg.load_book(corpus_dir / "pg1661-sherlock-holmes.txt")
    spec = gutenberg.WindowSpec(chunk_chars=6500, split_ratio=0.6)
    wins = list(gutenberg.windows(book.sentences, spec))
    assert len(wins) > 50
    sentences = {s for s, _ in book.sentences}
    for _, context, continuation in wins[:20]:
        total = len(context) + len(continuation)
        assert 5000 < total <= 6500
        assert 0.5 < len(context) / total < 0.7
        assert any(context.endswith(s) for s in sentences)
        assert any(continuation.startswith(s) for s in sentences)


def test_caps_end_a_part_early_and_the_next_window_starts_there():
    long_sentence = ("\u201cAnd then, " + "and then, " * 300 + "we stopped.\u201d", False)
    sents = [(f"Sentence number {i}.", i % 3 == 0) for i in range(30)]
    sents[25] = long_sentence
    spec = gutenberg.WindowSpec(
        context_sentences=20, continuation_sentences=10, max_context_chars=200, max_continuation_chars=400
    )
    plan = gutenberg.plan_windows(sents, spec)
    wins = list(gutenberg.windows(sents, spec))
    for start, context, continuation in wins:
        assert len(context) <= 200 and len(continuation) <= 400 and context.startswith(sents[start][0])
    assert "\n\n" in wins[0][1]  # paragraph breaks survive
    covered = {i for a, _, e in plan.spans for i in range(a, e)}
    assert plan.dropped == {25: "each longer than a context may be and than a continuation may be"}
    assert covered == set(range(30)) - {25}  # the cap moved the windows; nothing else was lost
    assert plan.spans[0] == (0, 10, 20)  # 10 sentences of ~20 characters fill the 200-character context


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
    assert len(lines) == len(gutenberg.load_book(corpus_dir / "pg5200-metamorphosis.txt").sentences)
