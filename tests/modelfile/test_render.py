import json
import subprocess
import sys

import pytest

from contract import chat_formats, prompt
from contract.modelfile import gotemplate, grammar
from pipeline.modelfile import render
from pipeline.modelfile.render import ModelfileRenderError


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, cwd=cwd)


def test_writer_modelfile_serves_the_training_prompt(tmp_path, gguf_file):
    adapter = gguf_file("adapter.gguf")
    out = tmp_path / "Writer.Modelfile"
    path, problems = render.write(out, "qwen2.5:7b-instruct", adapter=adapter, params=["temperature=0.9"])
    assert problems == []
    mf = grammar.parse(path.read_text(encoding="utf-8"))
    assert mf.first("model") == "qwen2.5:7b-instruct"
    assert mf.first("adapter") == "./adapter.gguf"  # relative to the Modelfile, as Ollama resolves it
    assert mf.parameters["stop"] == ["</answer>", "<|im_start|>", "<|im_end|>"]
    assert mf.parameters["temperature"] == ["0.9"]
    assert mf.parameters["num_ctx"] == [str(render.DEFAULT_NUM_CTX)]
    fmt = chat_formats.get("qwen2.5")
    served = gotemplate.execute(mf.first("template"), [{"role": "user", "content": "She ran."}])
    assert served == fmt.render([{"role": "user", "content": prompt.render_prompt("She ran.")}], True)


def test_cli_writes_and_checks(tmp_path):
    out = tmp_path / "W.Modelfile"
    r = cli(
        "modelfile", "--from", "llama3.2:3b", "--num-ctx", "4096", "--param", "stop=THE END", "-o", str(out)
    )
    assert r.returncode == 0, r.stderr
    mf = grammar.parse(out.read_text(encoding="utf-8"))
    stops = ["</answer>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "THE END"]
    assert mf.parameters["stop"] == stops
    assert mf.first("num_ctx") == "4096"
    r = cli("modelfile", "check", str(out))
    assert r.returncode == 0 and "ok" in r.stderr
    bad = tmp_path / "Bad.Modelfile"
    bad.write_text("FROM x\nPARAMETER temprature 1\n", encoding="utf-8")
    r = cli("modelfile", "check", str(out), str(bad))
    assert r.returncode == 1 and "unknown parameter 'temprature'" in r.stderr


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(base="mistral:7b"), "cannot tell the chat format"),
        (dict(base="qwen2.5:7b", system='say """\nhi'), 'holds """'),
        (dict(base="qwen2.5:7b", params=["temprature=1"]), "no such parameter"),
        (dict(base="qwen2.5:7b", params=["num_ctx"]), "key=value"),
        (dict(base="qwen2.5:7b", params=["top_k=many"]), "not an integer"),
        (dict(base="qwen2.5:7b", num_ctx=0), "positive number"),
        (dict(base="qwen2.5:7b", system="a\u200bb"), "non-printable"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(tmp_path, kwargs, message):
    out = tmp_path / "M.Modelfile"
    with pytest.raises((ModelfileRenderError, chat_formats.UnknownFormatError), match=message):
        render.write(out, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_adapter_for_another_architecture_is_refused(tmp_path, gguf_file):
    adapter = gguf_file("llama-adapter.gguf", arch="llama")
    with pytest.raises(ModelfileRenderError, match="llama architecture but FROM is qwen2"):
        render.write(tmp_path / "M.Modelfile", "qwen2.5:7b-instruct", adapter=adapter)
    with pytest.raises(ModelfileRenderError, match="no such file"):
        render.write(tmp_path / "M.Modelfile", "qwen2.5:7b-instruct", adapter=tmp_path / "none.gguf")


def test_system_override_and_cli_error_message(tmp_path):
    path, _ = render.write(tmp_path / "M.Modelfile", "qwen2.5:7b", system="You write gothic horror.")
    mf = grammar.parse(path.read_text(encoding="utf-8"))
    assert mf.first("system") == "You write gothic horror."
    r = cli("modelfile", "--from", "phi3:mini", "-o", str(tmp_path / "x.Modelfile"))
    assert r.returncode == 2 and "pass --format" in r.stderr


def test_local_base_format_is_read_from_its_chat_template(tmp_path, tiny_model):
    base = tiny_model("llama")
    path, _ = render.write(tmp_path / "M.Modelfile", str(base))
    mf = grammar.parse(path.read_text(encoding="utf-8"))
    assert "<|start_header_id|>user<|end_header_id|>" in mf.first("template")
    odd = tmp_path / "odd"
    odd.mkdir()
    config = json.loads((base / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (odd / "tokenizer_config.json").write_text(json.dumps(config))
    (odd / "model.safetensors").write_bytes(b"")  # Ollama refuses a folder without weights
    with pytest.raises(chat_formats.UnknownFormatError, match="matches none.*pass --format NAME"):
        render.write(tmp_path / "N.Modelfile", str(odd))
    path, _ = render.write(tmp_path / "N.Modelfile", str(odd), format_name="chatml")
    assert grammar.parse(path.read_text()).first("model") == "./odd"
