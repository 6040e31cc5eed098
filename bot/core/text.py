"""Text in and out of a channel, with no Discord imports: clean what members type, defuse what the
model writes, and split long text into message-sized parts at natural boundaries."""

from __future__ import annotations

import re
import unicodedata

from contract.prompt import defuse_control

#: Discord's message limit; parts are kept a little under it by default.
MESSAGE_LIMIT = 2000
#: Discord's longest string option of a slash command (a passage written with /write, /edit, ...).
OPTION_LIMIT = 6000

# Zero-width and bidi-control characters: invisible, they hide text or spoof names.
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\u00ad]")
_MENTION = re.compile(r"@(everyone|here)|<(@[!&]?|#)(\d+)>")


def clean_input(text: str) -> str:
    """A member's text as the story keeps it: line ends normalised, control and invisible characters
    removed (tabs and newlines stay), runs of blank lines shortened, ends stripped, and chat-template
    control tokens defused (kept and shown, but plain text to the model: `contract.prompt`)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _INVISIBLE.sub("", text)
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cs", "Co"))
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return defuse_control(text.strip())


def one_line(text: str, limit: int) -> str:
    """A title or a direction: one line of cleaned text, cut at `limit` characters."""
    return " ".join(clean_input(text).split())[:limit]


def defuse_mentions(text: str) -> str:
    """Make @everyone, @here and <@id>/<@&id>/<#id> inert and visibly plain (a zero-width space after
    '@' or '<'). The Discord adapter also sends with no mentions allowed; this keeps the text honest."""
    return _MENTION.sub(lambda m: m.group(0)[0] + "\u200b" + m.group(0)[1:], text)


_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+")


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split text into parts of at most `limit` characters: at paragraphs, else sentences, else words,
    else (one enormous word) anywhere. Joining the parts with the separators they were cut at gives the
    text back; nothing is dropped except the whitespace at the cuts."""
    if limit < 1:
        raise ValueError("limit must be positive")
    text = text.strip()
    parts: list[str] = []
    while len(text) > limit:
        cut = _cut_point(text, limit)
        parts.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text:
        parts.append(text)
    return parts


def _cut_point(text: str, limit: int) -> int:
    window = text[: limit + 1]  # a boundary right after the limit still allows a full part
    for finder in (
        lambda w: [m.end() for m in re.finditer(r"\n\s*\n", w)],
        lambda w: [m.end() for m in _SENTENCE_END.finditer(w)] + [m.end() for m in re.finditer(r"\n", w)],
        lambda w: [m.end() for m in re.finditer(r"\s+", w)],
    ):
        ends = [e for e in finder(window) if len(text[:e].rstrip()) <= limit and text[:e].strip()]
        # A cut in the first third would make a stub part; prefer a smaller boundary kind instead.
        good = [e for e in ends if e > limit // 3]
        if good:
            return max(good)
    return limit
