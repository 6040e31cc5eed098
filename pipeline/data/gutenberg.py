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
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.data.sentences import sentences_of
from plumbing import jsonl

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
            raise BookError(f"{path} cannot be decoded as {encoding}: {e}") from e
    for bom, codec in (
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            return _check_text(path, data.decode(codec, errors="replace"))
    if b"\x00" in data[:65536]:
        raise BookError(f"{path} looks binary (it has NUL bytes): give a plain-text book (.txt)")
    try:
        return _check_text(path, data.decode("utf-8"))
    except UnicodeDecodeError as e:
        # The detector reads a sample: the start, and the first bytes that are not UTF-8 (which may
        # lie deep in a book that is plain ASCII up to there).
        sample = data[:100_000] + b"\n" + data[max(100_000, e.start - 50_000) : e.start + 50_000]
    best = _guess_encoding(sample)
    if best is None:
        raise BookError(
            f"{path} is not UTF-8 and its encoding could not be detected: convert it "
            "(iconv -f ENCODING -t UTF-8) or pass --encoding"
        )
    try:
        return _check_text(path, data.decode(best))
    except UnicodeDecodeError as exc:
        raise BookError(f"{path} looks like {best} but does not decode as it: pass --encoding") from exc


def _guess_encoding(data: bytes) -> str | None:
    """charset_normalizer's guess, preferring Windows-1252 among equally good ones: English books that
    are not UTF-8 are nearly always cp1252/Latin-1, and on short samples the detector ties them with
    cp1250 and friends."""
    from charset_normalizer import from_bytes

    matches = [m for m in from_bytes(data) if m.chaos <= 0.3]
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
# Blocks (runs of non-blank lines) are sorted by what they are, not by how long they are: a chapter
# heading, the heading of a front section (preface, contents, ...), an all-capitals line, a contents
# entry, other matter (credits, illustrations, ornaments), or text. The story starts at its first
# chapter heading that is followed by text, unless real prose comes before it (a book without
# headings, or a first part without one); everything before the start that is not story is dropped.
_NUMBER = (
    r"(?:[IVXLCDM]+|\d+|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|\w+teen|twenty\S*"
    r"|thirty\S*|first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|last|the\s+\w+)"
)
_CHAPTER = re.compile(
    r"(?i)^(?:(?:chapter|chap\.|letter|book|part|volume|vol\.|section|adventure|stave|canto|act|scene)"
    rf"\s+{_NUMBER}\b(?:\s*[.:—–-]\s*.{{0,80}}|\s+[\"“'‘(\[_]?[A-Z0-9].{{0,80}})?"
    r"|prologue|epilogue)\W{0,3}$"
)
_ROMAN_HEADING = re.compile(r"^(?:[IVXLCDM]+\.?|[IVXLCDM]+\.\s+[A-Z][^.!?]{0,60}|\d{1,3}\.?)$")
_FRONT_HEADING = re.compile(
    r"(?i)^\W{0,3}(?:the\s+|an?\s+)?(?:preface|introduction|foreword|prefatory\s+note|contents|table\s+of\s+contents"
    r"|etymology|extracts|dedication|epigraph|acknowledge?ments|(?:list\s+of\s+)?illustrations"
    r"|(?:original\s+)?transcriber[’']?s?\s+notes?|(?:author|editor|translator)[’']?s\s+note|note"
    r"|a\s+note\s+on\s+the\s+text|about\s+the\s+author|biographical\s+notice|advertisement)"
    r"(?:[.:]?\s*\([^)]{0,80}\))?\W{0,3}$"
)
_TOC_LINE = re.compile(r"^\s*(?:[IVXLCDM]+|\d+)\.\s+\S|\S.*\s\d{1,4}\s*$")
_NUMBERED = re.compile(r"^\s*(?:[IVXLCDM]+|\d+)\.\s+\S")  # "IV. The Hill"
_LETTER = re.compile(r"[^\W\d_]")
_TOC_ENTRY = re.compile(r"^\s*\S.*?(?:\s{2,}|\.{3,}\s*)(?:\d{1,4}|[ivxlc]{1,7})\s*$")  # "Title ...  12"
_CREDIT = re.compile(
    r"(?i)^\W*(?:produced\s+by|transcribed\s+(?:from|by)|e-?text\s+prepared|prepared\s+by|"
    r"this\s+(?:e-?text|e-?book|file)\b|title:|author:|editor:|translator:|illustrator:|release\s+date:|"
    r"posting\s+date:|last\s+updated:|language:|character\s+set\s+encoding:|"
    r"\[e-?(?:book|text)\s+#|updated\s+editions|project\s+gutenberg)"
)
# Title-page credits, only before the story starts (a story may well say "translated by").
_FRONT_CREDIT = re.compile(
    r"(?i)^\W*(?:(?:translated|edited|illustrated|adapted|selected|compiled)\s+(?:by|from|into)|copyright"
    r"|all\s+rights\s+reserved|entered\s+according\s+to|printed\s+(?:in|by|at)|published\s+by"
    r"|first\s+published|with\s+(?:an?\s+)?(?:preface|introduction|illustrations|notes))"
)
_BACK_MATTER = re.compile(
    r"(?i)^(?:the\s+end|finis|footnotes|notes|index|glossary|appendix|transcriber[’']?s?\s+notes?)\W{0,3}$"
)
_ATTRIBUTION = re.compile(r"(?:^|[”\"’]\s*)(?:—|--)\s*_?[A-Z][^\n]{0,80}$")  # an epigraph's "—Milton"
_SUBTITLE = re.compile(r"^[(\[]?_[^_]+_[)\]]?\W{0,2}$")  # "_To Mrs. Saville, England._" under a heading
_DATE = re.compile(
    r"(?i)\b(?:jan|feb|mar|apr|may|jun|jul|aug|sept?|oct|nov|dec)[a-z]*\.?\s+\d|\b\d{1,2}(?:st|nd|rd|th)\b"
    r"|\b1[5-9]\d\d\b"
)
_TERMINAL = re.compile(r"[.!?…]['\"”’)\]_*]*$")
_ITALIC = re.compile(r"_(?<![\w_]_)(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])")  # starts with a literal: fast
_SPACES = re.compile(r"[ \t\u00a0]{2,}|[\t\u00a0]")

TEXT, CHAPTER, FRONT, CAPS, TOC, MATTER = "text", "chapter", "front", "caps", "toc", "matter"


def _is_chapter(line: str) -> bool:
    line = line.strip()
    return 0 < len(line) <= 90 and bool(_CHAPTER.match(line) or _ROMAN_HEADING.match(line))


def _is_caps(line: str) -> bool:
    """An all-capitals line that is not shouted dialogue (a title, a heading, or a sign in the story)."""
    line = line.strip()
    return line.isupper() and not any(q in line for q in '"“”‘') and not line.endswith(("!", "?"))


def _kind(lines: list[str]) -> str:
    first, text = lines[0].strip(), " ".join(ln.strip() for ln in lines)
    if first.startswith("[") and text.endswith("]"):  # an illustration, maybe holding a heading
        inner = [ln.strip(" []") for ln in lines]
        inner = [re.sub(r"(?i)^illustration:?\s*", "", ln).strip(" ·") for ln in inner]
        if any(_is_chapter(ln) for ln in inner if ln):
            return CHAPTER
        return FRONT if any(_FRONT_HEADING.match(ln) for ln in inner if ln) else MATTER
    if _FRONT_HEADING.match(text):
        return FRONT
    if _CREDIT.match(first) or not _LETTER.search(text):
        return MATTER  # credits, "* * * * *"
    titled = _is_chapter(first) and not any(_is_chapter(ln) for ln in lines[1:])
    if len(lines) == 1 or (titled and (len(lines) <= 3 or _is_title(text))):
        if _is_chapter(first):
            return CHAPTER  # "CHAPTER I." or "CHAPTER I.\nDown the Rabbit-Hole"
        if _TOC_ENTRY.match(first):
            return TOC
        return CAPS if _is_caps(first) else TEXT
    prose = 0.4 * len(lines)  # lines a contents list may hold that are no entry; stop counting past it
    for line in lines:
        if not _is_entry(line):
            prose -= 1
            if prose < 0:
                return CAPS if all(_is_caps(ln) for ln in lines) else TEXT
    return TOC


def _is_entry(line: str) -> bool:
    """A line of a contents list: a chapter heading, "IV. The Hill", "The Hill ....... 12"."""
    if line.rstrip()[-1:] in "0123456789ivxlc" and (_TOC_LINE.match(line) or _TOC_ENTRY.match(line)):
        return True
    return bool(_NUMBERED.match(line)) or _is_chapter(line)


def _is_sentence(text: str) -> bool:
    """Reads like a line of story: dialogue, or a sentence with a lower-case word in it."""
    text = text.strip()
    if text[:1] in "\"“‘'":
        return True
    words = text.split()
    return bool(_TERMINAL.search(text)) and len(words) >= 2 and any(w[:1].islower() for w in words[1:])


_SMALL_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "as",
        "at",
        "but",
        "by",
        "for",
        "from",
        "in",
        "into",
        "of",
        "on",
        "or",
        "the",
        "to",
        "with",
    ]
)


def _is_title(text: str) -> bool:
    """Title case: "Lucy As a Work of Art", "How Miss Bartlett's Boiler Was So Tiresome"."""
    words = [w for w in text.split() if w[:1].isalpha() and w.lower() not in _SMALL_WORDS]
    return bool(words) and sum(w[0].isupper() for w in words) >= 0.8 * len(words)


def _is_front_text(lines: list[str]) -> bool:
    """Text before the story that is not story: title-page lines, dedications, verse epigraphs."""
    text = " ".join(ln.strip() for ln in lines)
    if _FRONT_CREDIT.match(text) or _ATTRIBUTION.search(text) or not _is_sentence(text):
        return True
    # Verse (an epigraph): short lines, each starting with a capital.
    stripped = [ln.strip().lstrip("\"“‘'_") for ln in lines]
    return len(lines) >= 2 and all(len(ln) <= 60 and ln[:1].isupper() for ln in stripped)


def _is_subtitle(lines: list[str]) -> bool:
    """A line under a chapter heading that names or dates it: "The Bertolini", "_To Mrs. Saville._",
    "St. Petersburgh, Dec. 11th, 17—." (never dialogue)."""
    text = " ".join(ln.strip() for ln in lines)
    if len(lines) > 2 or len(text) > 100 or text[:1] in "\"“‘'":
        return False
    if _SUBTITLE.match(text):
        return True
    if len(text) > 70 or _is_sentence(text):
        return False
    return text[-1].isalnum() or text.endswith(")") or bool(_DATE.search(text))  # not "It was late—"


def _heading_run(kinds: list[str], i: int) -> int:
    """The end of the run of headings and matter that starts at block i."""
    while i < len(kinds) and kinds[i] in (CHAPTER, CAPS, FRONT, TOC, MATTER):
        i += 1
    return i


def _chapter_runs(blocks: list[list[str]], kinds: list[str]) -> Iterator[tuple[int, int, int]]:
    """(start, end of headings, end of subtitles) of each real chapter heading: a run holding one or
    two chapter headings ("BOOK I" over "CHAPTER I"), not a contents list of many, followed by text."""
    i = 0
    while i < len(kinds):
        if kinds[i] != CHAPTER:
            i += 1
            continue
        start, end = i, _heading_run(kinds, i)
        sub = end
        while sub < len(kinds) and kinds[sub] == TEXT and _is_subtitle(blocks[sub]) and sub - end < 3:
            sub = _heading_run(kinds, sub + 1)
        if kinds[start:sub].count(CHAPTER) <= 2 and sub < len(kinds) and kinds[sub] == TEXT:
            yield start, end, sub
        i = sub if sub > i else i + 1


def _story_start(blocks: list[list[str]], kinds: list[str], first_chapter: int | None) -> int:
    """Index of the block the story starts at."""
    in_front, prose, chars = False, [], 0
    stop = len(kinds) if first_chapter is None else first_chapter
    for i in range(stop):
        if kinds[i] == FRONT:
            in_front = True
        elif kinds[i] == CHAPTER:
            in_front = False
        elif kinds[i] == TEXT and not in_front and not _is_front_text(blocks[i]):
            prose.append(i)
            chars += sum(len(ln.strip()) for ln in blocks[i])
            # Three paragraphs or a long one before any heading: the story has begun (a dedication
            # or an epigraph in prose is one short paragraph, maybe two).
            if len(prose) >= 3 or chars >= 400:
                return prose[0]
    if first_chapter is not None:
        return first_chapter
    if prose:
        return prose[0]
    # Only front sections and title lines: the first text that reads like story, else nothing.
    return next(
        (i for i, k in enumerate(kinds) if k == TEXT and _is_sentence(" ".join(blocks[i]))), len(kinds)
    )


def _blocks(body: str) -> list[list[str]]:
    """Blocks of non-blank lines; an [Illustration ...] spanning blank lines is one block, and a
    chapter heading hard against its first paragraph is a block of its own."""
    raw = [
        lines
        for block in re.split(r"\n[ \t]*\n", body)
        if (lines := [ln for ln in block.split("\n") if ln.strip()])
    ]
    out: list[list[str]] = []
    i = 0
    while i < len(raw):
        lines = raw[i]
        depth = "".join(lines).count("[") - "".join(lines).count("]")
        j = i + 1
        if lines[0].lstrip().startswith("[") and depth > 0:
            k, merged, d = j, list(lines), depth
            while k < len(raw) and k - i < 12 and d > 0:
                d += "".join(raw[k]).count("[") - "".join(raw[k]).count("]")
                merged += raw[k]
                k += 1
            if d <= 0:
                lines, j = merged, k
        rest = " ".join(lines[1:])
        if (
            len(lines) > 1
            and len(lines[0].strip()) <= 20
            and _is_chapter(lines[0])
            and _is_sentence(rest)
            and not _is_title(rest)
        ):
            out += [lines[:1], lines[1:]]
        else:
            out.append(lines)
        i = j
    return out


def _is_loose_end(para: str) -> bool:
    return len(para) < 150 and not _TERMINAL.search(para)


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
    blocks = _blocks(strip_boilerplate(text))
    # Back matter: everything from a closing heading ("THE END", "FOOTNOTES") in the last third on.
    tail = int(len(blocks) * 2 / 3) + 1
    cut = next((i for i in range(tail, len(blocks)) if _BACK_MATTER.match(blocks[i][0].strip())), len(blocks))
    blocks = blocks[:cut]
    kinds = [_kind(b) for b in blocks]
    runs = list(_chapter_runs(blocks, kinds))
    start = _story_start(blocks, kinds, runs[0][0] if runs else None)
    # Inside the story, headings go; an all-capitals line stays unless it stands with a chapter heading.
    # Lines under a heading ("_To Mrs. Saville._", a date) go only at the start: later they may be
    # story (a stage direction), and the story's first sentence must be its own.
    drop: set[int] = set()
    for a, end, sub in runs:
        drop.update(range(a, sub if a <= start < sub else end))
    keep = [i for i in range(start, len(blocks)) if i not in drop and kinds[i] in (TEXT, CAPS)]
    # A printer's colophon, a signature or a note after the last paragraph; closing dialogue stays.
    while keep and (kinds[keep[-1]] == CAPS or _is_loose_end(_unwrap(blocks[keep[-1]]))):
        keep.pop()
    paras = [_unwrap(blocks[i]) for i in keep]
    # Italics (_word_) and runs of spaces, in one pass over the whole text rather than per paragraph.
    return _SPACES.sub(" ", _ITALIC.sub(r"\1", "\n".join(paras))).split("\n") if paras else []


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
# Windows are cut forward and back to back, so every sentence lands in one: a window takes up to
# context_sentences for its context, then up to continuation_sentences for its continuation, each
# part stopping early where the next sentence would pass its cap (characters, and tokens when a
# tokenizer sizes the windows); the next window starts where this one stopped. The last window is
# anchored at the book's end (it may overlap the one before). Only a sentence longer than a cap on
# its own is dropped, and the run says so.
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

    def limits(self) -> tuple[int, int, int, int]:
        """(context sentences, context characters, continuation sentences, continuation characters)."""
        if self.chunk_chars is None:
            return (
                self.context_sentences,
                self.max_context_chars,
                self.continuation_sentences,
                self.max_continuation_chars,
            )
        ctx = min(self.max_context_chars, int(self.chunk_chars * self.split_ratio))
        return 1 << 30, ctx, 1 << 30, min(self.max_continuation_chars, self.chunk_chars - ctx)

    def describe(self) -> str:
        if self.chunk_chars is None:
            return (
                f"{self.context_sentences}+{self.continuation_sentences} sentences, at most "
                f"{self.max_context_chars}+{self.max_continuation_chars} characters"
            )
        return f"{self.chunk_chars} characters split at {self.split_ratio:.0%}"


#: What train adds to a row beyond the story: the reasoning's place is held by this word, then
#: counted as `reasoning_tokens`; MARGIN absorbs the tokens that merge differently at its edges.
PLACEHOLDER, MARGIN = "x", 4


class TokenBudget:
    """Sizes windows for a model: the training row a window becomes (chat template, writer prompt,
    `<reasoning>` with reasoning_tokens of room, `<answer>` with the continuation) must fit
    max_length tokens, counted by the function train counts with (`pipeline.train.rows.encode_turns`)."""

    def __init__(self, tokenizer, max_length: int, reasoning_tokens: int, name: str = "") -> None:
        self.tokenizer, self.max_length, self.reasoning_tokens, self.name = (
            tokenizer,
            max_length,
            reasoning_tokens,
            name or getattr(tokenizer, "name_or_path", ""),
        )
        self._placeholder = len(tokenizer(PLACEHOLDER, add_special_tokens=False)["input_ids"])
        self.overhead = self.row_tokens(PLACEHOLDER, PLACEHOLDER) - 2 * self._placeholder
        self.story = max_length - self.overhead - MARGIN  # tokens left for context + continuation
        if self.story < 32:
            raise ValueError(
                f"--max-length {max_length} leaves {self.story} tokens for the story after the prompt, the "
                f"chat template ({self.overhead - reasoning_tokens} tokens) and --reasoning-tokens "
                f"{reasoning_tokens}: raise --max-length or lower --reasoning-tokens"
            )

    def sentence_tokens(self, sents: list[str]) -> list[int]:
        if not sents:
            return []
        backend = getattr(self.tokenizer, "backend_tokenizer", None)  # fast tokenizers: skip the wrapping
        if backend is not None:
            return [len(e.ids) for e in backend.encode_batch(sents, add_special_tokens=False)]
        return [len(ids) for ids in self.tokenizer(sents, add_special_tokens=False)["input_ids"]]

    def row_tokens(self, context: str, continuation: str) -> int:
        from contract import prompt
        from pipeline.train.rows import encode_turns

        head = [{"role": "user", "content": prompt.render_prompt(context)}]
        p, r = encode_turns(self.tokenizer, head, prompt.render_target(PLACEHOLDER, continuation))
        return len(p) + len(r) - self._placeholder + self.reasoning_tokens

    def fits(self, context: str, continuation: str) -> bool:
        return self.row_tokens(context, continuation) + MARGIN <= self.max_length

    def describe(self) -> str:
        return (
            f"sized in tokens for {self.name}: each row fits --max-length {self.max_length} with "
            f"{self.reasoning_tokens} tokens left for the reasoning"
        )


def load_budget(
    folder: str | Path, max_length: int, reasoning_tokens: int, chat_template: Path | None = None
) -> TokenBudget:
    """The token budget of a local tokenizer folder (or a base model's folder), with the chat template
    train would use (its own, or chat_template's); nothing is downloaded."""
    from pipeline.train.base import load_tokenizer
    from pipeline.train.options import TrainError

    folder = Path(folder)
    if not folder.is_dir():
        raise BookError(
            f"--tokenizer {folder} is not a folder: give a local tokenizer folder or the base model's "
            "folder (nothing is downloaded)"
        )
    if reasoning_tokens < 0:
        raise BookError(f"--reasoning-tokens {reasoning_tokens} must be 0 or more")
    try:
        tokenizer, _ = load_tokenizer(folder, chat_template, local_files_only=True)
        return TokenBudget(tokenizer, max_length, reasoning_tokens, str(folder))
    except (TrainError, ValueError) as e:
        raise BookError(str(e)) from e


Sentences = list[tuple[str, bool]]


def join_sentences(sents: Sentences) -> str:
    out = []
    for i, (s, para_start) in enumerate(sents):
        out.append(s if i == 0 else ("\n\n" if para_start else " ") + s)
    return "".join(out)


@dataclass
class Plan:
    """The windows of a book as (start, split, end) sentence indices, and the sentences left out."""

    spans: list[tuple[int, int, int]] = field(default_factory=list)
    dropped: dict[int, str] = field(default_factory=dict)  # sentence index -> why


class _Costs:
    """Per-sentence costs (characters with a separator, tokens) and the caps they must fit."""

    def __init__(self, sents: Sentences, spec: WindowSpec, budget: TokenBudget | None) -> None:
        self.chars = [len(s) + 2 for s, _ in sents]  # + a separator: a space or a paragraph break
        self.tokens = [t + 1 for t in budget.sentence_tokens([s for s, _ in sents])] if budget else None
        self.n_ctx, self.c_ctx, self.n_cont, self.c_cont = spec.limits()
        self.t_story = budget.story if budget else 1 << 30
        share = spec.continuation_sentences / (spec.context_sentences + spec.continuation_sentences)
        if spec.chunk_chars is not None:
            share = 1 - spec.split_ratio
        self.t_ctx = self.t_story - int(self.t_story * share)  # the continuation's share stays free

    def take(self, i: int, stop: int, step: int, n: int, chars: int, tokens: int) -> tuple[int, int]:
        """From i towards stop (step 1 or -1): the far end of the longest run within the caps, and
        the run's tokens."""
        c = t = 0
        j = i
        while j != stop and abs(j - i) < n:
            k = j if step > 0 else j - 1
            c2, t2 = c + self.chars[k], t + (self.tokens[k] if self.tokens else 0)
            if c2 > chars or t2 > tokens:
                break
            c, t, j = c2, t2, j + step
        return j, t


def plan_windows(sents: Sentences, spec: WindowSpec, budget: TokenBudget | None = None) -> Plan:
    costs, plan, n = _Costs(sents, spec, budget), Plan(), len(sents)

    def rescue(x: int, reason: str) -> None:
        """A sentence no forward window can hold: the continuation of a window of the sentences
        before it (they are in a window already), else dropped for the reason given."""
        span = _continue_with(sents, costs, budget, x)
        if span:
            plan.spans.append(span)
        else:
            plan.dropped[x] = reason

    i = 0
    while i < n:
        k, used = costs.take(i, n, 1, costs.n_ctx, costs.c_ctx, costs.t_ctx)
        if k == i:
            rescue(i, "each longer than a context may be and than a continuation may be")
            i += 1
            continue
        if k == n and (tail := _tail(sents, costs, budget, i)):
            plan.spans.append(tail)  # the rest is less than a window: anchor a full one at the end
            break
        while True:  # end the context earlier until a continuation fits after it
            j, _ = costs.take(k, n, 1, costs.n_cont, costs.c_cont, costs.t_story - used)
            if j > k or k - i <= 1:
                break
            k -= 1
            used -= costs.tokens[k] if costs.tokens else 0
        if j == k:  # one sentence of context and none that can follow it
            for x in range(i, k):
                rescue(x, "with nothing after them short enough to continue them")
            i = k
            continue
        if j == n and (tail := _tail(sents, costs, budget, i)):
            plan.spans.append(tail)
            break
        span = _fit_tokens(sents, budget, i, k, j)
        if span is None:
            rescue(i, "too long for --max-length with the prompt around them")
            i += 1
            continue
        plan.spans.append(span)
        i = span[2]
    return plan


def _continue_with(
    sents: Sentences, costs: _Costs, budget: TokenBudget | None, x: int
) -> tuple[int, int, int] | None:
    """A window whose continuation is sentence x alone, its context the sentences before x."""
    tokens = costs.tokens[x] if costs.tokens else 0
    if x == 0 or costs.chars[x] > costs.c_cont or tokens >= costs.t_story:
        return None
    start, _ = costs.take(x, 0, -1, costs.n_ctx, costs.c_ctx, costs.t_story - tokens)
    return _fit_tokens(sents, budget, start, x, x + 1, shrink_front=True) if start < x else None


def _tail(
    sents: Sentences, costs: _Costs, budget: TokenBudget | None, after: int
) -> tuple[int, int, int] | None:
    """A window ending at the book's end and reaching back to `after` (overlapping the window
    before), or None when the caps keep it from reaching that far."""
    n = len(sents)
    k, used = costs.take(n, 0, -1, costs.n_cont, costs.c_cont, costs.t_story - costs.t_ctx)
    if k == n:
        return None
    i, _ = costs.take(k, 0, -1, costs.n_ctx, costs.c_ctx, costs.t_story - used)
    span = _fit_tokens(sents, budget, i, k, n, shrink_front=True) if i < k else None
    return span if span and span[0] <= after else None


def _fit_tokens(sents, budget, i, k, j, shrink_front=False) -> tuple[int, int, int] | None:
    """(i, k, j), shrunk until the rendered row fits the token budget (estimates from per-sentence
    counts are close, the rendered count is exact)."""
    if budget is None:
        return i, k, j
    for _ in range(64):
        if budget.fits(join_sentences(sents[i:k]), join_sentences(sents[k:j])):
            return i, k, j
        if shrink_front and k - i > 1:
            i += 1
        elif j - k > 1:
            j -= 1
        elif k - i > 1:
            k, j = k - 1, k
        else:
            return None
    return None


def windows(
    sents: Sentences, spec: WindowSpec, budget: TokenBudget | None = None
) -> Iterator[tuple[int, str, str]]:
    """(sentence_start, context, continuation) for each window of a book."""
    for start, split, end in plan_windows(sents, spec, budget).spans:
        yield start, join_sentences(sents[start:split]), join_sentences(sents[split:end])


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
class Coverage:
    """How much of one book's story its windows hold."""

    book: str
    sentences: int
    chars: int
    windows: int = 0
    used_sentences: int = 0
    used_chars: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> sentences
    dropped_chars: Counter = field(default_factory=Counter)  # reason -> characters
    duplicate_windows: int = 0

    def summary(self) -> str:
        text = (
            f"{self.book}: {self.used_sentences:,} of {self.sentences:,} sentences, "
            f"{self.used_chars:,} of {self.chars:,} characters in {self.windows} windows"
        )
        for reason, n in sorted(self.dropped.items()):
            text += f"; dropped {n} sentence(s) ({self.dropped_chars[reason]:,} characters) {reason}"
        if self.duplicate_windows:
            text += f"; {self.duplicate_windows} window(s) left out as duplicates of earlier ones"
        return text


@dataclass
class ChunkStats:
    files: int = 0
    books: int = 0
    windows: dict[str, int] = field(default_factory=lambda: {TRAIN: 0, VALIDATION: 0})
    duplicate_windows: int = 0
    skipped: list[str] = field(default_factory=list)  # one line per skipped file, with the reason
    chars_read: int = 0
    coverage: list[Coverage] = field(default_factory=list)  # one per book that gave windows


def build_chunks(
    paths: list[Path],
    spec: WindowSpec,
    val_ratio: float = 0.1,
    encoding: str | None = None,
    on_book: Callable[[Path], None] | None = None,
    budget: TokenBudget | None = None,
) -> tuple[list[dict], ChunkStats]:
    """All window records of the books, deduplicated, with their split, and how much of each book
    they hold."""
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
        sents = book.sentences
        plan = plan_windows(sents, spec, budget)
        cov = Coverage(book.id, len(sents), sum(len(s) for s, _ in sents))
        used = [False] * len(sents)
        for position, (start, split, end) in enumerate(plan.spans):
            context, continuation = join_sentences(sents[start:split]), join_sentences(sents[split:end])
            key = text_key(context, continuation)
            if key in seen_keys:
                cov.duplicate_windows += 1
                continue
            seen_keys.add(key)
            used[start:end] = [True] * (end - start)
            records.append(
                {
                    "id": f"{book.id}:{position}",
                    "key": key,
                    "book": book.id,
                    "position": position,
                    "sentence_start": start,
                    "context": context,
                    "continuation": continuation,
                    "split": splits[book.id],
                }
            )
            stats.windows[splits[book.id]] += 1
            cov.windows += 1
        for i, reason in plan.dropped.items():
            cov.dropped[reason] += 1
            cov.dropped_chars[reason] += len(sents[i][0])
        cov.used_sentences = sum(used)
        cov.used_chars = sum(len(s) for (s, _), u in zip(sents, used, strict=True) if u)
        stats.duplicate_windows += cov.duplicate_windows
        if cov.windows == 0:
            stats.skipped.append(f"{book.path} gave no window within the caps: skipped")
        else:
            stats.books += 1
            stats.coverage.append(cov)
    return records, stats


def _unique_id(stem: str, used: set[str]) -> str:
    book_id, n = stem, 2
    while book_id in used:
        book_id, n = f"{stem}-{n}", n + 1
    return book_id


def read_jsonl(path: Path) -> Iterator[dict]:
    """Records of a JSON-lines file; a broken line is an error naming the file and line."""
    try:
        for _, record in jsonl.iter_objects(path):
            yield record
    except jsonl.JsonlError as e:
        raise BookError(str(e)) from e
