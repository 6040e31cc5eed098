"""Training rows cut from the test corpus (tests/corpus), for the fine-tuning tests and benchmark."""

from __future__ import annotations

import json
from pathlib import Path

from contract.prompt import training_row


def corpus_windows(texts: list[str], n: int, context_words: int = 40, answer_words: int = 24, start: int = 0):
    """n (context, answer) windows of consecutive words from the corpus paragraphs."""
    words = " ".join(texts).split()
    step = context_words + answer_words
    out = []
    for i in range(start, start + n):
        w = words[i * step : (i + 1) * step]
        out.append((" ".join(w[:context_words]), " ".join(w[context_words:])))
    return out


def sft_rows(texts: list[str], n: int, start: int = 0, **kw) -> list[dict]:
    return [
        training_row(context, "The scene goes on; the next lines follow on from the last.", answer)
        for context, answer in corpus_windows(texts, n, start=start, **kw)
    ]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path
