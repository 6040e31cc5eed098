import hashlib
import subprocess
import sys

import pytest

from contract import serving
from pipeline.modelfile import publish, render
from pipeline.modelfile.publish import Publisher, PublishError
from tests.fakes.ollama import refused_url
from tests.families import qwen


@pytest.fixture
def writer_modelfile(tmp_path, gguf_file):
    adapter = gguf_file("adapter.gguf")
    path, _ = render.write(
        tmp_path / "Writer.Modelfile",
        "qwen2.5:7b-instruct",
        adapter=adapter,
        system="You write sea stories.",
        template=qwen(),
    )
    return path, adapter


def test_publish_uploads_the_adapter_then_creates(fake_ollama, writer_modelfile):
    fake_ollama.add_model("qwen2.5:7b-instruct")
    path, adapter = writer_modelfile
    digest = "sha256:" + hashlib.sha256(adapter.read_bytes()).hexdigest()
    plan = publish.plan(path, "writer")
    statuses = []
    Publisher(fake_ollama.url).publish(plan, on_status=statuses.append)

    assert fake_ollama.blobs[digest] == adapter.read_bytes()
    create = fake_ollama.calls("/api/create")[-1]
    assert create["model"] == "writer" and create["from"] == "qwen2.5:7b-instruct"
    assert create["adapters"] == {"adapter.gguf": digest}
    assert create["template"] == plan.template and "### Context:" in create["template"]
    assert create["system"] == "You write sea stories."
    assert create["parameters"]["num_ctx"] == render.DEFAULT_NUM_CTX
    assert create["parameters"]["temperature"] == 0.7
    assert create["parameters"]["stop"] == ["</answer>", "<|im_end|>"]
    assert statuses[-1] == "success" and any("uploaded adapter.gguf" in s for s in statuses)
    assert fake_ollama.models["writer:latest"].adapters == [digest]

    # Publishing again sends no blob: the server already has it.
    posts_before = sum(1 for m, p, _ in fake_ollama.requests if m == "POST" and p.startswith("/api/blobs"))
    Publisher(fake_ollama.url).publish(publish.plan(path, "writer"), on_status=statuses.append)
    posts_after = sum(1 for m, p, _ in fake_ollama.requests if m == "POST" and p.startswith("/api/blobs"))
    assert posts_after == posts_before
    assert any("already on the server" in s for s in statuses)


def test_local_gguf_base_travels_as_files(fake_ollama, tmp_path, gguf_file):
    base = gguf_file("base.gguf", kind="model")
    mf = tmp_path / "M.Modelfile"
    mf.write_text("FROM ./base.gguf\nPARAMETER num_ctx 2048\n", encoding="utf-8")
    Publisher(fake_ollama.url).publish(publish.plan(mf, "local"), on_status=lambda s: None)
    create = fake_ollama.calls("/api/create")[-1]
    digest = "sha256:" + hashlib.sha256(base.read_bytes()).hexdigest()
    assert create["files"] == {"base.gguf": digest} and "from" not in create
    assert create["parameters"] == {"num_ctx": 2048}


def test_unreachable_server(writer_modelfile):
    url = refused_url()
    with pytest.raises(PublishError, match=f"cannot reach the Ollama server at {url}.*ollama serve"):
        Publisher(url).publish(publish.plan(writer_modelfile[0], "writer"), on_status=lambda s: None)


def test_missing_base_model(fake_ollama, writer_modelfile):
    with pytest.raises(PublishError, match=r"run `ollama pull qwen2.5:7b-instruct` there first"):
        Publisher(fake_ollama.url).publish(
            publish.plan(writer_modelfile[0], "writer"), on_status=lambda s: None
        )
    assert fake_ollama.calls("/api/create") == []


def test_server_refusal_is_reported(fake_ollama, writer_modelfile):
    fake_ollama.add_model("qwen2.5:7b-instruct")
    fake_ollama.create_error = "invalid model name"
    with pytest.raises(PublishError, match="refused to create 'bad name': invalid model name"):
        Publisher(fake_ollama.url).publish(
            publish.plan(writer_modelfile[0], "bad name"), on_status=lambda s: None
        )


def test_broken_modelfile_is_not_published(fake_ollama, tmp_path):
    mf = tmp_path / "M.Modelfile"
    mf.write_text("FROM x\nADAPTER ./missing.gguf\n", encoding="utf-8")
    with pytest.raises(PublishError, match="no such file"):
        publish.plan(mf, "x")


def test_cli_publish(fake_ollama, writer_modelfile, monkeypatch):
    fake_ollama.add_model("qwen2.5:7b-instruct")
    path, _ = writer_modelfile
    args = [sys.executable, "-m", "pipeline", "publish", "--modelfile", str(path), "--name", "writer"]
    r = subprocess.run(args + ["--host", fake_ollama.url], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "published writer" in r.stderr and "writer:latest" in fake_ollama.models
    # the name is taken now: replaced only with --force
    r = subprocess.run(args + ["--host", fake_ollama.url], capture_output=True, text=True)
    assert r.returncode == 2 and "already has a model named 'writer': pass --force" in " ".join(
        r.stderr.split()
    )
    r = subprocess.run(args + ["--host", fake_ollama.url, "--force"], capture_output=True, text=True)
    assert r.returncode == 0 and "published writer" in r.stderr, r.stderr
    # OLLAMA_HOST is honoured when --host is not given.
    r = subprocess.run(
        args, capture_output=True, text=True, env={**__import__("os").environ, "OLLAMA_HOST": refused_url()}
    )
    assert r.returncode == 2 and "cannot reach" in r.stderr


@pytest.mark.parametrize(
    "given, expected",
    [
        (None, "http://127.0.0.1:11434"),
        ("gpu-box", "http://gpu-box:11434"),
        ("https://gpu-box:8443/", "https://gpu-box:8443"),
        ("127.0.0.1:9999", "http://127.0.0.1:9999"),
    ],
)
def test_resolve_host(given, expected, monkeypatch):
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert serving.resolve_host(given) == expected


def test_publish_quantizes_a_safetensors_folder_as_the_server_creates_it(fake_ollama, tmp_path, monkeypatch):
    """A merged safetensors folder is stored as F16 unless create asks for a quantization (Ollama's
    `ollama create --quantize`); a type Ollama does not know is refused before anything is sent."""
    folder = tmp_path / "merged"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\0" * 16)
    (folder / "config.json").write_text('{"model_type": "qwen2"}')
    mf = tmp_path / "M.Modelfile"
    mf.write_text("FROM ./merged\n", encoding="utf-8")
    Publisher(fake_ollama.url).publish(publish.plan(mf, "small", "q4_K_M"), on_status=lambda s: None)
    assert fake_ollama.calls("/api/create")[-1]["quantize"] == "q4_K_M"
    with pytest.raises(
        PublishError, match="--quantize 'q3_k' is not a type Ollama quantizes to: one of q8_0"
    ):
        publish.plan(mf, "small", "q3_k")
    args = [sys.executable, "-m", "pipeline", "publish", "--modelfile", str(mf), "--name", "small2"]
    r = subprocess.run(
        args + ["--host", fake_ollama.url, "--quantize", "q8_0"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert fake_ollama.calls("/api/create")[-1]["quantize"] == "q8_0"
