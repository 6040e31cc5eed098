"""Settings from the environment and a TOML file; the CLI's clear refusals."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.config import ConfigError, load_settings
from bot.core.story import Channel
from tests.fakes.ollama import refused_url

TOML = """
model = "writer"
parallel = 3
discord_token = "from-file"
[channel_models]
"111" = "channel-model"
[guild_models]
"999" = "guild-model"
[options]
temperature = 0.7
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("STORY_BOT_DISCORD_TOKEN", "STORY_BOT_MODEL", "STORY_BOT_CONFIG", "STORY_BOT_OLLAMA_HOST",
                 "OLLAMA_HOST", "OLLAMA_NUM_PARALLEL", "STORY_BOT_PARALLEL", "STORY_BOT_DB",
                 "STORY_BOT_KEEP_ALIVE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


def test_environment_wins_over_the_file(tmp_path, monkeypatch):
    path = tmp_path / "bot.toml"
    path.write_text(TOML)
    monkeypatch.setenv("STORY_BOT_MODEL", "env-model")
    monkeypatch.setenv("OLLAMA_HOST", "gpu-box:11434")
    s = load_settings(path)
    assert s.model == "env-model" and s.parallel == 3 and s.ollama_host == "gpu-box:11434"
    assert s.limits().parallel == 3 and s.limits().options == {"temperature": 0.7}
    assert s.token() == "from-file" and "from-file" not in repr(s) and "from-file" not in str(s)
    assert s.model_for(Channel("111", "999")) == "channel-model"
    assert s.model_for(Channel("thread", "999", parent_id="111")) == "channel-model"
    assert s.model_for(Channel("222", "999")) == "guild-model"
    assert s.model_for(Channel("222", "000")) == "env-model"
    assert load_settings(path, model="flag-model").model == "flag-model"  # a flag wins over all


def test_keep_alive_is_a_duration_or_seconds(tmp_path, monkeypatch):
    assert load_settings().keep_alive == "30m"  # longer than a writer's pause between passages
    monkeypatch.setenv("STORY_BOT_KEEP_ALIVE", "3600")  # Ollama refuses a string without a unit: a number
    assert load_settings().keep_alive == 3600.0
    monkeypatch.setenv("STORY_BOT_KEEP_ALIVE", "1h30m")
    assert load_settings().keep_alive == "1h30m"
    monkeypatch.setenv("STORY_BOT_KEEP_ALIVE", "soon")
    with pytest.raises(ConfigError, match="STORY_BOT_KEEP_ALIVE: .*write it like 30m"):
        load_settings()
    monkeypatch.delenv("STORY_BOT_KEEP_ALIVE")
    path = tmp_path / "bot.toml"
    path.write_text("keep_alive = -1\n")  # negative: keep it loaded
    assert load_settings(path).keep_alive == -1.0


def test_bad_settings_name_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("STORY_BOT_PARALLEL", "0")
    with pytest.raises(ConfigError, match="STORY_BOT_PARALLEL: Input should be greater"):
        load_settings()
    bad = tmp_path / "bad.toml"
    bad.write_text('modle = "x"\n')
    monkeypatch.delenv("STORY_BOT_PARALLEL")
    with pytest.raises(ConfigError, match="modle.*unknown setting"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="no config file at"):
        load_settings(tmp_path / "absent.toml")


def test_run_without_a_token_or_without_ollama_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["run"])
    assert result.exit_code == 1 and "set STORY_BOT_DISCORD_TOKEN" in result.output
    monkeypatch.setenv("STORY_BOT_DISCORD_TOKEN", "secret-token-value")
    monkeypatch.setenv("STORY_BOT_OLLAMA_HOST", refused_url())
    result = runner.invoke(app, ["run"])
    assert result.exit_code == 1 and "STORY_BOT_OLLAMA_HOST" in result.output
    assert "secret-token-value" not in result.output
