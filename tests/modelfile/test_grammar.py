"""The Modelfile parser follows Ollama's parser; the checker catches what Ollama refuses or misreads."""

from pathlib import Path

import pytest

from contract.modelfile import grammar
from contract.modelfile.grammar import ModelfileError, parse

REPO = Path(__file__).resolve().parents[2]


def errors(text: str, base_dir: Path | None = None) -> list[str]:
    return [p.message for p in grammar.check_text(text, base_dir) if p.severity == "error"]


def warnings(text: str, base_dir: Path | None = None) -> list[str]:
    return [p.message for p in grammar.check_text(text, base_dir) if p.severity == "warning"]


def test_parses_instructions_case_insensitively_with_all_quote_forms():
    mf = parse(
        "# a comment\n"
        "from qwen2.5:7b\n"
        'TEMPLATE """line one\n\nline "two"\n"""\n'
        'System "You are\nhelpful"\n'
        "PARAMETER temperature 0.7\n"
        'PARAMETER stop "<|im_end|>"\n'
        "PARAMETER stop <|im_start|>\n"
        "MESSAGE user Hello there\n"
        "LICENSE MIT license text\n"
    )
    assert mf.first("model") == "qwen2.5:7b"
    assert mf.first("template") == 'line one\n\nline "two"\n'
    assert mf.first("system") == "You are\nhelpful"
    assert mf.parameters == {"temperature": ["0.7"], "stop": ["<|im_end|>", "<|im_start|>"]}
    assert mf.first("message") == "user: Hello there"
    assert mf.first("license") == "MIT license text"
    assert [c.line for c in mf.commands][:3] == [2, 3, 7]


def test_unquoted_values_keep_inner_spaces_and_drop_outer_ones():
    mf = parse("FROM  llama3  \nSYSTEM   You are a   writer.   \n")
    assert mf.first("model") == "llama3"
    assert mf.first("system") == "You are a   writer."


def test_bom_and_crlf_are_accepted():
    mf = parse('\ufeffFROM x\r\nTEMPLATE """a\r\nb"""\r\n')
    assert mf.first("model") == "x" and mf.first("template") == "a\r\nb"


@pytest.mark.parametrize(
    "text, message",
    [
        ("TEMPLATE x\n", "no FROM line"),
        ("FROM x\nPARAMS temperature 1\n", "unknown instruction 'PARAMS'"),
        ("FROM x\nSYSTEM-PROMPT hi\n", "followed by '-'"),
        ('FROM x\nSYSTEM """never closed\nPARAMETER temperature 1\n', "never closed"),
        ('FROM x\nSYSTEM "never closed\n', "never closed"),
        ("FROM x\nMESSAGE robot hi\n", "message role 'robot'"),
        ("FROM x\nPARAMETER\n", "followed by a line end"),
        ("FROM x\nPARAMETER temperature", "file ends inside an instruction"),
    ],
)
def test_what_ollama_refuses_to_parse(text, message):
    with pytest.raises(ModelfileError, match=message):
        parse(text)
    assert any(message.split("'")[0] in e for e in errors(text))


def test_triple_quotes_inside_a_value_end_it_early():
    # Ollama ends a """ value at the first """ before a newline: the rest becomes a broken instruction.
    with pytest.raises(ModelfileError):
        parse('FROM x\nSYSTEM """He said """\nhi"""\n')
    # On one line Ollama keeps it: the value ends only at a line end after """.
    text = 'FROM x\nSYSTEM """He said """hi""" ok"""\n'
    assert parse(text).first("system") == 'He said """hi""" ok'
    assert grammar.check_text(text) == []


def test_a_quote_closed_too_late_swallows_later_lines():
    text = 'FROM x\nPARAMETER stop "a" b\nPARAMETER temperature 1\nSYSTEM ok"\n'
    mf = parse(text)  # Ollama accepts this and silently misreads it
    assert mf.first("stop").startswith('a" b\nPARAMETER temperature')
    assert errors(text) == []  # Ollama creates the model, with the wrong stop sequence
    assert any("spans several lines" in w for w in warnings(text))


@pytest.mark.parametrize(
    "line, message",
    [
        ("PARAMETER temprature 0.7", "unknown parameter 'temprature'"),
        ("PARAMETER num_ctx 8k", "'8k' is not an integer"),
        ("PARAMETER temperature hot", "'hot' is not a number"),
        ("PARAMETER use_mmap maybe", "not a boolean"),
        ("REQUIRES latest", "not a semantic version"),
    ],
)
def test_parameter_names_and_types(line, message):
    assert any(message in e for e in errors(f"FROM x\n{line}\n"))


def test_good_parameters_pass_and_deprecated_ones_warn():
    text = (
        "FROM x\nPARAMETER num_ctx 8192\nPARAMETER top_p 0.9\nPARAMETER use_mmap true\nPARAMETER mirostat 1\n"
    )
    problems = grammar.check_text(text)
    assert [p.severity for p in problems] == ["warning"]
    assert "deprecated" in problems[0].message


def test_paths_are_checked(tmp_path, gguf_file):
    assert any("no such file" in e and "model name" in e for e in errors("FROM ./missing.gguf\n", tmp_path))
    assert any(
        "ADAPTER ./nope.gguf: no such file" in e for e in errors("FROM x\nADAPTER ./nope.gguf\n", tmp_path)
    )
    gguf_file("model.gguf", kind="model")
    assert any("not 'adapter'" in e for e in errors("FROM x\nADAPTER ./model.gguf\n", tmp_path))
    (tmp_path / "peft").mkdir()
    assert any("export-gguf" in e for e in errors("FROM x\nADAPTER ./peft\n", tmp_path))
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf at all")
    assert any("not a readable GGUF" in e for e in errors("FROM x\nADAPTER ./junk.gguf\n", tmp_path))


def test_adapter_architecture_must_match_the_base(tmp_path, gguf_file):
    gguf_file("qwen.gguf", arch="qwen2")
    gguf_file("llama.gguf", arch="llama")
    gguf_file("base-llama.gguf", arch="llama", kind="model")
    assert errors("FROM qwen2.5:7b-instruct\nADAPTER ./qwen.gguf\n", tmp_path) == []
    assert any(
        "for the llama architecture but FROM is qwen2" in e
        for e in errors("FROM qwen2.5:7b-instruct\nADAPTER ./llama.gguf\n", tmp_path)
    )
    assert any(
        "qwen2 architecture but FROM is llama" in e
        for e in errors("FROM ./base-llama.gguf\nADAPTER ./qwen.gguf\n", tmp_path)
    )
    # A base whose architecture cannot be known is not guessed at.
    assert errors("FROM someone/custom-model\nADAPTER ./qwen.gguf\n", tmp_path) == []


def test_several_from_or_adapter_lines_warn_that_only_the_last_counts(tmp_path, gguf_file):
    gguf_file("a.gguf")
    gguf_file("b.gguf")
    assert errors("FROM x\nFROM y\n") == []
    assert any("more than one FROM" in w for w in warnings("FROM x\nFROM y\n"))
    text = "FROM x\nADAPTER a.gguf\nADAPTER b.gguf\n"
    assert any("more than one ADAPTER" in w for w in warnings(text, tmp_path))


def test_characters_ollama_drops_are_reported():
    assert any("U+200B" in w for w in warnings("FROM x\nSYSTEM a\u200bb\n"))
    assert any("U+00A0" in w for w in warnings('FROM x\nSYSTEM """a\u00a0b"""\n'))
    assert parse("FROM x\nSYSTEM a\u200bb\n").first("system") == "ab"  # what Ollama would store


def test_shipped_modelfiles_pass():
    shipped = sorted((REPO / "modelfiles").glob("*.Modelfile"))
    assert len(shipped) >= 2
    for path in shipped:
        problems = grammar.check_file(path)
        assert problems == [], (path, problems)
        text = path.read_text(encoding="utf-8")
        assert f"ollama create writer -f modelfiles/{path.name}" in text
        assert int(parse(text).first("num_ctx")) <= 16384  # fits an 8 GB GPU with a 7B Q4 model
