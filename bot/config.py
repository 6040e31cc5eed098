"""The bot's settings: environment variables (prefix STORY_BOT_) over an optional TOML file over defaults.

    STORY_BOT_DISCORD_TOKEN   the bot's token (never logged; shown as **********)
    STORY_BOT_OLLAMA_HOST     the Ollama server (OLLAMA_HOST is honoured too)
    STORY_BOT_MODEL           the default model; per-guild and per-channel models in the TOML file
    STORY_BOT_DB              the SQLite file (default story-bot.db)
    STORY_BOT_CONFIG          the TOML file (default ./story-bot.toml when it exists)
    STORY_BOT_SUMMARY_MODEL   the model that writes rolling summaries (default: the story's own model)
    STORY_BOT_KEEP_ALIVE      how long Ollama keeps the model loaded after a request (default 30m)

Every field can be set either way: `STORY_BOT_PARALLEL=4` or `parallel = 4` in the file. A TOML file:

    model = "writer"
    parallel = 2                      # generations in flight: the server's OLLAMA_NUM_PARALLEL
    [channel_models]                  # a channel's model applies to its threads too
    "123456789012345678" = "cra-writer"
    [guild_models]
    "876543210987654321" = "writer"
    [options]                         # more Ollama options for every generation
    temperature = 0.8
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .core.context import CharCounter, Counter, TokenizerCounter
from .core.service import Limits
from .core.story import Channel
from .llm import DEFAULT_KEEP_ALIVE, Timeouts

DEFAULT_CONFIG = Path("story-bot.toml")
_SECONDS = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)")
_GO_DURATION = re.compile(r"[-+]?((\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h))+|[-+]?0")


class ConfigError(ValueError):
    """Settings that cannot work; the message says what to set."""


def _alias(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STORY_BOT_", extra="forbid", populate_by_name=True)

    discord_token: SecretStr | None = None
    ollama_host: str | None = Field(
        None, validation_alias=_alias("ollama_host", "STORY_BOT_OLLAMA_HOST", "OLLAMA_HOST")
    )
    model: str = "writer"
    guild_models: dict[str, str] = Field(default_factory=dict)
    channel_models: dict[str, str] = Field(default_factory=dict)
    db: Path = Path("story-bot.db")

    parallel: int = Field(
        1, ge=1, validation_alias=_alias("parallel", "STORY_BOT_PARALLEL", "OLLAMA_NUM_PARALLEL")
    )
    num_ctx: int | None = Field(None, ge=256)  # default: the model's own num_ctx, else 8192
    tokenizer: Path | None = None  # the model's tokenizer.json: count the context in tokens
    chars_per_token: float = Field(3.5, gt=0)  # else estimate tokens from characters
    max_passage_chars: int = Field(6000, ge=100)
    max_memory_chars: int = Field(2000, ge=100)
    summary_model: str | None = None  # writes the rolling summaries; default: the story's own model
    summary_timeout: float = Field(180.0, gt=0)
    #: How long Ollama keeps the model loaded after each request: a Go duration ("30m", "2h"), or seconds;
    #: negative keeps it loaded, 0 unloads it at once.
    keep_alive: float | str = DEFAULT_KEEP_ALIVE
    options: dict[str, float | int | str | bool | list[str]] = Field(default_factory=dict)

    connect_timeout: float = Field(5.0, gt=0)
    idle_timeout: float = Field(120.0, gt=0)  # for the first piece (a model loading) and between pieces
    total_timeout: float = Field(600.0, gt=0)

    # The Discord adapter's pacing.
    edit_interval: float = Field(1.0, ge=0.2)  # seconds between edits of a streaming message
    member_commands_per_minute: int = Field(10, ge=1)

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _keep_alive(cls, value):
        """Seconds as a number (Ollama reads a string without a unit as an error), else a Go duration."""
        text = str(value).strip()
        if (isinstance(value, int | float) and not isinstance(value, bool)) or _SECONDS.fullmatch(text):
            return float(text)
        if _GO_DURATION.fullmatch(text):
            return text
        raise ValueError(f"{value!r} is not a duration: write it like 30m, 1h30m or 90s, or in seconds")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flags given in code win, then the environment, then the TOML file, then the defaults.
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)

    # --- what the rest of the bot needs ----------------------------------------------------------
    def model_for(self, channel: Channel) -> str:
        """A channel's model, else its parent channel's (threads), else its guild's, else the default."""
        for key, table in ((channel.id, self.channel_models), (channel.parent_id, self.channel_models),
                           (channel.guild_id, self.guild_models)):  # fmt: skip
            if key and key in table:
                return table[key]
        return self.model

    def limits(self) -> Limits:
        return Limits(
            parallel=self.parallel,
            num_ctx=self.num_ctx,
            max_passage_chars=self.max_passage_chars,
            max_memory_chars=self.max_memory_chars,
            summary_model=self.summary_model,
            summary_timeout=self.summary_timeout,
            options=dict(self.options),
        )

    def timeouts(self) -> Timeouts:
        return Timeouts(self.connect_timeout, self.idle_timeout, self.total_timeout)

    def counter(self) -> Counter:
        return TokenizerCounter(self.tokenizer) if self.tokenizer else CharCounter(self.chars_per_token)

    def token(self) -> str:
        if self.discord_token is None or not self.discord_token.get_secret_value().strip():
            raise ConfigError(
                "no Discord bot token: set STORY_BOT_DISCORD_TOKEN (or discord_token in story-bot.toml); "
                "the token is on the Bot page of your application at https://discord.com/developers"
            )
        return self.discord_token.get_secret_value().strip()


def load_settings(config: Path | str | None = None, **overrides) -> Settings:
    """Settings from `config` (or STORY_BOT_CONFIG, or ./story-bot.toml if present), the environment
    and `overrides` (command-line flags; None values are ignored)."""
    explicit = config or os.environ.get("STORY_BOT_CONFIG")
    path = Path(explicit) if explicit else DEFAULT_CONFIG
    if explicit and not path.is_file():
        raise ConfigError(f"no config file at {path}: fix the path (or unset STORY_BOT_CONFIG)")

    class FileSettings(Settings):
        model_config = SettingsConfigDict(toml_file=path if path.is_file() else None)

    try:
        return FileSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path if path.is_file() else None)) from None
    except ValueError as exc:  # a TOML syntax error
        raise ConfigError(f"{path}: {exc}") from None


def _explain(exc: ValidationError, path: Path | None) -> str:
    where = f" (environment or {path})" if path else " (environment)"
    lines = []
    for err in exc.errors():
        field = ".".join(str(x) for x in err["loc"])
        hint = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{field} / STORY_BOT_{field.split('.')[0].upper()}: {hint}")
    return "bad settings" + where + ":\n  " + "\n  ".join(lines)
