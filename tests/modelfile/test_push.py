"""`publish --push` and `push`: the server's /api/push against the stand-in registry (tests/fakes/ollama.py
Registry), the registry's answers as clear messages, and nothing called pushed that was not."""

import subprocess
import sys

import pytest

from pipeline.modelfile import publish, render
from pipeline.modelfile.publish import Publisher, PublishError, Pusher
from tests.fakes.ollama import refused_url
from tests.families import qwen


@pytest.fixture
def writer(fake_ollama, tmp_path, gguf_file):
    """A Modelfile whose adapter is a local GGUF, its base on the stand-in server."""
    fake_ollama.add_model("qwen2.5:7b-instruct")
    path, _ = render.write(
        tmp_path / "Writer.Modelfile",
        "qwen2.5:7b-instruct",
        adapter=gguf_file("adapter.gguf"),
        template=qwen(),
    )
    return path


def _created(fake_ollama, modelfile, name: str) -> Publisher:
    publisher = Publisher(fake_ollama.url)
    publisher.publish(publish.plan(modelfile, name), on_status=lambda s: None)
    return publisher


def test_push_streams_every_layer_then_the_manifest(fake_ollama, writer):
    publisher = _created(fake_ollama, writer, "you/writer")
    updates = []
    where = Pusher(publisher).push("you/writer", on_progress=updates.append)

    assert where == "https://ollama.com/you/writer"
    assert fake_ollama.calls("/api/push")[-1] == {"model": "you/writer", "insecure": False, "stream": True}
    layers = fake_ollama.registry.manifests["you/writer:latest"]
    adapter = fake_ollama.models["you/writer:latest"].adapters[0]
    assert adapter in layers
    bars = [u for u in updates if u.digest == adapter]
    assert bars[-1].completed == bars[-1].total == len(fake_ollama.blobs[adapter])
    assert [u.status for u in updates if not u.digest] == [
        "retrieving manifest",
        "pushing manifest",
        "success",
    ]


def test_a_dropped_upload_is_no_push_and_the_next_push_resumes(fake_ollama, writer):
    publisher = _created(fake_ollama, writer, "you/writer")
    fake_ollama.registry.drop_after_layers = 1
    with pytest.raises(
        PublishError, match="could not push 'you/writer'.*connection reset.*nothing was published"
    ):
        Pusher(publisher).push("you/writer", on_progress=lambda u: None)
    assert "you/writer:latest" not in fake_ollama.registry.manifests  # no manifest: nothing published
    sent_before = set(fake_ollama.registry.blobs)
    assert len(sent_before) == 1

    fake_ollama.registry.drop_after_layers = None
    updates = []
    Pusher(publisher).push("you/writer", on_progress=updates.append)
    first = [u for u in updates if u.digest in sent_before]
    assert len(first) == 1 and first[0].completed == first[0].total  # already there: not sent again
    assert fake_ollama.registry.manifests["you/writer:latest"]


def test_not_signed_in_is_said_before_any_push(fake_ollama, writer):
    publisher = _created(fake_ollama, writer, "you/writer")
    fake_ollama.registry.signed_in = False
    with pytest.raises(
        PublishError, match=r"not signed in to ollama\.com.*`ollama signin`.*ollama\.com/connect"
    ):
        Pusher(publisher).push("you/writer")
    assert fake_ollama.calls("/api/push") == []


def test_a_namespace_not_yours(fake_ollama, writer):
    publisher = _created(fake_ollama, writer, "someone/writer")
    with pytest.raises(PublishError, match="access denied.*namespace 'someone' is not yours"):
        Pusher(publisher).push("someone/writer", on_progress=lambda u: None)
    assert fake_ollama.registry.manifests == {}


@pytest.mark.parametrize(
    ("name", "problem"),
    [("writer", "has no namespace"), ("you/wri ter", "invalid model name"), ("you/", "empty part")],
)
def test_names_ollama_would_refuse_are_refused_before_any_request(fake_ollama, name, problem):
    with pytest.raises(PublishError, match=problem):
        Pusher(Publisher(fake_ollama.url)).push(name)
    assert fake_ollama.requests == []


def test_a_model_the_server_lacks(fake_ollama):
    with pytest.raises(PublishError, match="has no model named 'you/writer': publish it first"):
        Pusher(Publisher(fake_ollama.url)).push("you/writer")


def test_a_plain_http_registry_needs_insecure(fake_ollama, writer):
    publisher = _created(fake_ollama, writer, "http://registry.local/you/writer")
    with pytest.raises(PublishError, match="plain-http registry: pass --insecure"):
        Pusher(publisher).push("http://registry.local/you/writer", on_progress=lambda u: None)
    where = Pusher(publisher).push(
        "http://registry.local/you/writer", insecure=True, on_progress=lambda u: None
    )
    assert where == "registry.local/you/writer"
    assert fake_ollama.calls("/api/me") == []  # only ollama.com names are checked for a sign-in


def test_unreachable_server():
    with pytest.raises(PublishError, match="cannot reach the Ollama server"):
        Pusher(Publisher(refused_url())).push("you/writer")


def _cli(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True)
    r.stderr = " ".join(r.stderr.split())  # rich wraps long lines
    return r


def test_cli_publish_push(fake_ollama, writer):
    args = ["publish", "--modelfile", str(writer), "--host", fake_ollama.url, "--push"]
    r = _cli(*args, "--name", "writer")
    assert r.returncode == 2 and "has no namespace" in r.stderr and fake_ollama.requests == []

    fake_ollama.registry.signed_in = False
    r = _cli(*args, "--name", "you/writer")
    assert r.returncode == 2 and "published you/writer" in r.stderr and "not signed in" in r.stderr
    assert "pushed" not in r.stderr

    fake_ollama.registry.signed_in = True
    r = _cli("push", "you/writer", "--host", fake_ollama.url)
    assert r.returncode == 0, r.stderr
    assert "pushed you/writer: https://ollama.com/you/writer" in r.stderr
    assert "you/writer:latest" in fake_ollama.registry.manifests
