"""One Modelfile per rule of Ollama's parser and create step, each rule's accepted and refused sides.

The expectations are written by hand from Ollama's Go source (v0.33: parser/parser.go, parser's
CreateRequest, api/types.go FormatParams, server/create.go, types/model/name.go, template/template.go)
and the Go library rules it calls (strconv.ParseInt(s, 10, 64), strconv.ParseFloat(s, 32),
strconv.ParseBool, strconv.IsPrint under Unicode 15.0.0 as in Go 1.26, text/template/parse,
golang.org/x/mod/semver), not from our checker's output.

verdict: "ok" (ollama create succeeds, nothing served otherwise), "warn" (it succeeds but serves
something other than the file seems to say), "error" (ollama create fails).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from contract.modelfile import golang, gotemplate, grammar
from pipeline.modelfile import render
from pipeline.modelfile.render import ModelfileRenderError
from tests.families import qwen

F32_07 = 0.7  # float32(0.7) travels as JSON "0.7" and is stored as that float64


@dataclass
class Case:
    id: str
    text: str
    verdict: str
    stored: dict = field(default_factory=dict)  # expected subset of what CreateRequest sends
    says: str = ""  # a fragment the first error or warning must contain
    where: tuple[int, int] | None = None  # (line, column) of the first problem


CASES = [
    # --- instructions, values and quotes (parser.go's state machine) ---
    Case(
        "lower-case instruction",
        "from llama3\nsystem hi there\n",
        "ok",
        {"from": "llama3", "system": "hi there"},
    ),
    Case("tab after the instruction", "FROM\tllama3\n", "ok", {"from": "llama3"}),
    Case("unquoted value keeps inner spaces", "FROM x\nSYSTEM  a   b  \n", "ok", {"system": "a   b"}),
    Case(
        "unknown instruction",
        "FROM x\nPARAMS temperature 1\n",
        "error",
        says="unknown instruction",
        where=(2, 1),
    ),
    Case("instruction with no value at the end", "FROM x\nSYSTEM", "error", says="file ends", where=(2, 1)),
    Case("instruction then a line end", "FROM x\nSYSTEM\nhi\n", "error", says="followed by a line end"),
    Case("no FROM", "SYSTEM hi\n", "error", says="no FROM"),
    Case("comment after spaces", "  # note\nFROM x\n", "ok", {"from": "x"}),
    Case("no-break space inside a comment", "# a\u00a0comment\nFROM x\n", "ok", {"from": "x"}),
    Case("no-break space before a comment", "\u00a0# c\nFROM x\n", "error", says="unknown instruction"),
    Case("double quotes", 'FROM x\nSYSTEM "  padded  "\n', "ok", {"system": "  padded  "}),
    Case("empty quotes", 'FROM x\nLICENSE ""\n', "ok", {"license": [""]}),
    Case("quote inside a quoted value", 'FROM x\nSYSTEM "say "hi" now"\n', "ok", {"system": 'say "hi" now'}),
    Case("triple quotes over lines", 'FROM x\nSYSTEM """a\n\nb"""\n', "ok", {"system": "a\n\nb"}),
    Case(
        "nested triple quotes on one line",
        'FROM x\nSYSTEM """He said """hi""" ok"""\n',
        "ok",
        {"system": 'He said """hi""" ok'},
    ),
    # The value ends at the first line end where it ends with """: the rest is read as instructions.
    Case(
        "triple quotes at a line end close early",
        'FROM x\nSYSTEM """x\n"""y"""\n"""\n',
        "error",
        where=(4, 1),
    ),
    Case("four quotes never close", 'FROM x\nSYSTEM """"\n', "error", says="never closed", where=(2, 8)),
    Case(
        "unclosed quote at end of file", 'FROM x\nSYSTEM "open\n', "error", says="never closed", where=(2, 8)
    ),
    Case(
        "quote closed too late swallows lines",
        'FROM x\nPARAMETER stop "a" b\nSYSTEM ok"\n',
        "warn",
        {"parameters": {"stop": ['a" b\nSYSTEM ok']}},
        says="spans several lines",
    ),
    Case(
        "single quotes are kept", "FROM x\nSYSTEM 'hi'\n", "warn", {"system": "'hi'"}, says="' is not a quote"
    ),
    Case(
        "message roles",
        "FROM x\nMESSAGE user Hi\nMESSAGE assistant Yo\n",
        "ok",
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]},
    ),
    Case("message role is case-sensitive", "FROM x\nMESSAGE User hi\n", "error", says="message role 'User'"),
    Case("parameter name with a dash", "FROM x\nPARAMETER num-ctx 4\n", "error", says="parameter name"),
    Case(
        "two spaces after PARAMETER",
        "FROM x\nPARAMETER  temperature 1\n",
        "error",
        says="unknown parameter ''",
    ),
    # --- encodings, line ends and dropped runes ---
    Case("CRLF single-line values", "FROM x\r\nSYSTEM hi\r\n", "ok", {"from": "x", "system": "hi"}),
    Case("bare CR line ends", "FROM x\rSYSTEM hi\r", "ok", {"from": "x", "system": "hi"}),
    Case(
        "CRLF kept inside TEMPLATE",
        'FROM x\r\nTEMPLATE """a\r\n{{ .Prompt }}"""\r\n',
        "warn",
        {"template": "a\r\n{{ .Prompt }}"},
        says="\\r\\n",
    ),
    Case(
        "form feed in a value", "FROM x\nSYSTEM a\fb\n", "warn", {"system": "ab"}, says="U+000C", where=(2, 9)
    ),
    Case("vertical tab in a value", 'FROM x\nSYSTEM """a\vb"""\n', "warn", {"system": "ab"}, says="U+000B"),
    Case("U+2028 in a value", "FROM x\nSYSTEM a\u2028b\n", "warn", {"system": "ab"}, says="U+2028"),
    Case(
        "zero-width space before FROM", "\u200bFROM x\n", "warn", {"from": "x"}, says="U+200B", where=(1, 1)
    ),
    Case("no-break space in a value", "FROM x\nSYSTEM a\u00a0b\n", "warn", {"system": "ab"}, says="U+00A0"),
    # U+1FAE8 (SHAKING FACE) is Unicode 15.0: printable in Go 1.26, unknown to Python 3.11's tables.
    Case("Unicode 15.0 emoji is kept", "FROM x\nSYSTEM \U0001fae8\n", "ok", {"system": "\U0001fae8"}),
    # U+1FAE9 is Unicode 16.0: unassigned for Go 1.26, so Ollama drops it.
    Case(
        "Unicode 16.0 emoji is dropped",
        "FROM x\nSYSTEM a\U0001fae9\n",
        "warn",
        {"system": "a"},
        says="U+1FAE9",
    ),
    Case("UTF-8 BOM as text", "\ufeffFROM x\n", "ok", {"from": "x"}),
    # --- PARAMETER values: api.FormatParams ---
    Case("int", "FROM x\nPARAMETER num_ctx 4096\n", "ok", {"parameters": {"num_ctx": 4096}}),
    Case("int with sign", "FROM x\nPARAMETER num_gpu +2\n", "ok", {"parameters": {"num_gpu": 2}}),
    Case("int with _", "FROM x\nPARAMETER num_batch 8_192\n", "error", says="8_192", where=(2, 21)),
    Case(
        "int in Arabic-Indic digits",
        "FROM x\nPARAMETER num_ctx \u0664\u0660\u0669\u0666\n",
        "error",
        says="ASCII",
    ),
    Case("int hex is not base 10", "FROM x\nPARAMETER seed 0x10\n", "error", says="not an integer"),
    Case(
        "int 2^63-1",
        "FROM x\nPARAMETER seed 9223372036854775807\n",
        "warn",
        {"parameters": {"seed": 9223372036854775808}},
        says="JSON",
    ),
    Case(
        "int -2^63",
        "FROM x\nPARAMETER seed -9223372036854775808\n",
        "ok",
        {"parameters": {"seed": -9223372036854775808}},
    ),
    Case("int 2^63", "FROM x\nPARAMETER seed 9223372036854775808\n", "error", says="out of range"),
    Case("int past 64 bits", "FROM x\nPARAMETER seed 99999999999999999999\n", "error", says="out of range"),
    Case(
        "int above 2^53 loses precision",
        "FROM x\nPARAMETER seed 9007199254740993\n",
        "warn",
        {"parameters": {"seed": 9007199254740992}},
        says="9007199254740992",
    ),
    Case("int quoted with a space", 'FROM x\nPARAMETER num_ctx " 4096"\n', "error", says="not an integer"),
    Case("float", "FROM x\nPARAMETER temperature 0.7\n", "ok", {"parameters": {"temperature": F32_07}}),
    Case(
        "float forms",
        "FROM x\nPARAMETER top_p .5\nPARAMETER min_p 5.\nPARAMETER top_k 1\n",
        "ok",
        {"parameters": {"top_p": 0.5, "min_p": 5.0, "top_k": 1}},
    ),
    Case("hex float", "FROM x\nPARAMETER top_p 0x1p-2\n", "ok", {"parameters": {"top_p": 0.25}}),
    Case("hex float needs p", "FROM x\nPARAMETER top_p 0x1.8\n", "error", says="not a number"),
    Case(
        "float32 max",
        "FROM x\nPARAMETER repeat_penalty 3.4028235e38\n",
        "ok",
        {"parameters": {"repeat_penalty": 3.4028235e38}},
    ),
    Case("float32 overflow", "FROM x\nPARAMETER repeat_penalty 3.5e38\n", "error", says="out of range"),
    Case(
        "float overflow", "FROM x\nPARAMETER temperature 1e40\n", "error", says="out of range", where=(2, 23)
    ),
    Case(
        "float underflow",
        "FROM x\nPARAMETER temperature 1e-50\n",
        "warn",
        {"parameters": {"temperature": 0.0}},
    ),
    Case("float with _", "FROM x\nPARAMETER temperature 0_7\n", "warn", {"parameters": {"temperature": 7.0}}),
    Case("float inf", "FROM x\nPARAMETER temperature inf\n", "error", says="cannot store"),
    Case("float nan", "FROM x\nPARAMETER temperature NaN\n", "error", says="cannot store"),
    Case("float +nan", "FROM x\nPARAMETER temperature +nan\n", "error", says="not a number"),
    Case("float text", "FROM x\nPARAMETER temperature hot\n", "error", says="not a number"),
    Case("bool tRuE", "FROM x\nPARAMETER use_mmap tRuE\n", "error", says="not a boolean", where=(2, 20)),
    Case("bool yes", "FROM x\nPARAMETER use_mmap yes\n", "error", says="not a boolean"),
    Case(
        "stop accumulates",
        'FROM x\nPARAMETER stop a\nPARAMETER stop "b c"\n',
        "ok",
        {"parameters": {"stop": ["a", "b c"]}},
    ),
    Case(
        "repeated single parameter",
        "FROM x\nPARAMETER top_k 1\nPARAMETER top_k 2\n",
        "warn",
        {"parameters": {"top_k": 2}},
        says="more than once",
    ),
    Case(
        "unknown parameter",
        "FROM x\nPARAMETER temprature 1\n",
        "error",
        says="unknown parameter 'temprature'",
    ),
    Case(
        "upper-case parameter", "FROM x\nPARAMETER NUM_CTX 1\n", "error", says="unknown parameter 'NUM_CTX'"
    ),
    Case("deprecated parameter", "FROM x\nPARAMETER mirostat 1\n", "warn", says="deprecated"),
    # --- FROM as a model name: modelref.ParseRef, model.ParseName(...).IsValid() ---
    Case("name with tag", "FROM qwen2.5:7b-instruct\n", "ok", {"from": "qwen2.5:7b-instruct"}),
    Case("namespaced name", "FROM molbal/cra-v1-7b\n", "ok"),
    Case("host name", "FROM hf.co/bartowski/Qwen2.5-7B-Instruct-GGUF:Q4_K_M\n", "ok"),
    Case("host with port", "FROM localhost:5000/library/llama3:8b\n", "ok"),
    Case("scheme", "FROM https://registry.ollama.ai/library/llama3\n", "ok"),
    Case("cloud suffix", "FROM gpt-oss:20b-cloud\n", "ok"),
    Case("both source suffixes", "FROM llama3:cloud:local\n", "error", says="not both"),
    Case("trailing # note", "FROM llama3 # the base\n", "error", {"from": "llama3 # the base"}, says="' '"),
    Case("space in the name", "FROM llama 3\n", "error", says="' '"),
    Case("empty tag", "FROM llama3:\n", "error", says="tag"),
    Case("dot in namespace", "FROM a.b/llama3\n", "error", says="namespace"),
    Case("name starting with -", "FROM -llama3\n", "error", says="must start"),
    Case("non-ASCII name", "FROM lläma\n", "error", says="model"),
    Case("quoted name with spaces is trimmed", 'FROM " llama3 "\n', "ok", {"from": " llama3 "}),
    Case("quoted blank name", 'FROM " "\n', "error", says="empty FROM"),
    Case("single-quoted name", "FROM 'llama3'\n", "error", says="model"),
    # --- TEMPLATE: text/template with Ollama's functions ---
    Case(
        "template with range, else if, with, len, slice, comparisons",
        'FROM x\nTEMPLATE """{{- range $i, $m := .Messages }}{{ if eq $m.Role "user" }}{{ $m.Content }}'
        "{{ else if and (gt (len $.Messages) 1) (ne $i 0) }}{{ slice $m.Content 0 1 }}{{ else }}"
        '{{ continue }}{{ end }}{{ end }}{{ with .Tools }}{{ json . }}{{ end }}"""\n',
        "ok",
    ),
    Case(
        "template with Ollama's own functions",
        'FROM x\nTEMPLATE """{{ currentDate }} {{ yesterdayDate }}{{ range .Tools }}'
        "{{ range $k, $v := .Function.Parameters.Properties }}{{ toTypeScriptType $v }}"
        '{{ end }}{{ end }}"""\n',
        "ok",
    ),
    Case("template comment and trim markers", 'FROM x\nTEMPLATE """{{/* c */}} {{- .Prompt -}} """\n', "ok"),
    Case("newline inside an action", 'FROM x\nTEMPLATE """{{ .Prompt\n}}"""\n', "ok"),
    Case(
        "define and template call",
        'FROM x\nTEMPLATE """{{ define "t" }}x{{ end }}{{ template "t" . }}"""\n',
        "ok",
    ),
    Case(
        "template call to an undefined template",
        'FROM x\nTEMPLATE """{{ template "t" . }}"""\n',
        "warn",
        says="never defines",
        where=(2, 25),
    ),
    Case("unclosed action", 'FROM x\nTEMPLATE """{{ .Prompt"""\n', "error", says="unclosed action"),
    Case(
        "unknown function",
        'FROM x\nTEMPLATE """{{ upper .Prompt }}"""\n',
        "error",
        says="function 'upper' not defined",
        where=(2, 16),
    ),
    Case("missing end", 'FROM x\nTEMPLATE """{{ if .System }}x"""\n', "error", says="unexpected EOF"),
    Case("stray end", 'FROM x\nTEMPLATE """x{{ end }}"""\n', "error", says="unexpected {{end}}"),
    Case("break outside range", 'FROM x\nTEMPLATE """{{ break }}"""\n', "error", says="outside {{range}}"),
    Case("undefined variable", 'FROM x\nTEMPLATE """{{ $x }}"""\n', "error", says="undefined variable"),
    Case("comment needs {{/*", 'FROM x\nTEMPLATE """{{ /* c */ }}"""\n', "error", says="unexpected '/'"),
    Case(
        "template call without data",
        'FROM x\nTEMPLATE """{{ template "t" }}"""\n',
        "error",
        says="undefined template specified",
    ),
    Case(
        "literal after a pipe", 'FROM x\nTEMPLATE """{{ .Prompt | 3 }}"""\n', "error", says="non executable"
    ),
    Case("empty TEMPLATE keeps the base's", 'FROM x\nTEMPLATE ""\n', "warn", says="empty TEMPLATE"),
    Case(
        "RENDERER sets the TEMPLATE aside",
        "FROM x\nRENDERER qwen3-coder\nTEMPLATE {{ .Prompt }}\n",
        "warn",
        {"renderer": "qwen3-coder"},
        says="not used",
    ),
    Case("PARSER", "FROM x\nPARSER qwen3\n", "warn", {"parser": "qwen3"}, says="parser"),
    # --- REQUIRES: golang.org/x/mod/semver with a v prefix added ---
    Case("requires", "FROM x\nREQUIRES 0.14.0\n", "ok", {"requires": "0.14.0"}),
    Case("requires with v", "FROM x\nREQUIRES v0.14.0\n", "ok", {"requires": "0.14.0"}),
    Case("requires shorthand", "FROM x\nREQUIRES 1\nREQUIRES 1.2\n", "ok", {"requires": "1.2"}),
    Case("requires pre-release and build", "FROM x\nREQUIRES 1.0.0-rc.1+build.05\n", "ok"),
    Case("requires word", "FROM x\nREQUIRES latest\n", "error", says="semantic version"),
    Case("requires leading zero", "FROM x\nREQUIRES 1.02.0\n", "error", says="semantic version"),
    Case("requires numeric pre-release with leading zero", "FROM x\nREQUIRES 1.0.0-01\n", "error"),
    Case("requires four parts", "FROM x\nREQUIRES 1.2.3.4\n", "error"),
    Case("requires capital V", "FROM x\nREQUIRES V1.0.0\n", "error"),
    # --- several instructions ---
    Case(
        "two FROM lines", "FROM a\nFROM b\n", "warn", {"from": "b"}, says="more than one FROM", where=(1, 1)
    ),
    Case("empty SYSTEM keeps the base's", 'FROM x\nSYSTEM ""\n', "warn", says="empty SYSTEM"),
]


def verdict(problems: list[grammar.Problem]) -> str:
    if any(p.severity == "error" for p in problems):
        return "error"
    return "warn" if problems else "ok"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_verdict_and_stored_values_match_ollama(case: Case, tmp_path):
    problems = grammar.check_text(case.text, tmp_path)
    assert verdict(problems) == case.verdict, problems
    first = next((p for p in problems if p.severity == "error"), problems[0] if problems else None)
    if case.says:
        assert case.says in first.message, problems
    if case.where:
        assert (first.line, first.column) == case.where, problems
    if case.stored:
        mf, _ = grammar.scan(case.text)
        stored = grammar.request(mf) if case.verdict != "error" else {"from": mf.first("model")}
        for key, value in case.stored.items():
            assert stored[key] == value, (key, stored)


@pytest.mark.parametrize(
    "value", ["1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"]
)
def test_every_bool_go_reads(value):
    assert grammar.check_text(f"FROM x\nPARAMETER use_mmap {value}\n") == []
    stored = grammar.request(grammar.parse(f"FROM x\nPARAMETER use_mmap {value}\n"))
    assert stored["parameters"] == {"use_mmap": value in ("1", "t", "T", "TRUE", "true", "True")}


@pytest.mark.parametrize(
    "data, system",
    [
        (b"\xef\xbb\xbfFROM x\nSYSTEM hi\n", "hi"),  # UTF-8 BOM dropped
        (b"\xff\xfe" + "FROM x\nSYSTEM h\u00e9\n".encode("utf-16-le"), "h\u00e9"),  # UTF-16 LE with BOM
        (b"\xfe\xff" + "FROM x\nSYSTEM h\u00e9\n".encode("utf-16-be"), "h\u00e9"),  # UTF-16 BE with BOM
        (b"FROM x\nSYSTEM a\xffb\xe2\x82\n", "a\ufffdb\ufffd\ufffd"),  # one U+FFFD per bad byte, as Go
    ],
)
def test_files_are_decoded_as_ollama_decodes_them(tmp_path, data, system):
    path = tmp_path / "Modelfile"
    path.write_bytes(data)
    problems = grammar.check_file(path)
    if "\ufffd" in system:  # accepted, but not what the file's author typed
        assert [(p.severity, p.line, p.column) for p in problems] == [("warning", 2, 9)]
    else:
        assert problems == []
    assert grammar.parse(grammar.read(path)).first("system") == system


def test_utf16_without_bom_is_read_as_utf8_and_refused(tmp_path):
    path = tmp_path / "Modelfile"
    path.write_bytes("FROM x\n".encode("utf-16-le"))  # NUL bytes inside the name: not a command
    assert verdict(grammar.check_file(path)) == "error"


def test_checker_goes_on_after_the_first_error_with_positions(tmp_path):
    text = (
        "FROM x\n"
        "PARAMS a\n"  # 2:1 unknown instruction (Ollama stops here)
        "PARAMETER num_ctx 8_192\n"  # 3:19
        'TEMPLATE """{{ .Prompt"""\n'  # template error
        "SYSTEM a\fb\n"  # 5:9 dropped rune
        "REQUIRES latest\n"  # 6:1
    )
    problems = grammar.check_text(text, tmp_path)
    assert [(p.severity, p.line) for p in problems] == [
        ("error", 2),
        ("error", 3),
        ("error", 4),
        ("warning", 5),
        ("error", 6),
    ]
    assert (problems[1].line, problems[1].column) == (3, 19)
    assert (problems[3].line, problems[3].column) == (5, 9)


def test_template_error_points_into_the_file(tmp_path):
    text = 'FROM x\nTEMPLATE """line one\n  {{ if .System }}{{ nope }}{{ end }}"""\n'
    (problem,) = grammar.check_text(text, tmp_path)
    assert problem.severity == "error" and "function 'nope' not defined" in problem.message
    assert (problem.line, problem.column) == (3, 22)  # where `nope` starts


def test_file_rules(tmp_path, gguf_file):
    gguf_file("draft.gguf", kind="model")
    gguf_file("base.gguf", kind="model")
    assert verdict(grammar.check_text("FROM x\nDRAFT ./draft.gguf\n", tmp_path)) == "ok"
    found = grammar.check_text("FROM x\nDRAFT ./missing.gguf\n", tmp_path)
    assert verdict(found) == "error" and "DRAFT" in found[0].message
    found = grammar.check_text("FROM ./base.gguf\nDRAFT ./base.gguf\n", tmp_path)
    assert verdict(found) == "error" and "same file as FROM" in found[0].message
    found = grammar.check_text("FROM gpt-oss:20b-cloud\nDRAFT ./draft.gguf\n", tmp_path)
    assert verdict(found) == "error" and "cloud" in found[0].message
    # A missing ./file is no model name either: '.' cannot start a namespace.
    found = grammar.check_text("FROM ./missing.gguf\n", tmp_path)
    assert verdict(found) == "error" and "no such file" in found[0].message
    found = grammar.check_text("FROM ~no-such-user-here/m.gguf\n", tmp_path)
    assert verdict(found) == "error" and "failed to find user" in found[0].message
    # An empty FROM is the Modelfile's own folder: refused without weights, taken with them.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert verdict(grammar.check_text("FROM \n", empty)) == "error"
    assert verdict(grammar.check_text("FROM \n", tmp_path)) == "warn"  # holds base.gguf


def test_pinned_unicode_tables_are_gos_not_pythons():
    assert golang.UNICODE_VERSION == "15.0.0"  # Go 1.21 to 1.26, which Ollama's releases build with
    assert golang.is_print("\U0001fae8") and not golang.is_print("\U0001fae9")
    assert not any(golang.is_print(ch) for ch in "\x00\t\n\v\f\r\x85\xa0\u00ad\u200b\u2028\u2029\ufeff")
    assert all(golang.is_print(ch) for ch in " a~\u00e9\u2019\ufffd")
    assert golang.is_letter("\u00e9") and golang.is_digit("\u0664") and not golang.is_digit("\u00bd")


def test_template_vars_as_ollama_reads_them():
    tree = gotemplate.parse(
        "{{ if .System }}{{ range $i, $m := .Messages }}{{ $m.Role }}{{ end }}{{ end }}"
        '{{ with .Tools }}{{ (json .).Length }}{{ end }}{{ define "x" }}{{ .Prompt }}{{ end }}'
    )
    # Fields and variables of every pipeline, lower-cased; a range's declared $i/$m are not listed, nor
    # what hides in a chain like (json .).Length.
    assert tree.identifiers() == {"system", "messages", "$m", "role", "tools", "prompt"}


@pytest.mark.parametrize(
    "text, ok",
    [
        ("{{ 089 }}", False),  # Go: integer overflow (not octal, reads as a float without a dot)
        ("{{ 0x1p3 }}", True),
        ("{{ 1_000 }}", True),
        ("{{ 1__0 }}", False),
        ("{{ 'a' }}", True),
        ("{{ 'ab' }}", False),
        ('{{ "\\u00e9" }}', True),
        ('{{ "\\q" }}', False),
        ("{{ `raw\nstring` }}", True),
        ("{{ nil }}", True),
        ('{{ "x".Y }}', False),
        ("{{ (.A).B }}", True),
        ("{{ .A.B.C }}", True),
        ("{{ .A-b }}", False),
        ("{{ $x := 1 }}{{ $x = 2 }}{{ $x }}", True),
        ("{{ range $i, $e := .L }}{{ $i }}{{ end }}", True),
        ("{{ if .A }}{{ $v := 1 }}{{ end }}{{ $v }}", False),  # variables end with their block
        ('{{ define "a" }}1{{ end }}{{ define "a" }}2{{ end }}', False),
        ('{{ block "b" . }}x{{ end }}', True),
        ("{{ with .A }}x{{ else with .B }}y{{ end }}", True),
        ("{{ range .A }}x{{ else if .B }}y{{ end }}", False),
        ('{{ print 1 2 | printf "%v" }}', True),
        ("{{ html .A }}{{ js .A }}{{ urlquery .A }}{{ call .F }}{{ index .M 1 }}{{ println }}", True),
        ("{{ .A }", False),
        ("{{", False),
        ("}}", True),
        ("{{/* open", False),
    ],
)
def test_go_template_syntax(text, ok):
    if ok:
        gotemplate.parse(text)
    else:
        with pytest.raises(gotemplate.TemplateParseError):
            gotemplate.parse(text)


@pytest.mark.parametrize(
    "params, system, says",
    [
        (["temperature=1e40"], None, "--param temperature=1e40: '1e40' is out of range"),
        (["num_batch=8_192"], None, "--param num_batch=8_192: '8_192' is not an integer"),
        (
            ["seed=99999999999999999999"],
            None,
            "--param seed=99999999999999999999: '99999999999999999999' is out",
        ),
        (["use_mmap=tRuE"], None, "--param use_mmap=tRuE: 'tRuE' is not a boolean"),
        (["temperature=inf"], None, "cannot store"),
        (["temperature=0_7"], None, "without _"),  # Go reads 7: a misread, refused too
        (["seed=9007199254740993"], None, "stores 9007199254740992"),
        (["stop=a\fb"], None, "U+000C"),
        (['stop="'], None, "cannot hold this stop sequence"),
        (["stop=a\nb"], None, "cannot hold this stop sequence"),
        ([], "be \f kind\u2028now", "--system: holds non-printable characters (U+000C, U+2028)"),
        ([], "a\u00a0b", "U+00A0"),
        ([], 'say """\nhi', 'holds """'),
    ],
)
def test_writer_refuses_what_ollama_refuses_or_misreads(tmp_path, params, system, says):
    out = tmp_path / "W.Modelfile"
    with pytest.raises(ModelfileRenderError) as e:
        render.write(out, "qwen2.5:7b-instruct", params=params, system=system, template=qwen())
    assert says in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_writer_output_passes_the_checker_untouched(tmp_path):
    params = ["top_p=0x1p-1", "stop=THE END", "stop='quoted'", "seed=42", "use_mmap=false"]
    system = 'He said """hi""" and left.\nA second line with "quotes"'
    path, problems = render.write(
        tmp_path / "W.Modelfile", "qwen2.5:7b-instruct", params=params, system=system, template=qwen()
    )
    assert problems == [] and grammar.check_file(path) == []
    stored = grammar.request(grammar.parse(grammar.read(path)))
    assert stored["system"] == system
    assert stored["parameters"]["top_p"] == 0.5 and stored["parameters"]["use_mmap"] is False
    assert stored["parameters"]["stop"][-2:] == ["THE END", "'quoted'"]


def test_cli_reports_positions_and_severities(tmp_path):
    import subprocess
    import sys

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True)

    warn = tmp_path / "Warn.Modelfile"
    warn.write_text("FROM x\nSYSTEM a\fb\n", encoding="utf-8")
    bad = tmp_path / "Bad.Modelfile"
    bad.write_text("FROM x\nPARAMETER temperature 1e40\nPARAMETER use_mmap tRuE\n", encoding="utf-8")
    r = cli("modelfile", "check", str(warn))
    assert r.returncode == 0 and f"{warn}:2:9: warning: Ollama silently drops U+000C" in r.stderr
    r = cli("modelfile", "check", str(warn), str(bad))
    assert r.returncode == 1
    assert f"{bad}:2:23: error: parameter temperature" in r.stderr
    assert f"{bad}:3:20: error: parameter use_mmap" in r.stderr
    assert "2 error(s): ollama create fails" in r.stderr
    out = tmp_path / "W.Modelfile"
    r = cli("modelfile", "--from", "qwen2.5:7b", "--param", "seed=99999999999999999999", "-o", str(out))
    assert r.returncode == 2 and "--param seed=99999999999999999999" in r.stderr and not out.exists()
