"""Go text/template semantics for the subset our TEMPLATEs use.

Supported: `{{ .Name }}`, `{{ if .Name }}…{{ else }}…{{ end }}`, and the `{{-` / `-}}` trim markers.
Anything else raises, so a TEMPLATE that leans on more is noticed instead of rendered wrongly. Used to
prove that what Ollama renders equals what training tokenised, and by the stand-in Ollama server.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_ACTION_RE = re.compile(r"\{\{(-\s)?\s*(.*?)\s*(\s-)?\}\}", re.S)
_FIELD_RE = re.compile(r"^\.([A-Za-z_][A-Za-z0-9_]*)$")
_IF_RE = re.compile(r"^if\s+\.([A-Za-z_][A-Za-z0-9_]*)$")


class TemplateError(ValueError):
    pass


def _tokens(template: str) -> list[tuple[str, str]]:
    """Split into ('text', s) and ('action', s), applying trim markers as Go does."""
    out: list[tuple[str, str]] = []
    pos, trim_next = 0, False
    for m in _ACTION_RE.finditer(template):
        text = template[pos : m.start()]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if m.group(1):
            text = text.rstrip(" \t\r\n")
        out.append(("text", text))
        out.append(("action", m.group(2)))
        pos, trim_next = m.end(), bool(m.group(3))
    tail = template[pos:]
    out.append(("text", tail.lstrip(" \t\r\n") if trim_next else tail))
    if "{{" in tail:
        raise TemplateError("unclosed action '{{' in template")
    return out


def render(template: str, values: Mapping[str, object], generate: bool = True) -> str:
    """Render like Go's text/template for the supported subset; falsy = empty/zero/missing.

    With `generate` (how Ollama renders a prompt to generate from) nothing after `{{ .Response }}`
    is rendered: the model writes that part itself.
    """
    stack: list[list] = [[True, True, False]]  # [active, branch_taken, in_else]
    out: list[str] = []
    for kind, s in _tokens(template):
        active = all(frame[0] for frame in stack)
        if kind == "text":
            if active:
                out.append(s)
        elif m := _FIELD_RE.match(s):
            if active and generate and m.group(1) == "Response":
                return "".join(out)
            if active:
                v = values.get(m.group(1), "")
                out.append("" if v is None else str(v))
        elif m := _IF_RE.match(s):
            cond = bool(values.get(m.group(1)))
            stack.append([cond, cond, False])
        elif s == "else":
            if len(stack) == 1 or stack[-1][2]:
                raise TemplateError("'else' without 'if'")
            stack[-1] = [not stack[-1][1], True, True]
        elif s == "end":
            if len(stack) == 1:
                raise TemplateError("'end' without 'if'")
            stack.pop()
        else:
            raise TemplateError(f"unsupported template action {{{{ {s} }}}}")
    if len(stack) != 1:
        raise TemplateError("'if' without 'end'")
    return "".join(out)
