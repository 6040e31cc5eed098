"""The bot's settings: environment variables (prefix STORY_BOT_) over an optional TOML file over defaults.

    STORY_BOT_DISCORD_TOKEN   the bot's token (never logged; shown as **********)
    STORY_BOT_OLLAMA_HOST     the Ollama server (OLLAMA_HOST is honoured too)
    STORY_BOT_OLLAMA_HOSTS    several Ollama servers, a pool (comma-separated or a JSON list)
    STORY_BOT_MODEL           the default model; per-guild and per-channel models in the TOML file
    STORY_BOT_DB              the SQLite file (default story-bot.db), or a postgresql:// URL
    STORY_BOT_CONFIG          the TOML file (default ./story-bot.toml when it exists)
    STORY_BOT_SUMMARY_MODEL   the model that writes rolling summaries (default: the story's own model)
    STORY_BOT_ENGINE          ollama (default) or llama.cpp: a GGUF run in-process, no server
    STORY_BOT_GGUF            with llama.cpp: the GGUF model file (every model name means this one)
    STORY_BOT_LORA            with llama.cpp: a GGUF LoRA adapter to apply to it (from export-gguf)
    STORY_BOT_SHARDS, STORY_BOT_SHARD_COUNT   this process's shards of the Discord events ("0-3" of 8;
                              several processes on one database: their own shards each, the same count
                              for all); STORY_BOT_SHARD_ID names a single shard
    STORY_BOT_KEEP_ALIVE      how long Ollama keeps the model loaded after a request (default 30m)

Every field can be set either way: `STORY_BOT_PARALLEL=4` or `parallel = 4` in the file. A TOML file:

    model = "writer"
    parallel = 2                      # generations in flight per server: its OLLAMA_NUM_PARALLEL
    ollama_hosts = ["http://gpu1:11434", "http://gpu2:11434"]   # a pool (default: ollama_host)
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
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .core.context import CharCounter, Counter, TokenizerCounter
from .core.service import Limits
from .core.story import Channel
from .llm import DEFAULT_KEEP_ALIVE, Backend, OllamaBackend, Timeouts

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
    ollama_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)  # a pool; first: default
    host_retry: float = Field(5.0, gt=0)  # a failed host is tried again after this, doubling to 300 s
    model: str = "writer"
    engine: Literal["ollama", "llama.cpp"] = "ollama"
    gguf: Path | None = None  # the llama.cpp engine's model file
    lora: Path | None = None  # and its adapter
    guild_models: dict[str, str] = Field(default_factory=dict)
    channel_models: dict[str, str] = Field(default_factory=dict)
    db: str = "story-bot.db"  # a file, or a postgresql:// URL

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

    # Several processes on one database: each its own shard of the Discord events.
    shard_id: int | None = Field(None, ge=0)
    shards: str | None = None  # "0-3", "0-3,8": this process's shards of shard_count
    shard_count: int | None = Field(None, ge=1)
    lease_seconds: float = Field(30.0, ge=3)  # a dead process's work is taken over this long after

    @field_validator("ollama_hosts", mode="before")
    @classmethod
    def _host_list(cls, value):
        if isinstance(value, str):  # the environment: "a:11434,b:11434" or a JSON list
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [h.strip() for h in text.split(",") if h.strip()]
        return value

    @field_validator("db", mode="before")
    @classmethod
    def _db_text(cls, value):
        return str(value) if isinstance(value, Path) else value

    @model_validator(mode="after")
    def _engine_has_a_model(self) -> Settings:
        if self.engine == "llama.cpp" and self.gguf is None:
            raise ValueError("STORY_BOT_ENGINE=llama.cpp needs STORY_BOT_GGUF: the GGUF file to run")
        return self

    @model_validator(mode="after")
    def _one_shard(self) -> Settings:
        if self.shard_id is not None and self.shards is not None:
            raise ValueError("set STORY_BOT_SHARDS or STORY_BOT_SHARD_ID, not both")
        picked = self.shard_id is not None or self.shards is not None
        if picked != (self.shard_count is not None):
            raise ValueError(
                "set STORY_BOT_SHARD_COUNT together with STORY_BOT_SHARDS (or STORY_BOT_SHARD_ID), or none"
            )
        if self.shard_count is not None:
            self.shard_ids()  # refuses a bad range now
        return self

    # --- what the rest of the bot needs ----------------------------------------------------------
    def shard_ids(self) -> list[int] | None:
        """This process's shards (None: all of them, Discord choosing the count)."""
        if self.shard_count is None:
            return None
        text = str(self.shard_id) if self.shard_id is not None else self.shards or ""
        return parse_shards(text, self.shard_count)

    def hosts(self) -> list[str]:
        return list(dict.fromkeys(self.ollama_hosts)) or [self.ollama_host]  # type: ignore[list-item]

    def backend(self) -> Backend:
        """One host: its backend, as ever; several: a pool of them (the same interface); with
        STORY_BOT_ENGINE=llama.cpp, the GGUF in-process (the same interface again, no server)."""
        if self.engine == "llama.cpp":
            from .local import LlamaCppBackend

            assert self.gguf is not None  # the settings' validator refuses llama.cpp without a GGUF
            return LlamaCppBackend(self.gguf, self.lora, self.num_ctx or 4096, self.timeouts())
        hosts = self.hosts()
        if len(hosts) == 1:
            return OllamaBackend(hosts[0], self.timeouts(), self.keep_alive)
        from .pool import OllamaPool

        return OllamaPool(
            hosts, self.timeouts(), per_host=self.parallel, retry=self.host_retry, keep_alive=self.keep_alive
        )

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flags given in code win, then the environment, then the TOML file, then the defaults.
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)

    def model_for(self, channel: Channel) -> str:
        """A channel's model, else its parent channel's (threads), else its guild's, else the default."""
        for key, table in ((channel.id, self.channel_models), (channel.parent_id, self.channel_models),
                           (channel.guild_id, self.guild_models)):  # fmt: skip
            if key and key in table:
                return table[key]
        return self.model

    def limits(self) -> Limits:
        return Limits(
            parallel=self.parallel * len(self.hosts()),  # `parallel` is per server
            num_ctx=self.num_ctx,
            max_passage_chars=self.max_passage_chars,
            max_memory_chars=self.max_memory_chars,
            summary_model=self.summary_model,
            summary_timeout=self.summary_timeout,
            options=dict(self.options),
            lease_s=self.lease_seconds,
        )

    def timeouts(self) -> Timeouts:
        return Timeouts(self.connect_timeout, self.idle_timeout, self.total_timeout)

    def counter(self) -> Counter:
        if self.tokenizer:
            return TokenizerCounter(self.tokenizer)
        return CharCounter(self.chars_per_token)

    def token(self) -> str:
        if self.discord_token is None or not self.discord_token.get_secret_value().strip():
            raise ConfigError(
                "no Discord bot token: set STORY_BOT_DISCORD_TOKEN (or discord_token in story-bot.toml); "
                "the token is on the Bot page of your application at https://discord.com/developers"
            )
        return self.discord_token.get_secret_value().strip()


def parse_shards(text: str, count: int) -> list[int]:
    """ "0-3,8" -> [0, 1, 2, 3, 8]; every shard below `count`."""
    shards: list[int] = []
    for run in text.replace(" ", "").split(","):
        first, dash, last = run.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(
                f"STORY_BOT_SHARDS / --shards: {text!r} is not a shard range: write it like 0-3 or 0-3,8"
            )
        a, b = int(first), int(last) if dash else int(first)
        if a > b:
            raise ValueError(f"STORY_BOT_SHARDS / --shards: {run!r} runs backwards: write {b}-{a}")
        shards.extend(range(a, b + 1))
    if max(shards) >= count:
        raise ValueError(
            f"shard {max(shards)} is not below STORY_BOT_SHARD_COUNT ({count}): shards are numbered 0 "
            f"to {count - 1}"
        )
    return sorted(set(shards))


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
        if not err["loc"]:  # a rule across settings: its message names them
            lines.append(err["msg"].removeprefix("Value error, "))
            continue
        field = ".".join(str(x) for x in err["loc"])
        hint = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{field} / STORY_BOT_{field.split('.')[0].upper()}: {hint}")
    return "bad settings" + where + ":\n  " + "\n  ".join(lines)
