"""The Go text/template subset and Ollama's `template.Execute` (template/template.go)."""

from __future__ import annotations

import pytest

from contract.modelfile import gotemplate

CHAT = (
    '{{ range $i, $m := .Messages }}{{ if eq .Role "user" }}U:{{ .Content }};{{ else if eq .Role "tool" }}'
    'T{{ $i }}:{{ $m.Content }};{{ else if (eq .Role "assistant" "model") }}A:{{ .Content }}'
    "{{ range .ToolCalls }}[{{ .Function.Name }} {{ json .Function.Arguments }}]{{ end }};"
    "{{ else }}?{{ end }}{{ end }}{{ if and $.Tools (not $.System) }}tools:{{ len $.Tools }}{{ end }}"
)


def test_branches_ranges_calls_and_variables():
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "hi"},
        {"role": "user", "content": "again"},  # merged into the turn before, as Ollama's collate does
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "f", "arguments": {"b": "<", "a": 1}}}],
        },
        {"role": "tool", "content": "r1"},
        {"role": "tool", "content": "r2"},  # tool turns stay apart
    ]
    out = gotemplate.execute(CHAT, messages, tools=[{"type": "function"}])
    assert out == '?U:hi\n\nagain;A:[f {"a":1,"b":"\\u003c"}];T3:r1;T4:r2;'  # .System is set: no tools line
    assert gotemplate.execute(CHAT, messages[1:2], tools=[{}, {}]) == "U:hi;tools:2"
    assert {"messages", "role", "content", "toolcalls", "tools", "system"} <= gotemplate.variables(CHAT)


def test_legacy_template_runs_once_per_turn_and_stops_at_response():
    legacy = "{{ if .System }}S:{{ .System }}|{{ end }}U:{{ .Prompt }}|A:{{ .Response }}|END"
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "u2"},
    ]
    assert gotemplate.execute(legacy, messages) == "S:s|U:u1|A:a1|ENDU:u2|A:"


def test_or_and_return_the_deciding_operand():
    assert gotemplate.render('{{ or .A "none" }}/{{ and .B .C }}', {"A": "", "B": "b", "C": "c"}) == "none/c"
    assert gotemplate.render("{{ index .M 1 }}{{ if ne .X 2 }}!{{ end }}", {"M": ["a", "b"], "X": 3}) == "b!"


@pytest.mark.parametrize(
    "bad",
    [
        "{{ with .X }}x{{ end }}",
        "{{ if .X }}",
        "{{ end }}",
        "{{ .X",
        "{{ printf .X }}",
        "{{ else }}",
        "{{ if .X }}a{{ else }}b{{ else }}c{{ end }}",
        "{{ $y }}",
        "{{ (eq .X 1 }}",
    ],
)
def test_what_it_cannot_render_is_refused(bad):
    with pytest.raises(gotemplate.TemplateError):
        gotemplate.render(bad, {})


@pytest.mark.parametrize(
    "template, want",
    [
        ("{{/* a note */}}a{{ `raw` }}", "araw"),
        ("{{ if true }}{{ 1_000 }}{{ end }}", "1000"),
        ("{{ (index .M 0).Name }}", "n"),
        ("{{ range $x := .M }}{{ $x.Name }}{{ else }}none{{ end }}", "n"),
    ],
)
def test_it_reads_templates_with_gos_parser(template, want):
    assert gotemplate.render(template, {"M": [{"Name": "n"}]}) == want


@pytest.mark.parametrize("bad", ["{{ 089 }}", "{{ range .A }}x{{ else if .B }}y{{ end }}", "{{ .A | len }}"])
def test_what_go_refuses_or_the_subset_lacks_is_refused(bad):
    with pytest.raises(gotemplate.TemplateError):
        gotemplate.render(bad, {})
