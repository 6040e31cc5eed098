"""Plain-text books to (context, continuation) windows: read, strip Project Gutenberg boilerplate,
drop front and back matter, unwrap paragraphs, split sentences, cut windows, split by book.

Each window becomes one record of chunks.jsonl:
`{"id", "key", "book", "position", "sentence_start", "context", "continuation", "split"}`.
`key` is a hash of the text (the resume key of `reason`, and how duplicates are found); `split` is
"train" or "validation", decided per book so no book feeds both.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import jsonl
from pipeline.atomic import atomic_path
from pipeline.data.sentences import sentences_of

TRAIN, VALIDATION = "train", "validation"


class BookError(ValueError):
    """A book that cannot be read or holds no story text; the message names the file and the fix."""


# --- reading ---------------------------------------------------------------------------------------
def read_text(path: Path, encoding: str | None = None) -> str:
    """The text of a book file: UTF-8 (BOM or not), UTF-16 with BOM, or a detected legacy encoding."""
    data = path.read_bytes()
    if not data.strip():
        raise BookError(f"{path} is empty: give a plain-text book")
    if encoding:
        try:
            return data.decode(encoding)
        except (UnicodeDecodeError, LookupError) as e:
            raise BookError(f"{path} cannot be decoded as {encoding}: {e}") from None
    for bom, codec in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                       (codecs.BOM_UTF16_BE, "utf-16")):  # fmt: skip
        if data.startswith(bom):
            return _check_text(path, data.decode(codec, errors="replace"))
    if b"\x00" in data[:65536]:
        raise BookError(f"{path} looks binary (it has NUL bytes): give a plain-text book (.txt)")
    try:
        return _check_text(path, data.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    best = _guess_encoding(data)
    if best is None:
        raise BookError(
            f"{path} is not UTF-8 and its encoding could not be detected: convert it "
            "(iconv -f ENCODING -t UTF-8) or pass --encoding"
        )
    try:
        return _check_text(path, data.decode(best))
    except UnicodeDecodeError:
        raise BookError(f"{path} looks like {best} but does not decode as it: pass --encoding") from None


def _guess_encoding(data: bytes) -> str | None:
    """charset_normalizer's guess, preferring Windows-1252 among equally good ones: English books that
    are not UTF-8 are nearly always cp1252/Latin-1, and on short samples the detector ties them with
    cp1250 and friends."""
    from charset_normalizer import from_bytes

    matches = [m for m in from_bytes(data[:200_000]) if m.chaos <= 0.3]
    if not matches:
        return None
    floor = min(m.chaos for m in matches)
    for m in matches:
        if m.encoding in ("cp1252", "latin_1", "iso8859_15") and m.chaos <= floor + 0.01:
            return m.encoding
    return min(matches, key=lambda m: m.chaos).encoding


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def _check_text(path: Path, text: str) -> str:
    sample = text[:65536]
    if len(_CONTROL.findall(sample)) > max(8, len(sample) // 200):
        raise BookError(f"{path} looks binary (control characters): give a plain-text book (.txt)")
    return text


# --- Project Gutenberg header and footer --------------------------------------------------------
_HEADER_END = re.compile(
    r"(?im)^[^\n]*(?:\*{3}\s*START\s+OF\s+(?:THE|THIS)\s+PROJECT\s+GUTENBERG[^\n]*"
    r"|\*END\*\s*THE\s+SMALL\s+PRINT[^\n]*)$"
)
_FOOTER_START = re.compile(
    r"(?im)^[ \t]*(?:\*{3}\s*END\s+OF\s+(?:THE\s+|THIS\s+)?PROJECT\s+GUTENBERG"
    r"|END\s+OF\s+(?:THE\s+)?PROJECT\s+GUTENBERG)"
)


def strip_boilerplate(text: str) -> str:
    """The text between the Project Gutenberg header and footer; text without markers is unchanged."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    start = 0
    for m in _HEADER_END.finditer(text, 0, len(text) // 2 + 1):  # headers live in the first half
        start = m.end()
    end = _FOOTER_START.search(text, start)
    return text[start : end.start() if end else len(text)]


# --- front and back matter ------------------------------------------------------------------------
_NUMBER = r"(?:[IVXLCDM]+|\d+|one|two|three|four|five|six|seven|eight|nine|ten|the\s+\w+)"
_HEADING = re.compile(
    r"(?i)^(?:(?:chapter|chap\.|letter|book|part|volume|vol\.|section|adventure|stave|canto|act|scene)"
    rf"\s+{_NUMBER}\b[.:]?(?:\s*[.:—-]?\s*.{{0,70}})?"
    r"|preface|introduction|prologue|epilogue|contents|table\s+of\s+contents|the\s+end|finis|appendix"
    r"|dedication|footnotes|notes|index|glossary|illustrations|list\s+of\s+illustrations)\W{0,3}$"
)
_ROMAN_HEADING = re.compile(r"^(?:[IVXLCDM]+\.?|[IVXLCDM]+\.\s+[A-Z][^.!?]{0,60}|\d{1,3}\.?)$")
_TOC_LINE = re.compile(r"^\s*(?:[IVXLCDM]+|\d+)\.\s+\S|\S.*\s\d{1,4}\s*$")
_CREDIT = re.compile(
    r"(?i)^\W*(?:produced\s+by|transcribed\s+(?:from|by)|e-?text\s+prepared|prepared\s+by|"
    r"this\s+(?:e-?text|e-?book|file)\b|title:|author:|editor:|translator:|illustrator:|release\s+date:|"
    r"posting\s+date:|last\s+updated:|language:|character\s+set\s+encoding:|transcriber[’']?s?\s+notes?|"
    r"\[e-?(?:book|text)\s+#|updated\s+editions|project\s+gutenberg)"
)
_BACK_MATTER = re.compile(
    r"(?i)^(?:the\s+end|finis|footnotes|notes|index|glossary|appendix|transcriber[’']?s?\s+notes?)\W{0,3}$"
)
_ITALIC = re.compile(r"_(?<![\w_]_)(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])")  # starts with a literal: fast
_SPACES = re.compile(r"[ \t\u00a0]{2,}|[\t\u00a0]")


def _is_heading(line: str) -> bool:
    line = line.strip()
    if not line or len(line) > 90:
        return False
    if _HEADING.match(line) or _ROMAN_HEADING.match(line):
        return True
    # An all-capitals line is a title, unless it is shouted dialogue.
    return line.isupper() and not any(q in line for q in "\"“”'‘’") and not line.endswith(("!", "?"))


def _is_matter(lines: list[str]) -> bool:
    """True for a paragraph that is not story text: heading, credits, contents, ornament."""
    first = lines[0].strip()
    if _CREDIT.match(first) or (first.startswith("[") and lines[-1].rstrip().endswith("]")):
        return True
    if not any(c.isalpha() for c in "".join(lines)):
        return True  # "* * * * *"
    if len(lines) == 1:
        return _is_heading(first)
    allowed = 0.4 * len(lines)  # lines that may be prose in a contents list; stop counting past it
    for line in lines:
        if not (_is_heading(line) or _TOC_LINE.match(line)):
            allowed -= 1
            if allowed < 0:
                return False
    return True


def _is_prose(para: str) -> bool:
    return len(para) >= 150 and any(c.islower() for c in para) and para.rstrip("\"'”’)_ ")[-1:] in ".!?—-…"


def _unwrap(lines: list[str]) -> str:
    out = ""
    for line in lines:
        line = line.strip()
        if not out:
            out = line
        elif out.endswith(("--", "—")) or line.startswith(("--", "—")):
            out += line
        else:
            out += " " + line
    return out


def story_paragraphs(text: str) -> list[str]:
    """Unwrapped story paragraphs of a book's text (header, front and back matter removed)."""
    body = strip_boilerplate(text)
    raw = [
        lines
        for block in re.split(r"\n[ \t]*\n", body)
        if (lines := [ln for ln in block.split("\n") if ln.strip()])
    ]
    # Back matter: everything from a closing heading ("THE END", "FOOTNOTES") in the last third on.
    tail = int(len(raw) * 2 / 3) + 1
    cut = next((i for i in range(tail, len(raw)) if _BACK_MATTER.match(raw[i][0].strip())), len(raw))
    paras = [_unwrap(lines) for lines in raw[:cut] if not _is_matter(lines)]
    # Italics (_word_) and runs of spaces, in one pass over the whole text rather than per paragraph.
    paras = _SPACES.sub(" ", _ITALIC.sub(r"\1", "\n".join(paras))).split("\n")
    # Front matter: title page, dedication, epigraphs before the first real paragraph of prose.
    first = next((i for i, p in enumerate(paras) if _is_prose(p)), None)
    if first is None:
        return []
    paras = paras[first:]
    # Signatures and notes after the last paragraph; a closing line of dialogue stays.
    while not _is_prose(paras[-1]) and not re.search(r"[.!?…]['\"”’)]*$", paras[-1]):
        paras.pop()
    return paras


# --- books ----------------------------------------------------------------------------------------
@dataclass
class Book:
    id: str
    path: Path
    sentences: list[tuple[str, bool]]  # (sentence, starts a paragraph)
    digest: str


def load_book(path: Path, encoding: str | None = None, book_id: str | None = None) -> Book:
    paras = story_paragraphs(read_text(path, encoding))
    if not paras:
        raise BookError(
            f"{path} has no story text left after removing the Project Gutenberg header, front and back "
            "matter (contents, credits, headings): is it a whole book?"
        )
    digest = hashlib.sha256("\n\n".join(paras).encode()).hexdigest()
    return Book(book_id or path.stem, path, sentences_of(paras), digest)


def book_sentences(path: Path, encoding: str | None = None) -> list[str]:
    return [s for s, _ in load_book(path, encoding).sentences]


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files, folders (their *.txt, recursively) and glob patterns, in a stable order, without repeats."""
    found: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found += sorted(path.rglob("*.txt"))
        elif path.is_file():
            found.append(path)
        elif glob.has_magic(str(p)):
            matches = sorted(Path(m) for m in glob.glob(str(p), recursive=True) if Path(m).is_file())
            if not matches:
                raise BookError(f"no file matches {p}")
            found += matches
        else:
            raise BookError(f"{p} does not exist: give book files, folders of .txt files or glob patterns")
    if not found:
        raise BookError(f"no .txt books found in {', '.join(map(str, paths))}")
    return list(dict.fromkeys(found))


# --- windows --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WindowSpec:
    """Sentence windows (the write-up's method) unless chunk_chars is set (what the published scripts did)."""

    context_sentences: int = 80
    continuation_sentences: int = 20
    chunk_chars: int | None = None
    split_ratio: float = 0.6
    max_context_chars: int = 12_000
    max_continuation_chars: int = 4_000

    def __post_init__(self) -> None:
        if self.context_sentences < 1 or self.continuation_sentences < 1:
            raise ValueError("--context-sentences and --continuation-sentences must be at least 1")
        if self.chunk_chars is not None and self.chunk_chars < 200:
            raise ValueError(f"--chunk-chars {self.chunk_chars} is too small: use a few thousand characters")
        if not 0.1 <= self.split_ratio <= 0.9:
            raise ValueError(f"--split-ratio {self.split_ratio} must lie between 0.1 and 0.9")
        if self.max_context_chars < 200 or self.max_continuation_chars < 50:
            raise ValueError(
                "the character caps are too small: use at least 200 (context) and 50 (continuation)"
            )

    @property
    def min_sentences(self) -> int:
        return self.context_sentences + self.continuation_sentences if self.chunk_chars is None else 2

    def describe(self) -> str:
        if self.chunk_chars is None:
            return f"{self.context_sentences}+{self.continuation_sentences} sentences"
        return f"{self.chunk_chars} characters split at {self.split_ratio:.0%}"


Sentences = list[tuple[str, bool]]


def join_sentences(sents: Sentences) -> str:
    out = []
    for i, (s, para_start) in enumerate(sents):
        out.append(s if i == 0 else ("\n\n" if para_start else " ") + s)
    return "".join(out)


def _fit_front(sents: Sentences, cap: int) -> Sentences:
    """The newest sentences of a context that fit in cap characters."""
    total, i = 0, len(sents)
    while i > 0 and total + len(sents[i - 1][0]) + 2 <= cap:
        i -= 1
        total += len(sents[i][0]) + 2
    return sents[i:]


def _fit_back(sents: Sentences, cap: int) -> Sentences:
    """The first sentences of a continuation that fit in cap characters."""
    total, i = 0, 0
    while i < len(sents) and total + len(sents[i][0]) + 2 <= cap:
        total += len(sents[i][0]) + 2
        i += 1
    return sents[:i]


def _spans(sents: Sentences, spec: WindowSpec) -> Iterator[tuple[int, int, int]]:
    """(start, split, end) sentence indices of each window, windows back to back."""
    n = len(sents)
    if spec.chunk_chars is None:
        size = spec.context_sentences + spec.continuation_sentences
        for i in range(0, n - size + 1, size):
            yield i, i + spec.context_sentences, i + size
        return
    i = 0
    while i < n:
        j, total = i, 0
        while j < n and (j == i or total + len(sents[j][0]) + 2 <= spec.chunk_chars):
            total += len(sents[j][0]) + 2  # + a separator: a space or a paragraph break
            j += 1
        if j == n and total < spec.chunk_chars * 0.8:
            return  # a short tail is not a window
        k, acc = i, 0
        while k < j - 1 and acc < spec.split_ratio * total:
            acc += len(sents[k][0]) + 2
            k += 1
        yield i, max(k, i + 1), j
        i = j


def windows(sents: Sentences, spec: WindowSpec) -> Iterator[tuple[int, str, str]]:
    """(sentence_start, context, continuation) for each window that fits the character caps."""
    for start, split, end in _spans(sents, spec):
        ctx = _fit_front(sents[start:split], spec.max_context_chars)
        cont = _fit_back(sents[split:end], spec.max_continuation_chars)
        if ctx and cont and split - start >= 1:
            yield start + (split - start - len(ctx)), join_sentences(ctx), join_sentences(cont)


def text_key(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:20]


def assign_splits(book_ids: Iterable[str], val_ratio: float) -> dict[str, str]:
    """Books ordered by a hash of their id; the first ceil(n * val_ratio) go to validation (at least
    one when there are two books or more and val_ratio > 0, never all of them)."""
    ids = sorted(set(book_ids), key=lambda b: (hashlib.sha256(b.encode()).hexdigest(), b))
    n_val = 0
    if val_ratio > 0 and len(ids) >= 2:
        n_val = min(len(ids) - 1, max(1, math.ceil(len(ids) * val_ratio)))
    return {b: (VALIDATION if i < n_val else TRAIN) for i, b in enumerate(ids)}


# --- the whole step -------------------------------------------------------------------------------
@dataclass
class ChunkStats:
    files: int = 0
    books: int = 0
    windows: dict[str, int] = field(default_factory=lambda: {TRAIN: 0, VALIDATION: 0})
    duplicate_windows: int = 0
    skipped: list[str] = field(default_factory=list)  # one line per skipped file, with the reason
    chars_read: int = 0


def build_chunks(
    paths: list[Path],
    spec: WindowSpec,
    val_ratio: float = 0.1,
    encoding: str | None = None,
    on_book: Callable[[Path], None] | None = None,
) -> tuple[list[dict], ChunkStats]:
    """All window records of the books, deduplicated, with their split."""
    stats = ChunkStats(files=len(paths))
    books: list[Book] = []
    seen_digest: dict[str, str] = {}
    used_ids: set[str] = set()
    for path in paths:
        if on_book:
            on_book(path)
        stats.chars_read += path.stat().st_size
        try:
            book = load_book(path, encoding, _unique_id(path.stem, used_ids))
        except BookError as e:
            stats.skipped.append(str(e))
            continue
        if book.digest in seen_digest:
            stats.skipped.append(f"{path} is the same book as {seen_digest[book.digest]}: skipped")
            continue
        if len(book.sentences) < spec.min_sentences:
            stats.skipped.append(
                f"{path} has {len(book.sentences)} sentences, fewer than one window "
                f"({spec.describe()}): skipped; use smaller windows for short texts"
            )
            continue
        seen_digest[book.digest] = str(path)
        used_ids.add(book.id)
        books.append(book)
    splits = assign_splits([b.id for b in books], val_ratio)
    records: list[dict] = []
    seen_keys: set[str] = set()
    for book in books:
        before = len(records)
        for position, (start, context, continuation) in enumerate(windows(book.sentences, spec)):
            key = text_key(context, continuation)
            if key in seen_keys:
                stats.duplicate_windows += 1
                continue
            seen_keys.add(key)
            records.append({"id": f"{book.id}:{position}", "key": key, "book": book.id, "position": position,
                            "sentence_start": start, "context": context, "continuation": continuation,
                            "split": splits[book.id]})  # fmt: skip
            stats.windows[splits[book.id]] += 1
        if len(records) == before:
            stats.skipped.append(f"{book.path} gave no window within the character caps: skipped")
        else:
            stats.books += 1
    return records, stats


def _unique_id(stem: str, used: set[str]) -> str:
    book_id, n = stem, 2
    while book_id in used:
        book_id, n = f"{stem}-{n}", n + 1
    return book_id


def write_jsonl(path: Path, records: Iterable[dict]) -> int:
    """Write records as JSON lines atomically; the number written."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: Path) -> Iterator[dict]:
    """Records of a JSON-lines file; a broken line is an error naming the file and line."""
    try:
        for _, record in jsonl.iter_objects(path):
            yield record
    except jsonl.JsonlError as e:
        raise BookError(str(e)) from None
