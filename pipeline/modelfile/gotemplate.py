"""Go text/template semantics for the subset Ollama TEMPLATEs use, and Ollama's way of executing one.

Supported: fields (`.A.B`, `.`, `$.A`, `$x.A`), string and number literals, `if` / `else if` / `else`,
`range` (with `$i, $x :=`), parenthesised calls of `eq ne and or not len index json`, and the `{{-` /
`-}}` trim markers. Anything else raises, so a TEMPLATE that leans on more is noticed instead of rendered
wrongly. :func:`execute` follows Ollama's `template.Execute` (template/template.go): a TEMPLATE that uses
`.Messages` gets the collated messages and tools, an older `.Prompt` one is run once per turn and cut at
`.Response`. Used to prove that what Ollama renders equals what training tokenised, to recognise our
TEMPLATEs by what they render, and by the stand-in Ollama server.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

_ACTION_RE = re.compile(r"\{\{(-\s)?\s*(.*?)\s*(\s-)?\}\}", re.S)
_TERM_RE = re.compile(
    r'\s*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|(-?\d+)|(\$?[A-Za-z_0-9]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\.?))'
)
_FUNCS = {"eq", "ne", "and", "or", "not", "len", "index", "json"}


class TemplateError(ValueError):
    pass


class _Stop(Exception):
    """`{{ .Response }}` reached while rendering a prompt to generate from."""


@dataclass
class _Node:
    kind: str  # text, out, if, range
    arg: object = None  # text, or a parsed pipeline
    body: list[_Node] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)
    names: tuple[str, ...] = ()  # range declarations


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


def _expr(src: str):
    """A pipeline without `|`: a term, or a function applied to terms. Returns a nested tuple."""
    terms: list[list] = [[]]
    pos = 0
    while pos < len(src.rstrip()):
        m = _TERM_RE.match(src, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"unsupported template expression {src!r}")
        pos = m.end()
        if m.group(1):
            terms.append([])
        elif m.group(2):
            if len(terms) == 1:
                raise TemplateError(f"unbalanced ')' in {src!r}")
            inner = terms.pop()
            terms[-1].append(_call(inner, src))
        elif m.group(3) is not None:
            terms[-1].append(("lit", json.loads(f'"{m.group(3)}"')))
        elif m.group(4) is not None:
            terms[-1].append(("lit", int(m.group(4))))
        else:
            word = m.group(5)
            if word.startswith(("$", ".")):
                terms[-1].append(("var", word))
            elif word in _FUNCS:
                terms[-1].append(("fn", word))
            else:
                raise TemplateError(f"unsupported template function or word {word!r} in {src!r}")
    if len(terms) != 1:
        raise TemplateError(f"unbalanced '(' in {src!r}")
    return _call(terms[0], src)


def _call(terms: list, src: str):
    if not terms:
        raise TemplateError(f"empty expression in {src!r}")
    if terms[0][0] == "fn":
        return ("call", terms[0][1], terms[1:])
    if len(terms) != 1:
        raise TemplateError(f"unsupported template expression {src!r}")
    return terms[0]


_RANGE_RE = re.compile(r"^range\s+(?:(\$\w+)\s*(?:,\s*(\$\w+)\s*)?:=\s*)?(.+)$", re.S)


def parse(template: str) -> list[_Node]:
    root: list[_Node] = []
    stack: list[list] = []  # [block, in_else, chained]: an `else if` is an `if` chained in the else
    current = root
    for kind, s in _tokens(template):
        if kind == "text":
            if s:
                current.append(_Node("text", s))
            continue
        if s.startswith("/*"):
            continue
        if s.startswith("if ") or _RANGE_RE.match(s):
            if s.startswith("if "):
                node = _Node("if", _expr(s[3:]))
            else:
                m = _RANGE_RE.match(s)
                names = tuple(n for n in (m.group(1), m.group(2)) if n)
                node = _Node("range", _expr(m.group(3)), names=names)
            current.append(node)
            stack.append([node, False, False])
            current = node.body
        elif s == "else" or s.startswith("else if "):
            if not stack or stack[-1][1]:
                raise TemplateError("'else' without 'if'")
            stack[-1][1] = True
            current = stack[-1][0].orelse
            if s != "else":
                inner = _Node("if", _expr(s[8:]))
                current.append(inner)
                stack.append([inner, False, True])
                current = inner.body
        elif s == "end":
            if not stack:
                raise TemplateError("'end' without 'if'")
            while stack.pop()[2]:  # one `end` closes an `if` and all its `else if`s
                pass
            top = stack[-1] if stack else None
            current = root if top is None else (top[0].orelse if top[1] else top[0].body)
        elif s.split(None, 1)[0] in ("with", "template", "define", "block", "break", "continue", "else"):
            raise TemplateError(f"unsupported template action {{{{ {s} }}}}")
        else:
            current.append(_Node("out", _expr(s)))
    if stack:
        raise TemplateError("'if' without 'end'")
    return root


def variables(template: str) -> set[str]:
    """Every field and variable name the template mentions, lowercased (Ollama's `Template.Vars`)."""
    names: set[str] = set()

    def expr(e) -> None:
        if e[0] == "var":
            names.update(p.lower() for p in e[1].split(".") if p)
        elif e[0] == "call":
            for a in e[2]:
                expr(a)

    def walk(nodes: list[_Node]) -> None:
        for n in nodes:
            if n.kind != "text":
                expr(n.arg)
            walk(n.body)
            walk(n.orelse)

    walk(parse(template))
    return names


def _truthy(v) -> bool:
    return bool(v) and v != 0 if not isinstance(v, bool) else v


def _get(obj, name: str):
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _go_json(v) -> str:
    """Go's json.Marshal: compact, map keys sorted, <, > and & escaped."""
    text = json.dumps(v, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _text(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Mapping | list):
        return _go_json(v)
    return str(v)


class _Renderer:
    def __init__(self, root, generate: bool):
        self.root, self.generate, self.out = root, generate, []

    def value(self, e, dot, env):
        if e[0] == "lit":
            return e[1]
        if e[0] == "var":
            path = e[1]
            if path == ".":
                return dot
            if path.startswith("$"):
                head, _, rest = path.partition(".")
                if head != "$" and head not in env:
                    raise TemplateError(f"undefined variable {head}")
                obj = self.root if head == "$" else env[head]
            else:
                obj, rest = dot, path[1:]
            for part in filter(None, rest.split(".")):
                if self.generate and part == "Response" and obj is self.root:
                    raise _Stop
                obj = _get(obj, part)
            return obj
        name, args = e[1], e[2]
        if name in ("and", "or"):  # short-circuit, returning the deciding operand, as Go does
            v = None
            for a in args:
                v = self.value(a, dot, env)
                if _truthy(v) != (name == "and"):
                    return v
            return v
        vals = [self.value(a, dot, env) for a in args]
        if name == "eq":
            return any(vals[0] == v for v in vals[1:])
        if name == "ne":
            return vals[0] != vals[1]
        if name == "not":
            return not _truthy(vals[0])
        if name == "len":
            return len(vals[0] or ())
        if name == "index":
            obj = vals[0]
            for k in vals[1:]:
                obj = obj[k]
            return obj
        return _go_json(vals[0])  # json

    def run(self, nodes, dot, env) -> None:
        for n in nodes:
            if n.kind == "text":
                self.out.append(n.arg)
            elif n.kind == "out":
                self.out.append(_text(self.value(n.arg, dot, env)))
            elif n.kind == "if":
                self.run(n.body if _truthy(self.value(n.arg, dot, env)) else n.orelse, dot, env)
            else:  # range
                items = self.value(n.arg, dot, env) or []
                pairs = list(items.items()) if isinstance(items, Mapping) else list(enumerate(items))
                if not pairs:
                    self.run(n.orelse, dot, env)
                for key, item in pairs:
                    scope = dict(env)
                    if len(n.names) == 1:
                        scope[n.names[0]] = item
                    elif len(n.names) == 2:
                        scope[n.names[0]], scope[n.names[1]] = key, item
                    self.run(n.body, item, scope)


def render(template: str, values: Mapping[str, object], generate: bool = True) -> str:
    """Render like Go's text/template for the supported subset; falsy = empty/zero/missing.

    With `generate` (how Ollama renders a prompt to generate from) nothing after `{{ .Response }}`
    is rendered: the model writes that part itself.
    """
    r = _Renderer(values, generate)
    with contextlib.suppress(_Stop):
        r.run(parse(template), values, {})
    return "".join(r.out)


def _collate(messages: Sequence[Mapping]) -> tuple[str, list[dict]]:
    """Ollama's `collate`: system texts joined, consecutive turns of one role (but tool) merged."""
    system = [m["content"] for m in messages if m["role"] == "system"]
    out: list[dict] = []
    for m in messages:
        if out and out[-1]["Role"] == m["role"] and m["role"] != "tool":
            out[-1] = {**out[-1], "Content": out[-1]["Content"] + "\n\n" + m.get("content", "")}
        else:
            out.append(_message(m))
    return "\n\n".join(system), out


def _message(m: Mapping) -> dict:
    calls = [{"ID": c.get("id", ""), "Function": {"Index": c.get("function", {}).get("index", 0),
              "Name": c["function"]["name"], "Arguments": c["function"].get("arguments") or {}}}
             for c in m.get("tool_calls") or []]  # fmt: skip
    return {"Role": m["role"], "Content": m.get("content", ""), "Thinking": m.get("thinking", ""),
            "ToolCalls": calls, "ToolName": m.get("tool_name", "")}  # fmt: skip


def execute(template: str, messages: Sequence[Mapping], tools: Sequence[Mapping] | None = None) -> str:
    """The prompt Ollama renders from a TEMPLATE for these chat messages (`template.Execute`)."""
    system, collated = _collate(messages)
    if "messages" in variables(template):
        values = {"System": system, "Messages": collated, "Tools": list(tools or []), "Response": ""}
        return render(template, values, generate=False)
    out, turn = [], {"System": "", "Prompt": "", "Response": ""}
    for m in collated:  # a legacy template runs once per system/user/assistant turn
        role, text = m["Role"], m["Content"]
        if (role == "system" and (turn["Prompt"] or turn["Response"])) or (
            role == "user" and turn["Response"]
        ):
            out.append(render(template, turn, generate=False))
            turn = {"System": "", "Prompt": "", "Response": ""}
        key = {"system": "System", "user": "Prompt", "assistant": "Response"}.get(role)
        if key:
            turn[key] = text
    out.append(render(template, turn, generate=True))
    return "".join(out)
