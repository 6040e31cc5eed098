"""The Go TEMPLATE that gives `ollama run` the bytes a Jinja chat template gives training.

What Ollama does with a TEMPLATE was read in its source (v0.33.0-rc2): `template/template.go` `Execute`
and `collate` (a TEMPLATE that mentions `.Messages` gets every message, system ones included, one per
role in a row, and `.System` their joined text); `server/images.go` `shouldPreferChatTemplate` (a
TEMPLATE less capable than the GGUF's chat template is set aside: ours mentions `.Tools` with a whole
tool round trip, and `.Thinking` where the base's template thinks, so it never is); `server/create.go`
(`FROM` a library model inherits its RENDERER/PARSER); `thinking/template.go` `InferTags` (the text
around `.Thinking` names the thinking tags).

The template is derived, not written per family: probe conversations are rendered by the Jinja template
and cut at their contents, which leaves the text before the first user turn (with and without a system
turn), between a user turn and the reply, between a reply and the next user turn, and after the last
user turn (the generation prompt). The system text goes where the template puts it: before the first
user turn (its own turn, or inside the first user turn as Gemma does) or inside the last user turn
(Mistral Nemo). The result is executed with our port of Go's text/template and compared byte for byte
with the Jinja render of the same conversations; any difference refuses the template by name.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

from contract import prompt
from contract.chat_template import SYSTEM_MARK, ChatTemplate, UnknownFamilyError, probe_conversations

_TOOLS = (
    "\n\n# Tools\n\nYou may call functions. Their signatures, one JSON object a line:\n"
    "{{ range $.Tools }}{{ json . }}\n{{ end }}"
)
_TOOL_CALLS = (
    '{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ json .Function.Arguments }}}'
    "{{ end }}"
)
_FIRST_USER = '(or (eq $i 0) (and (eq $i 1) (eq (index $.Messages 0).Role "system")))'
_LAST = "(eq (len (slice $.Messages $i)) 1)"


@dataclass(frozen=True)
class Turns:
    """The text between a conversation's contents, as the Jinja template writes it (BOS left out)."""

    start: str  # before the first user turn, without a system turn
    user_to_answer: str
    answer_to_user: str
    end: str  # after the last user turn: the generation prompt
    system_first: tuple[str, str] | None = None  # around the system text, before the first user turn
    system_last: tuple[str, str, str, str] | None = None  # (start with it, next user turns with it)


def _cut(text: str, markers: list[str], what: str) -> list[str]:
    out, at = [], 0
    for marker in markers:
        if text.count(marker) != 1:
            raise UnknownFamilyError(f"the chat template does not write each message once, as given ({what})")
        found = text.index(marker)
        if found < at:
            raise UnknownFamilyError(f"the chat template reorders the messages ({what})")
        out.append(text[at:found])
        at = found + len(marker)
    return [*out, text[at:]]


def _split_system(piece: str, what: str) -> tuple[str, str]:
    if piece.count(SYSTEM_MARK) != 1:
        raise UnknownFamilyError(f"the chat template writes the system turn more than once ({what})")
    before, after = piece.split(SYSTEM_MARK)
    return before, after


def turns_of(t: ChatTemplate) -> Turns:
    """Cut the probe conversations' renders into the text between their contents."""
    found: dict[tuple[bool, int], list[str]] = {}
    for messages in probe_conversations():
        system = messages[0]["role"] == "system"
        markers = [m["content"] for m in messages if m["role"] != "system"]
        text = t.without_bos(t.render(messages, add_generation_prompt=True))
        if system and SYSTEM_MARK not in text:
            raise UnknownFamilyError(f"{t.family}: the chat template drops the system turn")
        found[system, len(markers) // 2 + 1] = _cut(text, markers, t.family)
    plain = found[False, 3]
    start, user_to_answer, answer_to_user, end = plain[0], plain[1], plain[2], plain[-1]
    for turns, pieces in ((n, found[False, n]) for n in (1, 2, 3)):
        want = [start, *([user_to_answer, answer_to_user] * (turns - 1)), end]
        if pieces != want:
            raise UnknownFamilyError(
                f"{t.family}: the text between turns changes with the turn ({_diff(pieces, want)})"
            )
    with_system = [found[True, n] for n in (1, 2, 3)]
    if SYSTEM_MARK in with_system[2][0]:  # before the first user turn
        around = _split_system(with_system[2][0], t.family)
        for n, pieces in enumerate(with_system, 1):
            want = [around[0] + SYSTEM_MARK + around[1], *([user_to_answer, answer_to_user] * (n - 1)), end]
            if pieces != want:
                raise UnknownFamilyError(f"{t.family}: the system turn changes the text between turns")
        return Turns(start, user_to_answer, answer_to_user, end, system_first=around)
    if SYSTEM_MARK in with_system[2][-2]:  # inside the last user turn
        first = _split_system(with_system[0][0], t.family)
        later = _split_system(with_system[2][-2], t.family)
        return Turns(start, user_to_answer, answer_to_user, end, system_last=(*first, *later))
    raise UnknownFamilyError(
        f"{t.family}: the chat template puts the system turn where no Go TEMPLATE can follow"
    )


def _diff(got: list[str], want: list[str]) -> str:
    for g, w in zip(got, want, strict=False):
        if g != w:
            return f"{g!r} where {w!r} was expected"
    return "a different number of turns"


def _literal(text: str) -> str:
    """Text for a Go template: as it is, unless it holds `{{` (then a quoted Go string)."""
    return text if "{{" not in text else "{{ " + json.dumps(text, ensure_ascii=False) + " }}"


def _assemble(t: ChatTemplate, turns: Turns, prefix: str, suffix: str) -> str:
    lit = _literal
    if turns.system_first is not None:
        before, after = turns.system_first
        start = (
            f"{{{{ if $.System }}}}{lit(before)}{{{{ $.System }}}}{lit(after)}"
            f"{{{{ else }}}}{lit(turns.start)}{{{{ end }}}}"
        )
        again = lit(turns.answer_to_user)
    else:
        assert turns.system_last is not None
        first_before, first_after, later_before, later_after = turns.system_last
        start = (
            f"{{{{ if and $.System {_LAST} }}}}{lit(first_before)}{{{{ $.System }}}}{lit(first_after)}"
            f"{{{{ else }}}}{lit(turns.start)}{{{{ end }}}}"
        )
        again = (
            f"{{{{ if and $.System {_LAST} }}}}{lit(later_before)}{{{{ $.System }}}}{lit(later_after)}"
            f"{{{{ else }}}}{lit(turns.answer_to_user)}{{{{ end }}}}"
        )
    thinking = "{{ if false }}<think>{{ .Thinking }}</think>{{ end }}" if t.thinks else ""
    return (
        ("{{/* " + t.encoded() + " */}}" if prefix else "") + "{{ range $i, $m := .Messages }}"
        f'{{{{ if eq .Role "user" }}}}{{{{ if {_FIRST_USER} }}}}{start}{{{{ else }}}}{again}{{{{ end }}}}'
        f"{{{{ if and $.Tools {_LAST} }}}}{_TOOLS}{{{{ end }}}}"
        f"{lit(prefix)}{{{{ .Content }}}}{lit(suffix)}"
        f"{{{{ if {_LAST} }}}}{lit(turns.end)}{{{{ end }}}}"
        f'{{{{ else if eq .Role "assistant" }}}}{lit(turns.user_to_answer)}{thinking}{{{{ .Content }}}}'
        f"{{{{ if .ToolCalls }}}}{_TOOL_CALLS}{{{{ end }}}}"
        f'{{{{ else if eq .Role "tool" }}}}{again}<tool_response>{{{{ .Content }}}}</tool_response>'
        f"{{{{ if {_LAST} }}}}{lit(turns.end)}{{{{ end }}}}"
        "{{ end }}{{ end }}"
    )


_CHECK_SYSTEM = "You are a careful editor of fiction."


def _check_conversations() -> list[tuple[list[dict], list[dict]]]:
    """(Jinja messages, Ollama messages): the writer prompt in the first, the bare context in the second."""
    out = []
    for messages in probe_conversations():
        jinja, ollama = [], []
        for n, m in enumerate(messages):
            if m["role"] == "user":
                context = f"The story so far, turn {n}: rain on the roof."
                jinja.append({"role": "user", "content": prompt.render_prompt(context)})
                ollama.append({"role": "user", "content": context})
                continue
            text = (
                _CHECK_SYSTEM
                if m["role"] == "system"
                else f"<reasoning>Thought {n}.</reasoning><answer>Rain.</answer>"
            )
            jinja.append({"role": m["role"], "content": text})
            ollama.append({"role": m["role"], "content": text})
        out.append((jinja, ollama))
    return out


def mismatch(t: ChatTemplate, go: str, writer: bool = True) -> str | None:
    """Where the Go TEMPLATE renders otherwise than the Jinja template, for the check conversations."""
    from contract.modelfile import gotemplate

    for jinja, ollama in _check_conversations():
        jinja = jinja if writer else ollama
        want = t.without_bos(t.render(jinja, add_generation_prompt=True))
        try:
            got = gotemplate.execute(go, ollama)
        except gotemplate.TemplateError as e:
            return f"the TEMPLATE cannot be rendered ({e})"
        if got != want:
            at = next(
                (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                min(len(got), len(want)),
            )
            return f"at character {at}: {got[at : at + 40]!r} where training has {want[at : at + 40]!r}"
    return None


@functools.lru_cache(maxsize=32)
def writer_template(t: ChatTemplate, writer: bool = True) -> str:
    """The Go TEMPLATE for `t` (the writer prompt around each user turn; without it, with `writer=False`:
    what a plain instruct model is served with), checked against it; UnknownFamilyError names a
    template it cannot follow."""
    turns = turns_of(t)
    problem = ""
    prefix, suffixes = (prompt.PROMPT_PREFIX, prompt.PROMPT_SUFFIX) if writer else ("", "")
    # A template that trims each message drops the writer prompt's final newline: try both.
    for suffix in dict.fromkeys((suffixes, suffixes.rstrip())):
        go = _assemble(t, turns, prefix, suffix)
        problem = mismatch(t, go, writer) or ""
        if not problem:
            return go
    raise UnknownFamilyError(
        f"{t.family}: no Go TEMPLATE renders what this chat template renders ({problem})"
    )


def check(t: ChatTemplate) -> None:
    """Refuse, by name and before any work, a template we cannot serve byte for byte."""
    writer_template(t)
    t.reply_end  # noqa: B018 - a template that rewrites the reply cannot be trained on as given
