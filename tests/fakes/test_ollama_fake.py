"""The stand-in Ollama speaks the documented API well enough for the official client."""

import time

import ollama
import pytest

from tests.fakes.ollama import refused_url
from tests.families import qwen, writer_template


async def collect(stream):
    return [part async for part in stream]


async def test_generate_streams_ndjson_and_renders_the_template(fake_ollama):
    fake_ollama.add_model("writer", template=writer_template())
    fake_ollama.script("writer", text="<reasoning>r</reasoning><answer>one two three</answer>")
    client = ollama.AsyncClient(host=fake_ollama.url)
    parts = await collect(await client.generate(model="writer", prompt="She ran.", stream=True))
    assert "".join(p.response for p in parts) == "<reasoning>r</reasoning><answer>one two three</answer>"
    assert len(parts) > 3 and parts[-1].done and parts[-1].done_reason == "stop"
    assert parts[-1].eval_count == len(parts) - 1
    assert fake_ollama.rendered[-1].endswith("### Context:\nShe ran.\n<|im_end|>\n<|im_start|>assistant\n")


async def test_chat_and_num_predict_cut(fake_ollama):
    fake_ollama.add_model("plain")
    client = ollama.AsyncClient(host=fake_ollama.url)
    parts = await collect(
        await client.chat(
            model="plain",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            options={"num_predict": 3},
        )
    )
    assert parts[-1].done_reason == "length" and len(parts) == 4
    assert fake_ollama.calls("/api/chat")[-1]["messages"] == [{"role": "user", "content": "hi"}]


async def test_keep_alive_is_read_as_ollama_reads_it(fake_ollama):
    fake_ollama.add_model("plain")
    client = ollama.AsyncClient(host=fake_ollama.url)
    good = ["30m", "1h30m", "0", "-1m", 600, -1]
    for value in good:
        await client.generate(model="plain", prompt="x", keep_alive=value)
    assert [c["keep_alive"] for c in fake_ollama.calls("/api/generate")] == good
    for bad, why in (("3600", "missing unit"), ("soon", "invalid duration")):
        with pytest.raises(ollama.ResponseError) as err:
            await client.chat(model="plain", messages=[{"role": "user", "content": "hi"}], keep_alive=bad)
        assert err.value.status_code == 400 and why in err.value.error


async def test_error_in_the_middle_of_a_stream(fake_ollama):
    fake_ollama.add_model("flaky")
    fake_ollama.script("flaky", error_after=2, error_message="model runner crashed")
    client = ollama.AsyncClient(host=fake_ollama.url)
    seen = []
    with pytest.raises(ollama.ResponseError) as err:
        async for part in await client.generate(model="flaky", prompt="x", stream=True):
            seen.append(part.response)
    assert len(seen) == 2 and err.value.error == "model runner crashed" and err.value.status_code == -1


async def test_missing_model_http_error_and_refused_connection(fake_ollama):
    client = ollama.AsyncClient(host=fake_ollama.url)
    with pytest.raises(ollama.ResponseError) as err:
        await client.generate(model="nope", prompt="x")
    assert err.value.status_code == 404 and "not found" in err.value.error
    fake_ollama.add_model("busy")
    fake_ollama.script("busy", http_status=503, error_message="server busy")
    with pytest.raises(ollama.ResponseError) as err:
        await collect(await client.generate(model="busy", prompt="x", stream=True))
    assert err.value.status_code == 503
    with pytest.raises(ConnectionError):
        await ollama.AsyncClient(host=refused_url()).generate(model="x", prompt="x")


async def test_slow_stream_paces_tokens(fake_ollama):
    fake_ollama.add_model("slow")
    fake_ollama.script("slow", text="a b c d e f g h i j", tokens_per_second=50, first_token_delay=0.1)
    client = ollama.AsyncClient(host=fake_ollama.url)
    start = time.monotonic()
    parts = await collect(await client.generate(model="slow", prompt="x", stream=True))
    assert time.monotonic() - start >= 0.1 + 10 / 50 * 0.9
    assert "".join(p.response for p in parts) == "a b c d e f g h i j"


def test_blobs_create_show_tags(fake_ollama, tmp_path):
    client = ollama.Client(host=fake_ollama.url)
    blob = tmp_path / "a.gguf"
    blob.write_bytes(b"GGUF" + bytes(100))
    digest = client.create_blob(blob)
    assert digest in fake_ollama.blobs
    import httpx

    assert httpx.head(f"{fake_ollama.url}/api/blobs/{digest}").status_code == 200
    assert httpx.head(f"{fake_ollama.url}/api/blobs/sha256:{'0' * 64}").status_code == 404
    bad = httpx.post(f"{fake_ollama.url}/api/blobs/sha256:{'0' * 64}", content=b"x")
    assert bad.status_code == 400 and "digest mismatch" in bad.json()["error"]
    statuses = [
        p.status
        for p in client.create(
            model="m",
            files={"a.gguf": digest},
            template="T {{ .Prompt }}",
            parameters={"num_ctx": 2048},
            stream=True,
        )
    ]
    assert statuses[-1] == "success"
    shown = client.show("m")
    assert shown.template == "T {{ .Prompt }}" and "num_ctx 2048" in shown.parameters
    assert [m.model for m in client.list().models] == ["m:latest"]
    with pytest.raises(ollama.ResponseError) as err:
        client.create(model="n", adapters={"x.gguf": f"sha256:{'1' * 64}"}, from_="m")
    assert err.value.status_code == 400


def test_raw_refuses_template_system_and_context_as_upstream(fake_ollama):
    fake_ollama.add_model("m")
    client = ollama.Client(host=fake_ollama.url)
    for extra in ({"system": "s"}, {"template": "{{ .Prompt }}"}, {"context": [1, 2]}):
        with pytest.raises(ollama.ResponseError) as err:
            client.generate(model="m", prompt="x", raw=True, **extra)
        assert err.value.status_code == 400
        assert err.value.error == "raw mode does not support template, system, or context"
    client.generate(model="m", prompt="<|im_start|>user\nx", raw=True)
    assert fake_ollama.rendered[-1] == "<|im_start|>user\nx"  # past every template


def test_template_selection_follows_the_model_layer_and_the_environment(fake_ollama, tmp_path):
    """A GGUF model layer's chat template is read from the blob and chosen as Ollama chooses it."""
    from tests.fakes.ollama import model_gguf

    base_template = qwen().source

    blob = tmp_path / "model.gguf"
    blob.write_bytes(model_gguf(base_template))
    client = ollama.Client(host=fake_ollama.url)
    client.create(model="base", files={"model.gguf": client.create_blob(blob)})
    client.create(model="plain-go", from_="base", template="{{ .Prompt }}")  # fewer capabilities
    client.create(model="writer", from_="base", template=writer_template())
    assert client.show("base").template == base_template  # no TEMPLATE: the chat template
    assert "tools" in client.show("base").capabilities
    assert client.show("plain-go").template == base_template  # set aside for it
    tools = [{"type": "function", "function": {"name": "roll", "description": "a die", "parameters": {}}}]
    client.chat(model="plain-go", messages=[{"role": "user", "content": "hi"}], tools=tools)
    assert "# Tools" in fake_ollama.rendered[-1] and '"name": "roll"' in fake_ollama.rendered[-1]
    client.chat(model="writer", messages=[{"role": "user", "content": "hi"}], tools=tools)
    assert '{"function":{"description":"a die","name":"roll"' in fake_ollama.rendered[-1]  # the Go path
    fake_ollama.environ = {"OLLAMA_GO_TEMPLATE": "true"}
    assert client.show("plain-go").template == "{{ .Prompt }}"
    client.generate(model="plain-go", prompt="hi")
    assert fake_ollama.rendered[-1] == "hi"


async def test_ps_lists_loaded_models_by_keep_alive_and_a_host_can_die_and_come_back(fake_ollama):
    fake_ollama.add_model("writer", parameters={"num_ctx": 8192})
    fake_ollama.add_model("brief")
    client = ollama.AsyncClient(host=fake_ollama.url)
    assert (await client.ps()).models == []
    await client.generate(model="writer", prompt="a")  # loaded for the default 5 minutes
    await client.generate(model="brief", prompt="b", keep_alive=0)  # unloaded at once
    [loaded] = (await client.ps()).models
    assert (loaded.model, loaded.context_length) == ("writer:latest", 8192)
    fake_ollama.script("writer", tokens_per_second=20)
    stream = await client.generate(model="writer", prompt="a", stream=True)
    await anext(stream)
    fake_ollama.die()  # mid-stream: the connection is cut and nothing listens any more
    with pytest.raises(Exception, match="peer closed connection|incomplete"):
        await collect(stream)
    with pytest.raises(ConnectionError):
        await ollama.AsyncClient(host=fake_ollama.url).list()
    fake_ollama.revive()
    assert [m.model for m in (await ollama.AsyncClient(host=fake_ollama.url).list()).models] == [
        "writer:latest",
        "brief:latest",
    ]
