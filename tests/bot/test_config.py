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
    for name in (
        "STORY_BOT_DISCORD_TOKEN",
        "STORY_BOT_MODEL",
        "STORY_BOT_CONFIG",
        "STORY_BOT_OLLAMA_HOST",
        "OLLAMA_HOST",
        "OLLAMA_NUM_PARALLEL",
        "STORY_BOT_PARALLEL",
        "STORY_BOT_DB",
        "STORY_BOT_SHARD_ID",
        "STORY_BOT_SHARD_COUNT",
        "STORY_BOT_LEASE_SECONDS",
        "STORY_BOT_SHARDS",
        "STORY_BOT_OLLAMA_HOSTS",
        "STORY_BOT_KEEP_ALIVE",
    ):
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


def test_shards_come_as_a_pair_and_the_lease_length_reaches_the_service(monkeypatch):
    monkeypatch.setenv("STORY_BOT_SHARD_ID", "1")
    with pytest.raises(ConfigError, match="set STORY_BOT_SHARD_COUNT together with STORY_BOT_SHARDS"):
        load_settings()
    monkeypatch.setenv("STORY_BOT_SHARD_COUNT", "1")
    with pytest.raises(ConfigError, match=r"shard 1 is not below STORY_BOT_SHARD_COUNT \(1\)"):
        load_settings()
    monkeypatch.setenv("STORY_BOT_SHARD_COUNT", "2")
    monkeypatch.setenv("STORY_BOT_LEASE_SECONDS", "12")
    s = load_settings()
    assert (s.shard_id, s.shard_count, s.limits().lease_s) == (1, 2, 12.0)
    assert s.shard_ids() == [1]


@pytest.mark.parametrize(
    ("shards", "count", "ids"),
    [
        ("0-3", 8, [0, 1, 2, 3]),
        ("4-7", 8, [4, 5, 6, 7]),
        ("0-1,6", 8, [0, 1, 6]),
        ("3", 4, [3]),
        (" 2 - 3 ", 4, [2, 3]),
    ],
)
def test_a_shard_range_is_read_from_flags_or_settings(shards, count, ids):
    assert load_settings(None, shards=shards, shard_count=count).shard_ids() == ids


@pytest.mark.parametrize(
    ("shards", "count", "message"),
    [
        ("0-8", 8, r"shard 8 is not below STORY_BOT_SHARD_COUNT \(8\): shards are numbered 0 to 7"),
        ("3-1", 8, "runs backwards: write 1-3"),
        ("a-b", 8, "is not a shard range: write it like 0-3"),
        ("0-3", None, "set STORY_BOT_SHARD_COUNT together with STORY_BOT_SHARDS"),
    ],
)
def test_a_bad_shard_range_is_refused_with_the_fix(shards, count, message, monkeypatch):
    with pytest.raises(ConfigError, match=message):
        load_settings(None, shards=shards, shard_count=count)
    monkeypatch.setenv("STORY_BOT_SHARD_ID", "1")
    with pytest.raises(ConfigError, match="STORY_BOT_SHARDS or STORY_BOT_SHARD_ID, not both"):
        load_settings(None, shards="0-3", shard_count=8)


def test_one_host_stays_the_plain_backend_and_several_make_a_pool(monkeypatch):
    from bot.llm import OllamaBackend
    from bot.pool import OllamaPool

    monkeypatch.setenv("STORY_BOT_OLLAMA_HOST", "http://gpu0:11434")
    one = load_settings()
    assert type(one.backend()) is OllamaBackend and one.backend().host == "http://gpu0:11434"
    assert one.limits().parallel == 1
    monkeypatch.setenv("STORY_BOT_OLLAMA_HOSTS", "http://gpu1:11434, http://gpu2:11434")
    monkeypatch.setenv("STORY_BOT_PARALLEL", "2")
    pool = load_settings().backend()
    assert isinstance(pool, OllamaPool) and [h.url for h in pool.hosts] == [
        "http://gpu1:11434",
        "http://gpu2:11434",
    ]
    assert pool.per_host == 2 and load_settings().limits().parallel == 4  # `parallel` is per host
    monkeypatch.setenv("STORY_BOT_OLLAMA_HOSTS", '["http://gpu3:11434"]')  # a JSON list too
    assert load_settings().hosts() == ["http://gpu3:11434"]


def test_the_toml_file_takes_a_host_list_and_a_database_url(tmp_path):
    path = tmp_path / "bot.toml"
    path.write_text(
        'ollama_hosts = ["http://a:11434", "http://b:11434"]\ndb = "postgresql://bot@db/stories"\n'
    )
    s = load_settings(path)
    assert s.hosts() == ["http://a:11434", "http://b:11434"] and s.db == "postgresql://bot@db/stories"


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


def test_story_bot_run_refuses_a_bad_shard_range_in_one_line(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STORY_BOT_DISCORD_TOKEN", "secret-token-value")
    result = CliRunner().invoke(app, ["run", "--shards", "4-8", "--shard-count", "8"])
    assert result.exit_code == 1
    assert "shard 8 is not below STORY_BOT_SHARD_COUNT (8): shards are numbered 0 to 7" in result.output


def test_the_models_a_story_may_pick_and_who_may_change_them_come_from_the_file(tmp_path):
    path = tmp_path / "story-bot.toml"
    path.write_text(
        'model = "writer"\nallowed_models = ["writer-b"]\nsettings_role = "Story keeper"\n'
        '[channel_models]\n"111" = "channel-model"\n'
        '[guild_allowed_models]\n"999" = ["guild-a", "guild-b"]\n'
        '[channel_allowed_models]\n"111" = ["channel-a"]\n'
    )
    s = load_settings(path)
    assert s.settings_role == "Story keeper"
    assert s.models_allowed(Channel("1", guild_id="5")) == ["writer", "writer-b"]
    assert s.models_allowed(Channel("1", guild_id="999")) == ["writer", "guild-a", "guild-b"]
    # A channel's list wins over its server's, for its threads too; its own model always comes first.
    assert s.models_allowed(Channel("111", guild_id="999")) == ["channel-model", "channel-a"]
    assert s.models_allowed(Channel("t1", guild_id="999", parent_id="111")) == ["channel-model", "channel-a"]


# --- each setting declared once ---------------------------------------------------------------------
def test_each_setting_the_core_declares_is_a_bot_setting_with_its_default_help_and_range(monkeypatch):
    from dataclasses import MISSING

    from annotated_types import Ge, Gt

    from bot.config import Settings
    from bot.core.configurable import declared
    from bot.core.limits import Limits
    from bot.core.ratelimit import Pace
    from bot.llm import Timeouts

    kinds = (Limits, Timeouts, Pace)
    names = [name for kind in kinds for name, _, _ in declared(kind)]
    assert {"max_passage_chars", "lease_seconds", "idle_timeout", "options", "edit_interval"} <= set(names)
    for kind in kinds:
        for name, field, declaration in declared(kind):
            setting = Settings.model_fields[name]
            wanted = field.default if field.default_factory is MISSING else field.default_factory()
            assert setting.get_default(call_default_factory=True) == wanted, name
            assert setting.description == declaration.help, name
            rules = [Gt(declaration.gt)] if declaration.gt is not None else []
            rules += [Ge(declaration.ge)] if declaration.ge is not None else []
            assert setting.metadata == rules, name
    # Nothing set: the core gets its own defaults; each setting reaches its field by name.
    assert load_settings().limits() == Limits() and load_settings().timeouts() == Timeouts()
    assert load_settings().pace() == Pace()
    monkeypatch.setenv("STORY_BOT_MAX_MEMORY_CHARS", "500")
    monkeypatch.setenv("STORY_BOT_PROMPT_TIMEOUT_PER_1K_TOKENS", "7")
    monkeypatch.setenv("STORY_BOT_LEASE_SECONDS", "9")
    monkeypatch.setenv("STORY_BOT_MEMBER_COMMANDS_PER_MINUTE", "3")
    s = load_settings()
    assert s.pace().commands_per_minute == 3
    assert (s.limits().max_memory_chars, s.limits().lease_s, s.timeouts().prompt_per_1k) == (500, 9.0, 7.0)
    monkeypatch.setenv("STORY_BOT_MAX_PASSAGE_CHARS", "50")  # the declared range is checked
    with pytest.raises(ConfigError, match="STORY_BOT_MAX_PASSAGE_CHARS: Input should be greater than or"):
        load_settings()


def test_a_new_core_setting_is_one_field_and_reaches_the_settings_the_core_and_the_docs(monkeypatch):
    import importlib.util
    from dataclasses import dataclass
    from pathlib import Path

    from bot.config import Settings, settings_from
    from bot.core.configurable import setting
    from bot.core.limits import Limits

    @dataclass(frozen=True)
    class MoreLimits(Limits):
        max_cast: int = setting(20, ge=1, help="The most personas a story may have.")

    more = settings_from(MoreLimits)(Settings)
    assert more().core(MoreLimits).max_cast == 20
    monkeypatch.setenv("STORY_BOT_MAX_CAST", "7")
    monkeypatch.setenv("STORY_BOT_MAX_MEMORY_CHARS", "300")
    made = more().core(MoreLimits, parallel=2)
    assert made == MoreLimits(parallel=2, max_memory_chars=300, max_cast=7)
    monkeypatch.setenv("STORY_BOT_MAX_CAST", "0")
    with pytest.raises(ValueError, match="max_cast"):
        more()
    hook = Path(__file__).parents[2] / "docs" / "hooks" / "reference.py"
    spec = importlib.util.spec_from_file_location("reference_hook", hook)
    assert spec and spec.loader
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    row = "| `max_cast` | `STORY_BOT_MAX_CAST` | int (≥ 1) | `20` | The most personas a story may have. |"
    assert row in reference.settings_table(more).splitlines()
    assert "max_cast" not in reference.settings_table()


def test_the_discord_options_take_their_bounds_from_the_core():
    """discord.py reads an option's bounds when the cog class is made, before any settings load, so the
    passage and memory options take Discord's longest and the service refuses past the setting."""
    from bot.core.limits import Limits
    from bot.core.service import MAX_NOTE_CHARS, MAX_TITLE_CHARS
    from bot.core.settings import RANGES
    from bot.core.story import MAX_PERSONA_CHARS, MAX_PERSONA_NAME
    from bot.core.text import OPTION_LIMIT
    from bot.discord.cog import StoryCog

    bounds = {
        (command.qualified_name, p.name): (p.min_value, p.max_value)
        for command in StoryCog(None).walk_app_commands()
        for p in getattr(command, "parameters", [])
    }
    assert Limits().max_passage_chars == OPTION_LIMIT  # the default is all Discord lets a member type
    assert bounds["write", "text"] == bounds["story edit", "text"] == (1, OPTION_LIMIT)
    assert bounds["story memory", "text"] == (1, OPTION_LIMIT) and Limits().max_memory_chars <= OPTION_LIMIT
    assert bounds["story note", "text"] == (1, MAX_NOTE_CHARS)
    assert bounds["story new", "title"] == bounds["story fork", "title"] == (1, MAX_TITLE_CHARS)
    assert bounds["persona set", "name"] == (1, MAX_PERSONA_NAME)
    assert bounds["persona set", "description"] == (1, MAX_PERSONA_CHARS)
    for name, span in RANGES.items():
        assert bounds["story settings", name] == span, name
