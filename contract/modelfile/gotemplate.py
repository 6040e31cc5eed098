"""Go text/template as Ollama uses it: parsing exactly as `ollama create` does, and rendering the subset
our TEMPLATEs use.

`parse` follows the lexer and parser of Go's text/template/parse (Go 1.26) with the functions Ollama's
`template/template.go` adds to Go's builtins, and Ollama's own check that every `{{ template }}` call
carries a pipeline: it accepts and refuses exactly what `ollama create` does, and says where.

`render` and `execute` run the subset Ollama TEMPLATEs use: fields (`.A.B`, `.`, `$.A`, `$x.A`), string,
integer and boolean literals, `if` / `else if` / `else`, `range` (with `$i, $x :=`), parenthesised calls
of `eq ne and or not len index slice json`, comments and the `{{-` / `-}}` trim markers. Anything else
raises, so a TEMPLATE that leans on more is noticed instead of rendered wrongly. :func:`execute`
follows Ollama's `template.Execute` (template/template.go): a TEMPLATE that uses `.Messages` gets the
collated messages and tools, an older `.Prompt` one is run once per turn and cut at `.Response`. They
prove that what Ollama renders equals what training tokenised, and serve the stand-in Ollama server.
Both run on the tree `parse` makes: one reader of templates, Go's.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from contract.modelfile import golang


class TemplateError(ValueError):
    pass


# --- Parsing, as Go's text/template/parse does it -------------------------------------------------

# Go's text/template builtins plus the functions Ollama's template.Parse registers.
GO_BUILTINS = (
    "and",
    "call",
    "html",
    "index",
    "slice",
    "js",
    "len",
    "not",
    "or",
    "print",
    "printf",
    "println",
    "urlquery",
    "eq",
    "ge",
    "gt",
    "le",
    "lt",
    "ne",
)
OLLAMA_FUNCS = ("json", "currentDate", "yesterdayDate", "toTypeScriptType")
FUNCTIONS = frozenset(GO_BUILTINS + OLLAMA_FUNCS)

_EOF = ""
_KEYWORDS = {"block", "break", "continue", "define", "else", "end", "if", "range", "nil", "template", "with"}
_SPACES = " \t\r\n"


class TemplateParseError(TemplateError):
    """Where Go's parser (or Ollama's check after it) stops: a message and a character offset."""

    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.offset = offset


@dataclass
class Item:
    typ: str  # "text", "left", "right", "space", "field", "identifier", "keyword", "variable", ...
    pos: int
    val: str


def _is_space(ch: str) -> bool:
    return ch != _EOF and ch in _SPACES


def _is_alnum(ch: str) -> bool:
    return ch == "_" or (ch != _EOF and (golang.is_letter(ch) or golang.is_digit(ch)))


def _has_left_trim(s: str) -> bool:
    return len(s) >= 2 and s[0] == "-" and s[1] in _SPACES


def _has_right_trim(s: str) -> bool:
    return len(s) >= 2 and s[0] in _SPACES and s[1] == "-"


class _Lexer:
    """text/template/parse's lexer: one item per call, the state kept between calls."""

    def __init__(self, text: str):
        self.input, self.pos, self.start, self.width = text, 0, 0, 0
        self.paren_depth, self.inside_action, self.item = 0, False, Item("eof", 0, "")

    def next(self) -> str:
        if self.pos >= len(self.input):
            self.width = 0
            return _EOF
        self.width = 1
        self.pos += 1
        return self.input[self.pos - 1]

    def peek(self) -> str:
        ch = self.next()
        self.backup()
        return ch

    def backup(self) -> None:
        self.pos -= self.width

    def this_item(self, typ: str) -> Item:
        item = Item(typ, self.start, self.input[self.start : self.pos])
        self.start = self.pos
        return item

    def emit(self, typ: str):
        self.item = self.this_item(typ)
        return None

    def ignore(self) -> None:
        self.start = self.pos

    def errorf(self, message: str):
        self.item = Item("error", self.start, message)
        self.input, self.pos, self.start = "", 0, 0
        return None

    def accept(self, valid: str) -> bool:
        if (ch := self.next()) != _EOF and ch in valid:
            return True
        self.backup()
        return False

    def accept_run(self, valid: str) -> None:
        while (ch := self.next()) != _EOF and ch in valid:
            pass
        self.backup()

    def next_item(self) -> Item:
        self.item = Item("eof", self.start, "EOF")
        state = self.lex_inside_action if self.inside_action else self.lex_text
        while state is not None:
            state = state()
        return self.item

    def at_right_delim(self) -> tuple[bool, bool]:
        rest = self.input[self.pos :]
        if _has_right_trim(rest) and rest[2:].startswith("}}"):
            return True, True
        return rest.startswith("}}"), False

    def lex_text(self):
        x = self.input.find("{{", self.pos)
        if x >= 0:
            if x > self.pos:
                self.pos = x
                trim = 0
                if _has_left_trim(self.input[x + 2 :]):
                    text = self.input[self.start : self.pos]
                    trim = len(text) - len(text.rstrip(_SPACES))
                self.pos -= trim
                item = self.this_item("text")
                self.pos += trim
                self.ignore()
                if item.val:
                    self.item = item
                    return None
            return self.lex_left_delim
        self.pos = len(self.input)
        if self.pos > self.start:
            return self.emit("text")
        return self.emit("eof")

    def lex_left_delim(self):
        self.pos += 2
        trim = _has_left_trim(self.input[self.pos :])
        after = 2 if trim else 0
        if self.input.startswith("/*", self.pos + after):
            self.pos += after
            self.ignore()
            return self.lex_comment
        item = self.this_item("left")
        self.inside_action = True
        self.pos += after
        self.ignore()
        self.paren_depth = 0
        self.item = item
        return None

    def lex_comment(self):
        self.pos += 2
        x = self.input.find("*/", self.pos)
        if x < 0:
            return self.errorf("unclosed comment")
        self.pos = x + 2
        delim, trim = self.at_right_delim()
        if not delim:
            return self.errorf("comment ends before closing delimiter")
        self.pos += (2 if trim else 0) + 2
        if trim:
            rest = self.input[self.pos :]
            self.pos += len(rest) - len(rest.lstrip(_SPACES))
        self.ignore()
        return self.lex_text

    def lex_right_delim(self):
        _, trim = self.at_right_delim()
        if trim:
            self.pos += 2
            self.ignore()
        self.pos += 2
        item = self.this_item("right")
        if trim:
            rest = self.input[self.pos :]
            self.pos += len(rest) - len(rest.lstrip(_SPACES))
            self.ignore()
        self.inside_action = False
        self.item = item
        return None

    def lex_inside_action(self):
        delim, _ = self.at_right_delim()
        if delim:
            if self.paren_depth == 0:
                return self.lex_right_delim
            return self.errorf("unclosed left paren")
        ch = self.next()
        if ch == _EOF:
            return self.errorf("unclosed action")
        if _is_space(ch):
            self.backup()
            return self.lex_space
        if ch == "=":
            return self.emit("assign")
        if ch == ":":
            if self.next() != "=":
                return self.errorf("expected :=")
            return self.emit("declare")
        if ch == "|":
            return self.emit("pipe")
        if ch == '"':
            return self.lex_quote
        if ch == "`":
            return self.lex_raw_quote
        if ch == "$":
            return self.lex_variable
        if ch == "'":
            return self.lex_char
        if ch == "." and self.pos < len(self.input) and not ("0" <= self.input[self.pos] <= "9"):
            return self.lex_field
        if ch in "+-." or "0" <= ch <= "9":
            self.backup()
            return self.lex_number
        if _is_alnum(ch):
            self.backup()
            return self.lex_identifier
        if ch == "(":
            self.paren_depth += 1
            return self.emit("lparen")
        if ch == ")":
            self.paren_depth -= 1
            if self.paren_depth < 0:
                return self.errorf("unexpected right paren")
            return self.emit("rparen")
        if " " <= ch <= "~":
            return self.emit("char")
        return self.errorf(f"unrecognized character in action: U+{ord(ch):04X}")

    def lex_space(self):
        count = 0
        while _is_space(self.peek()):
            self.next()
            count += 1
        if _has_right_trim(self.input[self.pos - 1 :]) and self.input.startswith("}}", self.pos + 1):
            self.backup()
            if count == 1:
                return self.lex_right_delim
        return self.emit("space")

    def lex_identifier(self):
        while _is_alnum(self.next()):
            pass
        self.backup()
        word = self.input[self.start : self.pos]
        if not self.at_terminator():
            return self.errorf(f"bad character U+{ord(self.peek() or chr(0)):04X}")
        if word in _KEYWORDS:
            return self.emit("keyword")
        return self.emit("bool" if word in ("true", "false") else "identifier")

    def lex_field(self):
        return self.lex_field_or_variable("field")

    def lex_variable(self):
        if self.at_terminator():
            return self.emit("variable")
        return self.lex_field_or_variable("variable")

    def lex_field_or_variable(self, typ: str):
        if self.at_terminator():
            return self.emit("variable" if typ == "variable" else "dot")
        while _is_alnum(self.next()):
            pass
        self.backup()
        if not self.at_terminator():
            return self.errorf(f"bad character U+{ord(self.peek() or chr(0)):04X}")
        return self.emit(typ)

    def at_terminator(self) -> bool:
        ch = self.peek()
        if _is_space(ch) or ch in (_EOF, ".", ",", "|", ":", ")", "("):
            return True
        return self.input.startswith("}}", self.pos)

    def _lex_quoted(self, quote: str, typ: str, what: str):
        while True:
            ch = self.next()
            if ch == "\\" and quote != "`":
                ch = self.next()
                if ch not in (_EOF, "\n"):
                    continue
                return self.errorf(f"unterminated {what}")
            if ch == _EOF or (ch == "\n" and quote != "`"):
                return self.errorf(f"unterminated {what}")
            if ch == quote:
                return self.emit(typ)

    def lex_quote(self):
        return self._lex_quoted('"', "string", "quoted string")

    def lex_raw_quote(self):
        return self._lex_quoted("`", "rawstring", "raw quoted string")

    def lex_char(self):
        return self._lex_quoted("'", "charconst", "character constant")

    def lex_number(self):
        if not self.scan_number():
            return self.errorf(f"bad number syntax: {self.input[self.start : self.pos]!r}")
        if self.peek() in ("+", "-"):
            if not self.scan_number() or self.input[self.pos - 1] != "i":
                return self.errorf(f"bad number syntax: {self.input[self.start : self.pos]!r}")
            return self.emit("complex")
        return self.emit("number")

    def scan_number(self) -> bool:
        self.accept("+-")
        digits = "0123456789_"
        if self.accept("0"):
            if self.accept("xX"):
                digits = "0123456789abcdefABCDEF_"
            elif self.accept("oO"):
                digits = "01234567_"
            elif self.accept("bB"):
                digits = "01_"
        self.accept_run(digits)
        if self.accept("."):
            self.accept_run(digits)
        if len(digits) == 11 and self.accept("eE"):
            self.accept("+-")
            self.accept_run("0123456789_")
        if len(digits) == 23 and self.accept("pP"):
            self.accept("+-")
            self.accept_run("0123456789_")
        self.accept("i")
        if _is_alnum(self.peek()):
            self.next()
            return False
        return True


@dataclass
class Node:
    kind: str  # text, action, if, range, with, template, break, continue, and operands
    pos: int
    value: str | list[str] | None = None  # field/variable/chain idents, identifier, literal, template name
    pipe: Pipe | None = None
    children: list[Node] = field(default_factory=list)  # list / branch body (a chain: its operand)
    orelse: list[Node] = field(default_factory=list)  # a branch's else (an `else if`: one branch node)


@dataclass
class Pipe:
    pos: int
    decl: list[str] = field(default_factory=list)
    cmds: list[list[Node]] = field(default_factory=list)


@dataclass
class Tree:
    """The parsed templates of one TEMPLATE: name -> list of top-level nodes ("" is the main one)."""

    templates: dict[str, list[Node]]

    def walk(self):
        def visit(nodes: list[Node]):
            for n in nodes:
                yield n
                if n.pipe is not None:
                    for cmd in n.pipe.cmds:
                        yield from visit(cmd)
                yield from visit(n.children)
                yield from visit(n.orelse)

        for nodes in self.templates.values():
            yield from visit(nodes)

    def identifiers(self) -> set[str]:
        """Ollama's Template.Vars: the lower-cased names of the fields and variables in the templates'
        pipelines (`.Tools` gives "tools"); like Ollama, it does not look inside a chain like `(x).Y`."""

        def of_pipe(pipe: Pipe | None):
            for cmd in pipe.cmds if pipe else ():
                for arg in cmd:
                    if arg.kind in ("field", "variable") and isinstance(arg.value, list):
                        yield from (i.lower() for i in arg.value)
                    elif arg.kind == "pipe":
                        yield from of_pipe(arg.pipe)

        def of_nodes(nodes: list[Node]):
            for n in nodes:
                yield from of_pipe(n.pipe)
                yield from of_nodes(n.children)
                yield from of_nodes(n.orelse)

        return {name for nodes in self.templates.values() for name in of_nodes(nodes)}


class _Parser:
    def __init__(self, text: str, lexer: _Lexer, tree_set: dict[str, list[Node]], name: str = ""):
        self.text, self.lex, self.tree_set, self.name = text, lexer, tree_set, name
        self.token: list[Item] = [Item("eof", 0, "")] * 3
        self.peek_count, self.vars, self.range_depth, self.stack_depth = 0, ["$"], 0, 0

    # token stream with Go's three-token look-ahead
    def next(self) -> Item:
        if self.peek_count > 0:
            self.peek_count -= 1
        else:
            self.token[0] = self.lex.next_item()
        return self.token[self.peek_count]

    def backup(self) -> None:
        self.peek_count += 1

    def backup2(self, t1: Item) -> None:
        self.token[1], self.peek_count = t1, 2

    def backup3(self, t2: Item, t1: Item) -> None:
        self.token[1], self.token[2], self.peek_count = t1, t2, 3

    def peek(self) -> Item:
        if self.peek_count > 0:
            return self.token[self.peek_count - 1]
        self.peek_count = 1
        self.token[0] = self.lex.next_item()
        return self.token[0]

    def next_non_space(self) -> Item:
        while (token := self.next()).typ == "space":
            pass
        return token

    def peek_non_space(self) -> Item:
        token = self.next_non_space()
        self.backup()
        return token

    def errorf(self, message: str):
        raise TemplateParseError(message, self.token[0].pos)

    def unexpected(self, token: Item, context: str):
        if token.typ == "error":
            raise TemplateParseError(token.val, token.pos)
        self.errorf(f"unexpected {_describe(token)} in {context}")

    def expect(self, typ: str, context: str, *also: str) -> Item:
        token = self.next_non_space()
        if token.typ != typ and token.typ not in also:
            self.unexpected(token, context)
        return token

    def is_keyword(self, token: Item, word: str) -> bool:
        return token.typ == "keyword" and token.val == word

    def add(self, name: str, nodes: list[Node]) -> None:
        old = self.tree_set.get(name)
        if old is None or _is_empty(old):
            self.tree_set[name] = nodes
        elif not _is_empty(nodes):
            self.errorf(f"template: multiple definition of template {name!r}")

    # grammar
    def parse(self) -> None:
        root: list[Node] = []
        while self.peek().typ != "eof":
            if self.peek().typ == "left":
                delim = self.next()
                if self.is_keyword(self.next_non_space(), "define"):
                    sub = _Parser(self.text, self.lex, self.tree_set)
                    sub.parse_definition()
                    continue
                self.backup2(delim)
            n = self.text_or_action()
            if n.kind in ("end", "else"):
                self.errorf(f"unexpected {{{{{n.kind}}}}}")
            root.append(n)
        self.add(self.name, root)

    def parse_definition(self) -> None:
        token = self.expect("string", "define clause", "rawstring")
        self.name = self._unquote(token)
        self.expect("right", "define clause")
        nodes, end = self.item_list()
        if end.kind != "end":
            self.errorf(f"unexpected {{{{{end.kind}}}}} in define clause")
        self.add(self.name, nodes)

    def item_list(self) -> tuple[list[Node], Node]:
        nodes: list[Node] = []
        while self.peek_non_space().typ != "eof":
            n = self.text_or_action()
            if n.kind in ("end", "else"):
                return nodes, n
            nodes.append(n)
        self.errorf("unexpected EOF")
        raise AssertionError  # unreachable

    def text_or_action(self) -> Node:
        token = self.next_non_space()
        if token.typ == "text":
            return Node("text", token.pos, token.val)
        if token.typ == "left":
            return self.action()
        self.unexpected(token, "input")
        raise AssertionError

    def action(self) -> Node:
        token = self.next_non_space()
        if token.typ == "keyword":
            control = {
                "block": self.block_control,
                "break": self.loop_control,
                "continue": self.loop_control,
                "else": self.else_control,
                "end": self.end_control,
                "if": self.branch_control,
                "range": self.branch_control,
                "template": self.template_control,
                "with": self.branch_control,
            }.get(token.val)
            if control is not None:
                return control(token)
        self.backup()
        token = self.peek()
        return Node("action", token.pos, pipe=self.pipeline("command", "right"))

    def loop_control(self, token: Item) -> Node:
        if (after := self.next_non_space()).typ != "right":
            self.unexpected(after, f"{{{{{token.val}}}}}")
        if self.range_depth == 0:
            self.errorf(f"{{{{{token.val}}}}} outside {{{{range}}}}")
        return Node(token.val, token.pos)

    def pipeline(self, context: str, end: str) -> Pipe:
        pipe = Pipe(self.peek_non_space().pos)
        while True:  # declarations: Go's `goto decls`
            v = self.peek_non_space()
            if v.typ != "variable":
                break
            self.next()
            after = self.peek()
            nxt = self.peek_non_space()
            if nxt.typ in ("assign", "declare"):
                self.next_non_space()
                pipe.decl.append(v.val)
                self.vars.append(v.val)
                break
            if nxt.typ == "char" and nxt.val == ",":
                self.next_non_space()
                pipe.decl.append(v.val)
                self.vars.append(v.val)
                if context == "range" and len(pipe.decl) < 2:
                    if self.peek_non_space().typ in ("variable", "right", "rparen"):
                        continue
                    self.errorf("range can only initialize variables")
                self.errorf(f"too many declarations in {context}")
            if after.typ == "space":
                self.backup3(v, after)
            else:
                self.backup2(v)
            break
        while True:
            token = self.next_non_space()
            if token.typ == end:
                self.check_pipeline(pipe, context)
                return pipe
            if token.typ in (
                "bool",
                "charconst",
                "complex",
                "dot",
                "field",
                "identifier",
                "number",
                "rawstring",
                "string",
                "variable",
                "lparen",
            ) or self.is_keyword(token, "nil"):
                self.backup()
                pipe.cmds.append(self.command())
            else:
                self.unexpected(token, context)

    def check_pipeline(self, pipe: Pipe, context: str) -> None:
        if not pipe.cmds:
            self.errorf(f"missing value for {context}")
        for i, cmd in enumerate(pipe.cmds[1:]):
            if cmd[0].kind in ("bool", "dot", "nil", "number", "string"):
                self.errorf(f"non executable command in pipeline stage {i + 2}")

    def branch_control(self, token: Item) -> Node:
        context = token.val
        depth = len(self.vars)
        pipe = self.pipeline(context, "right")
        self.range_depth += context == "range"
        body, nxt = self.item_list()
        self.range_depth -= context == "range"
        node = Node(context, pipe.pos, pipe=pipe, children=body)
        if nxt.kind == "else":
            if context in ("if", "with") and self.is_keyword(self.peek(), context):
                node.orelse = [self.branch_control(self.next())]
            else:
                node.orelse, nxt = self.item_list()
                if nxt.kind != "end":
                    self.errorf(f"expected end; found {{{{{nxt.kind}}}}}")
        del self.vars[depth:]
        return node

    def end_control(self, token: Item) -> Node:
        return Node("end", self.expect("right", "end").pos)

    def else_control(self, token: Item) -> Node:
        peek = self.peek_non_space()
        if peek.typ == "keyword" and peek.val in ("if", "with"):
            return Node("else", peek.pos)
        return Node("else", self.expect("right", "else").pos)

    def block_control(self, token: Item) -> Node:
        name_token = self.next_non_space()
        name = self.template_name(name_token, "block clause")
        pipe = self.pipeline("block clause", "right")
        sub = _Parser(self.text, self.lex, self.tree_set, name)
        nodes, end = sub.item_list()
        if end.kind != "end":
            self.errorf(f"unexpected {{{{{end.kind}}}}} in block clause")
        sub.add(name, nodes)
        return Node("template", name_token.pos, name, pipe)

    def template_control(self, token: Item) -> Node:
        name_token = self.next_non_space()
        name = self.template_name(name_token, "template clause")
        pipe = None
        if self.next_non_space().typ != "right":
            self.backup()
            pipe = self.pipeline("template clause", "right")
        return Node("template", name_token.pos, name, pipe)

    def template_name(self, token: Item, context: str) -> str:
        if token.typ not in ("string", "rawstring"):
            self.unexpected(token, context)
        return self._unquote(token)

    def _unquote(self, token: Item) -> str:
        try:
            return golang.unquote(token.val)
        except golang.GoSyntaxError:
            self.errorf("invalid syntax")
            raise

    def command(self) -> list[Node]:
        args: list[Node] = []
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                args.append(operand)
            token = self.next()
            if token.typ == "space":
                continue
            if token.typ in ("right", "rparen"):
                self.backup()
            elif token.typ != "pipe":
                self.unexpected(token, "operand")
            break
        if not args:
            self.errorf("empty command")
        return args

    def operand(self) -> Node | None:
        node = self.term()
        if node is None:
            return None
        if self.peek().typ == "field":
            fields = []
            while self.peek().typ == "field":
                fields.append(self.next().val)
            if node.kind in ("field", "variable") and isinstance(node.value, list):
                node = Node(node.kind, node.pos, [*node.value, *(f[1:] for f in fields)])
            elif node.kind in ("bool", "string", "number", "nil", "dot"):
                self.errorf(f"unexpected . after term {node.value!r}")
            else:
                node = Node("chain", node.pos, [f[1:] for f in fields], children=[node])
        return node

    def term(self) -> Node | None:
        token = self.next_non_space()
        typ = token.typ
        if typ == "identifier":
            if token.val not in FUNCTIONS:
                self.errorf(f"function {token.val!r} not defined")
            return Node("identifier", token.pos, token.val)
        if typ == "dot":
            return Node("dot", token.pos, ".")
        if self.is_keyword(token, "nil"):
            return Node("nil", token.pos, "nil")
        if typ == "variable":
            idents = token.val.split(".")
            if idents[0] not in self.vars:
                self.errorf(f"undefined variable {idents[0]!r}")
            return Node("variable", token.pos, idents)
        if typ == "field":
            return Node("field", token.pos, token.val[1:].split("."))
        if typ == "bool":
            return Node("bool", token.pos, token.val)
        if typ in ("charconst", "complex", "number"):
            if message := _number_error(token.val, typ):
                self.errorf(message)
            return Node("number", token.pos, token.val)
        if typ == "lparen":
            if self.stack_depth >= 10000:
                self.errorf("max expression depth exceeded")
            self.stack_depth += 1
            try:
                return Node("pipe", token.pos, pipe=self.pipeline("parenthesized pipeline", "rparen"))
            finally:
                self.stack_depth -= 1
        if typ in ("string", "rawstring"):
            return Node("string", token.pos, self._unquote(token))
        self.backup()
        return None


def _describe(token: Item) -> str:
    if token.typ == "eof":
        return "EOF"
    if token.typ == "keyword":
        return f"<{token.val}>"
    return repr(token.val) if len(token.val) <= 10 else repr(token.val[:10]) + "..."


def _is_empty(nodes: list[Node]) -> bool:
    return all(n.kind == "text" and not str(n.value).strip() for n in nodes)


def _number_error(text: str, typ: str) -> str | None:
    """The error Go's parser gives for a number literal, or None when it reads."""
    try:
        if typ == "charconst":
            ch, rest = golang.unquote_char(text[1:], "'")
            return None if rest == "'" else f"malformed character constant: {text}"
        if typ == "complex":
            cut = max(text.rfind("+"), text.rfind("-"))
            golang.parse_float(text[:cut])
            golang.parse_float(text[cut:-1])
            return None
        if text.endswith("i"):
            try:
                golang.parse_float(text[:-1])
                return None
            except ValueError:
                pass
        for parse in (lambda: golang.parse_uint(text, 0), lambda: golang.parse_int(text, 0)):
            try:
                parse()
                return None
            except ValueError:
                pass
        golang.parse_float(text)
        if not any(c in text for c in ".eEpP"):
            return f"integer overflow: {text!r}"
        return None
    except ValueError:
        return f"illegal number syntax: {text!r}"


def parse(template: str) -> Tree:
    """Parse a TEMPLATE as `ollama create` does (Go's parser, then Ollama's Vars walk); raise
    TemplateParseError at the place either refuses it."""
    tree_set: dict[str, list[Node]] = {}
    _Parser(template, _Lexer(template), tree_set).parse()
    tree = Tree(tree_set)
    for node in tree.walk():
        if node.kind == "template" and node.pipe is None:
            # Ollama's Identifiers refuses a {{ template "name" }} call that passes no pipeline.
            raise TemplateParseError(
                f'{{{{template "{node.value}"}}}} passes no data: Ollama refuses it ("undefined template '
                f'specified"); write {{{{template "{node.value}" .}}}}',
                node.pos,
            )
    return tree


# --- Rendering the subset our TEMPLATEs use, on the parsed tree -----------------------------------

# The functions the renderer runs; the parser knows all of Go's and Ollama's (FUNCTIONS).
_FUNCS = frozenset({"eq", "ne", "and", "or", "not", "len", "index", "slice", "json"})
_OPERANDS = frozenset({"field", "variable", "dot", "string", "number", "bool", "identifier", "pipe", "chain"})


class _Stop(Exception):
    """`{{ .Response }}` reached while rendering a prompt to generate from."""


@functools.lru_cache(maxsize=64)
def _tree(template: str) -> Tree:
    """parse, once per template: every request renders its model's TEMPLATE, and it rarely changes."""
    return parse(template)


@functools.lru_cache(maxsize=64)
def _renderable(template: str) -> list[Node]:
    """The main template's nodes, once every node is checked to be in the subset `render` runs, so a
    TEMPLATE that leans on more is refused whatever branch a render would take."""
    tree = _tree(template)
    if set(tree.templates) != {""}:
        raise TemplateError("unsupported template action {{define}} or {{block}}")
    for n in tree.walk():
        _check(n)
    return tree.templates[""]


def _check(n: Node) -> None:
    def refuse(what: str) -> NoReturn:
        raise TemplateError(f"unsupported template {what} at offset {n.pos}")

    if n.kind not in ("text", "action", "if", "range") and n.kind not in _OPERANDS:
        refuse(f"action {{{{{n.kind}}}}}")
    if n.kind == "identifier" and n.value not in _FUNCS:
        refuse(f"function {n.value!r}")
    if n.kind == "number" and not _is_int(str(n.value)):
        refuse(f"number {n.value}")
    if n.pipe is not None:
        if len(n.pipe.cmds) != 1:
            refuse("pipeline with '|'")
        if n.pipe.decl and n.kind != "range":
            refuse("variable declaration outside {{range}}")
        cmd = n.pipe.cmds[0]
        if len(cmd) > 1 and cmd[0].kind != "identifier":
            refuse("arguments to a value that is not a function")


def _is_int(text: str) -> bool:
    try:
        golang.parse_int(text, 0)
    except ValueError:
        return False
    return True


def variables(template: str) -> set[str]:
    """Every field and variable name the template mentions, lowercased (Ollama's `Template.Vars`)."""
    return _tree(template).identifiers()


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
        self.root, self.generate = root, generate
        self.out: list[str] = []

    def run(self, nodes: list[Node], dot, env: dict) -> None:
        for n in nodes:
            if n.kind == "text":
                self.out.append(str(n.value))
            elif n.kind == "action":
                self.out.append(_text(self.pipe(n, dot, env)))
            elif n.kind == "if":
                self.run(n.children if _truthy(self.pipe(n, dot, env)) else n.orelse, dot, env)
            else:  # range
                items = self.pipe(n, dot, env) or []
                pairs = list(items.items()) if isinstance(items, Mapping) else list(enumerate(items))
                if not pairs:
                    self.run(n.orelse, dot, env)
                names = n.pipe.decl if n.pipe else []
                for key, item in pairs:
                    scope = dict(env)
                    if len(names) == 1:
                        scope[names[0]] = item
                    elif len(names) == 2:
                        scope[names[0]], scope[names[1]] = key, item
                    self.run(n.children, item, scope)

    def pipe(self, n: Node, dot, env: dict):
        """The value of n's pipeline: one command (`_check` refuses `|`), a call or a single operand."""
        assert n.pipe is not None
        head, *args = n.pipe.cmds[0]
        if head.kind == "identifier":
            return self.call(str(head.value), args, dot, env)
        return self.value(head, dot, env)

    def value(self, n: Node, dot, env: dict):
        if n.kind == "string":
            return n.value
        if n.kind == "number":
            return golang.parse_int(str(n.value), 0)
        if n.kind == "bool":
            return n.value == "true"
        if n.kind == "dot":
            return dot
        if n.kind == "pipe":
            return self.pipe(n, dot, env)
        if n.kind == "identifier":  # a function as an argument is called without arguments, as in Go
            return self.call(str(n.value), [], dot, env)
        assert isinstance(n.value, list)
        if n.kind == "chain":
            return self.fields(self.value(n.children[0], dot, env), n.value)
        if n.kind == "variable":
            head, *rest = n.value
            return self.fields(self.root if head == "$" else env[head], rest)
        return self.fields(dot, n.value)  # field

    def fields(self, obj, names: list[str]):
        for name in names:
            if self.generate and name == "Response" and obj is self.root:
                raise _Stop
            obj = _get(obj, name)
        return obj

    def call(self, name: str, args: list[Node], dot, env: dict):
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
        if name == "slice":  # slice x i [j]: what Ollama's TEMPLATEs use to tell the last message
            return vals[0][vals[1] if len(vals) > 1 else None : vals[2] if len(vals) > 2 else None]
        if name == "index":
            obj = vals[0]
            for k in vals[1:]:
                obj = obj[k]
            return obj
        return _go_json(vals[0])  # json


def render(template: str, values: Mapping[str, object], generate: bool = True) -> str:
    """Render like Go's text/template for the supported subset; falsy = empty/zero/missing.

    With `generate` (how Ollama renders a prompt to generate from) nothing after `{{ .Response }}`
    is rendered: the model writes that part itself.
    """
    r = _Renderer(values, generate)
    with contextlib.suppress(_Stop):
        r.run(_renderable(template), values, {})
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
    calls = [
        {
            "ID": c.get("id", ""),
            "Function": {
                "Index": c.get("function", {}).get("index", 0),
                "Name": c["function"]["name"],
                "Arguments": c["function"].get("arguments") or {},
            },
        }
        for c in m.get("tool_calls") or []
    ]
    return {
        "Role": m["role"],
        "Content": m.get("content", ""),
        "Thinking": m.get("thinking", ""),
        "ToolCalls": calls,
        "ToolName": m.get("tool_name", ""),
    }


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
