"""Writing Prompts (Fan et al. 2018) to clean (prompt, story) pairs, split by prompt.

Sources: a folder of fairseq files (`{train,valid,test}.wp_source` prompts and `.wp_target` stories,
paired by line), or a Hugging Face dataset with `prompt` and `story` columns (`euclaise/writingprompts`
or a local copy) read through `datasets`. The text is pre-tokenized (`do n't`, ` , `, PTB quotes,
` <newline> `); :func:`detokenize` undoes that. Records of pairs.jsonl:
`{"id", "prompt_id", "prompt", "story", "split"}`; every story of one prompt lands in the same split.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.data.gutenberg import TRAIN, VALIDATION

FILE_SPLITS = ("train", "valid", "test")


class WritingPromptsError(ValueError):
    pass


# --- detokenization -------------------------------------------------------------------------------
_TAGS = re.compile(r"^\s*(?:[\[(]\s*[A-Za-z]{1,4}\s*[\])]\s*[:\-]?\s*)+")
_RULES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"\s*<newline>\s*"), "\n"),
    (re.compile(r"``\s*"), '"'),  # PTB opening quote attaches to the next word
    (re.compile(r"\s*''"), '"'),  # PTB closing quote attaches to the previous word
    (re.compile(r"(?i)\s+(n't|'s|'re|'ve|'ll|'d|'m)\b"), r"\1"),
    (
        re.compile(r"(?i)\b(ca|wo|do|does|did|is|are|was|were|could|would|should|have|has|had) (n't)\b"),
        r"\1\2",
    ),
    (re.compile(r" +([.,!?;:%)\]}]|\.\.\.|…)"), r"\1"),
    (re.compile(r"([(\[{$#]) +"), r"\1"),
    (re.compile(r"[ \t]+"), " "),
    (re.compile(r" *\n *"), "\n"),
    (re.compile(r"\n{3,}"), "\n\n"),
]


def detokenize(text: str) -> str:
    """Undo the dataset's tokenization: line breaks, PTB quotes, split contractions, spaced punctuation."""
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    return _fix_straight_quotes(text).strip()


def _fix_straight_quotes(text: str) -> str:
    """Straight quotes tokenized with spaces on both sides (`he said " yes " .`): alternate open/close."""
    out, opening = [], True
    for part in re.split(r'( ?" ?)', text):
        if part.strip() == '"':
            out.append(' "' if opening else '" ')
            opening = not opening
        else:
            out.append(part)
    return re.sub(r'^ "|" $', '"', "".join(out), flags=re.M).replace('" ,', '",').replace('" .', '".')


def strip_tags(prompt: str) -> str:
    """`[ WP ] You wake up...` -> `You wake up...` (any tag of 1-4 letters, repeated)."""
    return _TAGS.sub("", prompt).strip()


def prompt_id(prompt: str) -> str:
    return hashlib.sha256(" ".join(prompt.lower().split()).encode()).hexdigest()[:16]


def split_of(pid: str, val_ratio: float) -> str:
    return VALIDATION if int(pid[:8], 16) / 0xFFFFFFFF < val_ratio else TRAIN


# --- sources --------------------------------------------------------------------------------------
def _fairseq_pairs(folder: Path) -> Iterator[tuple[str, str]]:
    files = []
    for name in FILE_SPLITS:  # all pairs checked before anything is read
        src, tgt = folder / f"{name}.wp_source", folder / f"{name}.wp_target"
        if src.exists() != tgt.exists():
            missing = tgt if src.exists() else src
            raise WritingPromptsError(f"{missing} is missing: .wp_source and .wp_target come in pairs")
        if src.exists():
            files.append((src, tgt))
    if not files:
        raise WritingPromptsError(f"{folder} holds no train/valid/test .wp_source and .wp_target files")
    for src, tgt in files:
        with (
            open(src, encoding="utf-8", errors="replace") as fs,
            open(tgt, encoding="utf-8", errors="replace") as ft,
        ):
            try:
                yield from zip(fs, ft, strict=True)
            except ValueError as exc:
                raise WritingPromptsError(
                    f"{src} and {tgt} have different numbers of lines: they must be paired line by line"
                ) from exc


def _hf_pairs(source: str) -> Iterator[tuple[str, str]]:
    import datasets

    try:
        ds = datasets.load_dataset(source)
    except Exception as e:  # datasets raises many kinds; the message is what the user needs
        raise WritingPromptsError(
            f"could not load the dataset {source!r} ({type(e).__name__}: {e}); give a folder of "
            ".wp_source/.wp_target files or a Hugging Face dataset (id or local copy) with prompt and story"
        ) from e
    for name, split in ds.items():
        cols = set(split.column_names)
        if not {"prompt", "story"} <= cols:
            raise WritingPromptsError(
                f"{source} split {name} has columns {sorted(cols)}; need prompt and story"
            )
        for row in split:
            yield row["prompt"] or "", row["story"] or ""


def source_pairs(source: str) -> Iterator[tuple[str, str]]:
    path = Path(source)
    if path.is_dir() and any(path.glob("*.wp_source")):
        return _fairseq_pairs(path)
    if path.is_file():
        raise WritingPromptsError(
            f"{source} is a file: give the folder holding the .wp_source/.wp_target files"
        )
    looks_local = source.startswith((".", "/", "~")) or source.count("/") > 1
    if not path.exists() and looks_local:
        raise WritingPromptsError(
            f"{source} does not exist: give the folder of .wp_source/.wp_target files, or a Hugging Face "
            "dataset id like euclaise/writingprompts"
        )
    return _hf_pairs(source)


# --- the whole step -------------------------------------------------------------------------------
@dataclass
class PairStats:
    read: int = 0
    kept: dict[str, int] = field(default_factory=lambda: {TRAIN: 0, VALIDATION: 0})
    too_short: int = 0
    too_long: int = 0
    empty_prompt: int = 0
    duplicates: int = 0
    prompts: set[str] = field(default_factory=set)


def pairs(
    source: str,
    stats: PairStats,
    min_words: int = 100,
    max_words: int = 1500,
    val_ratio: float = 0.05,
    limit: int | None = None,
) -> Iterator[dict]:
    """Clean pair records from a source, filtered by the story's length in words, split by prompt."""
    if min_words < 1 or max_words < min_words:
        raise WritingPromptsError(f"need 1 <= --min-words ({min_words}) <= --max-words ({max_words})")
    seen: set[str] = set()
    for raw_prompt, raw_story in source_pairs(source):
        stats.read += 1
        prompt = detokenize(strip_tags(raw_prompt))
        story = detokenize(raw_story)
        if not prompt:
            stats.empty_prompt += 1
            continue
        words = len(story.split())
        if words < min_words:
            stats.too_short += 1
            continue
        if words > max_words:
            stats.too_long += 1
            continue
        pid = prompt_id(prompt)
        key = hashlib.sha256(f"{pid}\x00{story}".encode()).hexdigest()[:20]
        if key in seen:
            stats.duplicates += 1
            continue
        seen.add(key)
        stats.prompts.add(pid)
        split = split_of(pid, val_ratio)
        stats.kept[split] += 1
        yield {"id": key, "prompt_id": pid, "prompt": prompt, "story": story, "split": split}
        if limit and sum(stats.kept.values()) >= limit:
            return
