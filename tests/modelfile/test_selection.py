"""Ollama's template selection (server/images.go `shouldPreferChatTemplate`) and `modelfile check`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from contract import chat_template, go_chat
from contract.modelfile import grammar
from pipeline.modelfile import render, selection
from pipeline.tiny import CHATML
from tests.fakes.ollama import model_gguf
from tests.families import BY_NAME, qwen, writer_template
from tests.test_train_serve_contract import legacy_template

QWEN = qwen()
BASE = QWEN.source  # Qwen2.5-Instruct's real chat template: tools and a tool round trip
OURS, OLD = writer_template(), legacy_template(BY_NAME["qwen2.5"])
THINKING_TOOLS = BASE + "{%- if reasoning %}<think>\n{{ reasoning }}\n</think>{%- endif %}"
TOOLS_NO_ROUND_TRIP = "{%- if tools %}{{ tools | tojson }}{%- endif %}{{ messages[0]['content'] }}"


def test_capabilities_as_ollama_reads_them():
    assert selection.chat_template_capabilities(BASE) == {"tools"}
    assert selection.chat_template_round_trip(BASE)
    assert selection.chat_template_capabilities(THINKING_TOOLS) == {"tools", "thinking"}
    assert not selection.chat_template_round_trip(TOOLS_NO_ROUND_TRIP)
    assert selection.chat_template_capabilities(CHATML) == set()
    assert selection.go_template_capabilities(OLD) == set()
    assert selection.go_template_capabilities(OURS) == {"tools"} and selection.go_template_round_trip(OURS)
    assert selection.go_template_capabilities("{{ .Prompt }}{{ .Suffix }}") == {"insert"}
    # a TEMPLATE beyond our renderer's subset is still read for its fields
    assert selection.go_template_capabilities("{{ $x := slice .Messages 1 }}{{ .Tools }}") == {"tools"}


@pytest.mark.parametrize(
    "chat, go, prefer",
    [
        (BASE, OLD, True),  # what was found: more capable chat template wins
        (BASE, OURS, False),  # same capabilities, both with a round trip: TEMPLATE kept
        (
            BASE,
            "{{ .Tools }}{{ .Prompt }}",
            True,
        ),  # a tie only the chat template's trip wins
        (TOOLS_NO_ROUND_TRIP, OURS, False),
        (TOOLS_NO_ROUND_TRIP, "{{ .Prompt }}", True),
        (
            THINKING_TOOLS,
            OURS,
            True,
        ),  # more capabilities, and its own round trip: a limit we name in the check
        (THINKING_TOOLS.replace("tool_response", "").replace('"tool"', ""), OURS, False),  # only ours trips
        (CHATML, OLD, False),  # nothing to prefer
    ],
)
def test_should_prefer_chat_template(chat, go, prefer):
    assert selection.prefers_chat_template(chat, go) is prefer


def test_ollama_go_template_env_as_envconfig_reads_it():
    read = selection.go_template_env
    assert read({}) is None and read({"OLLAMA_GO_TEMPLATE": "  "}) is None
    assert read({"OLLAMA_GO_TEMPLATE": "1"}) is True and read({"OLLAMA_GO_TEMPLATE": "'false'"}) is False
    assert read({"OLLAMA_GO_TEMPLATE": "yes"}) is True  # not a Go bool: counts as true
    assert selection.uses_chat_template(OLD, BASE, {"OLLAMA_GO_TEMPLATE": "1"}) is False
    assert selection.uses_chat_template(OURS, BASE, {"OLLAMA_GO_TEMPLATE": "0"}) is True
    assert selection.uses_chat_template(OURS, None, {"OLLAMA_GO_TEMPLATE": "0"}) is False
    assert selection.uses_chat_template(None, CHATML, {}) is True  # no TEMPLATE: the chat template


def modelfile(tmp_path, base: str, template: str) -> object:
    path = tmp_path / "W.Modelfile"
    path.write_text(f'FROM {base}\nTEMPLATE """{template}"""\n', encoding="utf-8")
    return path


def hf_folder(tmp_path, chat_template: str):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": chat_template}))
    (folder / "model.safetensors").write_bytes(b"")  # Ollama refuses a FROM folder without weights
    return folder


def test_check_names_a_template_ollama_would_set_aside(tmp_path):
    (tmp_path / "base.gguf").write_bytes(model_gguf(BASE))
    [problem] = selection.check_file(modelfile(tmp_path, "./base.gguf", OLD))
    assert problem.severity == "error" and "GGUF ./base.gguf" in problem.message
    assert "capabilities tools; the TEMPLATE's: none" in problem.message
    assert "story-pipeline modelfile" in problem.message and "OLLAMA_GO_TEMPLATE=1" in problem.message
    assert selection.check_file(modelfile(tmp_path, "./base.gguf", OURS)) == []
    hf_folder(tmp_path, THINKING_TOOLS)
    [problem] = selection.check_file(modelfile(tmp_path, "./hf", OURS))
    assert "Hugging Face folder ./hf" in problem.message and "thinking, tools" in problem.message
    # a library model's GGUF is not here to read: a TEMPLATE without tools is warned about
    [problem] = selection.check_file(modelfile(tmp_path, "qwen2.5:7b-instruct", OLD))
    assert problem.severity == "warning" and "has no .Tools" in problem.message
    assert selection.check_file(modelfile(tmp_path, "qwen2.5:7b-instruct", OURS)) == []


def test_check_command_fails_on_it_and_the_shipped_modelfiles_pass(tmp_path):
    (tmp_path / "base.gguf").write_bytes(model_gguf(BASE))
    path = modelfile(tmp_path, "./base.gguf", OLD)
    r = subprocess.run(
        [sys.executable, "-m", "pipeline", "modelfile", "check", str(path)], capture_output=True, text=True
    )
    assert r.returncode == 1 and "would set this TEMPLATE aside" in " ".join(r.stderr.split())
    shipped = sorted(str(p) for p in (Path(__file__).parents[2] / "modelfiles").glob("*.Modelfile"))
    r = subprocess.run(
        [sys.executable, "-m", "pipeline", "modelfile", "check", *shipped], capture_output=True, text=True
    )
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    for p in shipped:  # every shipped TEMPLATE is ours: it renders what the template it carries renders
        template = grammar.parse(Path(p).read_text(encoding="utf-8")).first("template")
        trained = chat_template.decode(template)
        assert trained is not None and go_chat.mismatch(trained, template) is None, p


def test_the_writer_warns_when_the_base_would_win(tmp_path):
    folder = hf_folder(tmp_path, THINKING_TOOLS)  # tools and thinking: more than a Qwen2.5 TEMPLATE has
    path, problems = render.write(tmp_path / "W.Modelfile", str(folder), template=QWEN)
    # written (OLLAMA_GO_TEMPLATE=1 on the server makes it work), and said plainly
    assert path.exists() and [p.severity for p in problems] == ["warning"]
    assert "set this TEMPLATE aside" in problems[0].message


def test_a_library_family_with_ollamas_own_renderer_is_refused_by_name(tmp_path):
    """`FROM` a library model inherits its RENDERER and PARSER (server/create.go), which set any TEMPLATE
    aside: `modelfile check` says so for the families Ollama renders with built-in code."""
    [problem] = selection.check_file(modelfile(tmp_path, "qwen3.5:4b", OURS))
    assert problem.severity == "error" and "built-in RENDERER" in problem.message
    assert "export-base" in problem.message
    assert selection.check_file(modelfile(tmp_path, "qwen3:8b", OURS)) == []
