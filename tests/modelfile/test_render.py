import json
import subprocess
import sys

import pytest

from contract import prompt
from contract.chat_template import ChatTemplate
from contract.modelfile import gotemplate, grammar
from pipeline.modelfile import render
from pipeline.modelfile.render import ModelfileRenderError
from pipeline.tiny import CHATML
from tests.families import BY_NAME, qwen, templates_dir


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, cwd=cwd)


def test_writer_modelfile_serves_the_training_prompt(tmp_path, gguf_file):
    adapter = gguf_file("adapter.gguf")
    out = tmp_path / "Writer.Modelfile"
    path, problems = render.write(
        out, "qwen2.5:7b-instruct", adapter=adapter, params=["temperature=0.9"], template=qwen()
    )
    assert problems == []
    mf = grammar.parse(path.read_text(encoding="utf-8"))
    assert mf.first("model") == "qwen2.5:7b-instruct"
    assert mf.first("adapter") == "./adapter.gguf"  # relative to the Modelfile, as Ollama resolves it
    assert mf.parameters["stop"] == ["</answer>", "<|im_end|>"]
    assert mf.parameters["temperature"] == ["0.9"]
    assert mf.parameters["num_ctx"] == [str(render.DEFAULT_NUM_CTX)]
    served = gotemplate.execute(mf.first("template"), [{"role": "user", "content": "She ran."}])
    assert served == qwen().render([{"role": "user", "content": prompt.render_prompt("She ran.")}], True)


def test_cli_writes_and_checks(tmp_path):
    out = tmp_path / "W.Modelfile"
    llama = BY_NAME["llama3.2"]
    r = cli(
        "modelfile",
        "--from",
        "llama3.2:3b",
        "--num-ctx",
        "4096",
        "--param",
        "stop=THE END",
        "-o",
        str(out),
        "--chat-template",
        str(templates_dir() / llama.file),
        "--bos-token",
        llama.bos,
        "--eos-token",
        llama.eos,
        "--date",
        "2025-03-01",
    )
    assert r.returncode == 0, r.stderr
    mf = grammar.parse(out.read_text(encoding="utf-8"))
    assert "Today Date: 01 Mar 2025" in gotemplate.execute(
        mf.first("template"), [{"role": "user", "content": "x"}]
    )
    stops = ["</answer>", "<|eot_id|>", "THE END"]
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
        (dict(base="mistral:7b"), "cannot tell the chat template"),
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
    kwargs = {**kwargs, "template": qwen()} if kwargs["base"] != "mistral:7b" else kwargs
    with pytest.raises(ModelfileRenderError, match=message):
        render.write(out, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_adapter_for_another_architecture_is_refused(tmp_path, gguf_file):
    adapter = gguf_file("llama-adapter.gguf", arch="llama")
    with pytest.raises(ModelfileRenderError, match="llama architecture but FROM is qwen2"):
        render.write(tmp_path / "M.Modelfile", "qwen2.5:7b-instruct", adapter=adapter, template=qwen())
    with pytest.raises(ModelfileRenderError, match="no such file"):
        render.write(
            tmp_path / "M.Modelfile", "qwen2.5:7b-instruct", adapter=tmp_path / "none.gguf", template=qwen()
        )


def test_system_override_and_cli_error_message(tmp_path):
    path, _ = render.write(
        tmp_path / "M.Modelfile", "qwen2.5:7b", system="You write gothic horror.", template=qwen()
    )
    mf = grammar.parse(path.read_text(encoding="utf-8"))
    assert mf.first("system") == "You write gothic horror."
    r = cli("modelfile", "--from", "phi3:mini", "-o", str(tmp_path / "x.Modelfile"))
    assert r.returncode == 2 and "--chat-template" in r.stderr


def test_local_base_template_is_read_from_its_chat_template(tmp_path, tiny_model):
    base = tiny_model("llama")
    path, _ = render.write(tmp_path / "M.Modelfile", str(base))
    mf = grammar.parse(path.read_text(encoding="utf-8"))
    assert "<|start_header_id|>user<|end_header_id|>" in mf.first("template")
    odd = tmp_path / "odd"
    odd.mkdir()
    config = json.loads((base / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for m in messages if m.role != 'system' %}{{ m['content'] }}{% endfor %}"
    (odd / "tokenizer_config.json").write_text(json.dumps(config))
    (odd / "model.safetensors").write_bytes(b"")  # Ollama refuses a folder without weights
    with pytest.raises(ModelfileRenderError, match="drops the system turn.*cannot be served"):
        render.write(tmp_path / "N.Modelfile", str(odd))
    chatml = ChatTemplate(CHATML, "", "<|im_end|>")
    path, _ = render.write(tmp_path / "N.Modelfile", str(odd), template=chatml)
    assert grammar.parse(path.read_text()).first("model") == "./odd"
