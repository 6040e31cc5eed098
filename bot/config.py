"""The bot's settings: environment variables (prefix STORY_BOT_) over an optional TOML file over defaults.

Each setting's help is its field's `description` below; the settings the core reads are declared once,
as fields of its dataclasses (`Limits`, `Timeouts`: see bot/core/configurable.py), and added here by
`settings_from`. docs/configuration.md is generated from all of them (names, environment variables,
defaults, ranges and help), so that page and this class cannot disagree.
The TOML file is --config, else STORY_BOT_CONFIG, else ./story-bot.toml when it exists.

Every field can be set either way: `STORY_BOT_PARALLEL=4` or `parallel = 4` in the file. A TOML file:

    model = "writer"
    allowed_models = ["writer", "cra-writer"]   # `/story settings` may pick these (tables per guild/channel)
    settings_role = "Story keeper"    # who may change a story's settings (unset: Manage Messages)
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

import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import MISSING
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_type_hints

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .core.configurable import Setting, declared
from .core.context import CharCounter, Counter, TokenizerCounter
from .core.ratelimit import Pace
from .core.service import Limits
from .core.story import Channel
from .llm import DEFAULT_KEEP_ALIVE, Backend, OllamaBackend, Timeouts

DEFAULT_CONFIG = Path("story-bot.toml")
_SECONDS = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)")
S = TypeVar("S", bound=BaseSettings)
T = TypeVar("T")
_GO_DURATION = re.compile(r"[-+]?((\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h))+|[-+]?0")


class ConfigError(ValueError):
    """Settings that cannot work; the message says what to set."""


def _alias(*names: str) -> AliasChoices:
    return AliasChoices(*names)


def settings_from(*kinds: type) -> Callable[[type[S]], type[S]]:
    """A class decorator: the settings class with one more field per setting that the core's dataclasses
    `kinds` declare (bot/core/configurable.py), its type, default, range and help taken from there."""

    def add(cls: type[S]) -> type[S]:
        fields: dict[str, Any] = {}
        for kind in kinds:
            types = get_type_hints(kind)
            for name, field, declared_as in declared(kind):
                fields[name] = (types[field.name], _pydantic_field(field, declared_as))
        subclass = create_model(cls.__name__, __base__=cls, __module__=cls.__module__, **fields)
        subclass.__doc__ = cls.__doc__
        return subclass

    return add


def _pydantic_field(field: dataclasses.Field, declared_as: Setting) -> Any:
    gt, ge, help_ = declared_as.gt, declared_as.ge, declared_as.help
    if field.default_factory is MISSING:
        return Field(field.default, gt=gt, ge=ge, description=help_)
    return Field(default_factory=field.default_factory, gt=gt, ge=ge, description=help_)


@settings_from(Limits, Timeouts, Pace)
class Settings(BaseSettings):
    """The bot's settings: the fields below, then those the core declares (Limits, Timeouts), which
    mypy does not see: the code reads them as `limits()` and `timeouts()`."""

    model_config = SettingsConfigDict(env_prefix="STORY_BOT_", extra="forbid", populate_by_name=True)

    # Each setting's `description` is its help: docs/configuration.md is generated from these fields.
    discord_token: SecretStr | None = Field(
        None,
        description="The bot's token, from the Bot page of your Discord application (never logged; shown "
        "as `**********`). `story-bot run` and `sync` need it; the console does not.",
    )
    ollama_host: str | None = Field(
        None,
        validation_alias=_alias("ollama_host", "STORY_BOT_OLLAMA_HOST", "OLLAMA_HOST"),
        description="The Ollama server (unset: Ollama's own default, `http://127.0.0.1:11434`).",
    )
    ollama_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Several Ollama servers as one pool (comma-separated or a JSON list in the "
        "environment, a list in the file). The first is the default, named in messages; `parallel` is "
        "then each server's. Unset: the one `ollama_host`.",
    )
    host_retry: float = Field(
        5.0,
        gt=0,
        description="Seconds a failed server of the pool is set aside before it is tried again, doubling "
        "up to 300 while it keeps failing (a timeout is not a failure: the model may be loading).",
    )
    model: str = Field(
        "writer",
        description="The default model; `guild_models` and `channel_models` name others.",
    )
    engine: Literal["ollama", "llama.cpp", "openai"] = Field(
        "ollama",
        description="`ollama`; `llama.cpp`: the `gguf` file run in-process, no server (one generation "
        "at a time; Ollama stays the serving path for more than one writer); or `openai`: an "
        "OpenAI-compatible engine at `openai_url` (vLLM, SGLang, TGI, llama.cpp's servers).",
    )
    openai_url: str | None = Field(
        None,
        description="With the openai engine: its API's base URL, `/v1` included "
        "(e.g. `http://gpu1:8000/v1`).",
    )
    openai_api_key: SecretStr | None = Field(
        None,
        description="With the openai engine: the key it was started with (vLLM's `--api-key`), if any.",
    )
    chat_template: Path | None = Field(
        None,
        description="With the openai engine: where the served models' chat template is (their GGUF, the "
        "merged Hugging Face folder or a template file), so a model of ours gets the exact chat text "
        "through `/v1/completions`; unset, models are plain ones, asked through `/v1/chat/completions`.",
    )
    chat_templates: dict[str, Path] = Field(
        default_factory=dict,
        description="With the openai engine: a chat template per model name (a TOML table), over "
        "`chat_template`.",
    )
    gguf: Path | None = Field(
        None,
        description="With the llama.cpp engine: the GGUF model file (every model name means this one).",
    )
    lora: Path | None = Field(
        None,
        description="With the llama.cpp engine: a GGUF LoRA adapter (from `export-gguf`) applied to `gguf`.",
    )
    guild_models: dict[str, str] = Field(
        default_factory=dict,
        description="A model per server (a TOML table: server id = model name).",
    )
    channel_models: dict[str, str] = Field(
        default_factory=dict,
        description="A model per channel (a TOML table: channel id = model name); a channel's model "
        "covers its threads, and wins over its server's.",
    )
    allowed_models: list[str] = Field(
        default_factory=list,
        description="The models a story's members may pick with `/story settings` (the channel's own "
        "model always); `guild_allowed_models` and `channel_allowed_models` name others per server and "
        "channel.",
    )
    guild_allowed_models: dict[str, list[str]] = Field(
        default_factory=dict,
        description="The models a server's stories may pick (a TOML table: server id = list of models); "
        "instead of `allowed_models` there.",
    )
    channel_allowed_models: dict[str, list[str]] = Field(
        default_factory=dict,
        description="The models a channel's stories (and its threads') may pick (a TOML table: channel id "
        "= list of models); instead of the server's list there.",
    )
    settings_role: str | None = Field(
        None,
        description="The Discord role (its name or id) whose members may change a story's settings "
        "(`/story settings`); unset: members with the Manage Messages permission.",
    )
    db: str = Field(
        "story-bot.db",
        description="The story store: a SQLite file, or a `postgresql://` URL (needs the `postgres` extra).",
    )

    parallel: int = Field(
        1,
        ge=1,
        validation_alias=_alias("parallel", "STORY_BOT_PARALLEL", "OLLAMA_NUM_PARALLEL"),
        description="Generations in flight per Ollama server, across all stories: the server's "
        "`OLLAMA_NUM_PARALLEL`.",
    )
    tokenizer: Path | None = Field(
        None,
        description="The model's `tokenizer.json`: the context is then fitted in tokens, not estimated "
        "from characters.",
    )
    chars_per_token: float = Field(
        3.5,
        gt=0,
        description="Without `tokenizer`: ASCII characters per token, to estimate a text's tokens (any "
        "other character counts as its UTF-8 bytes, so no script is undercounted).",
    )
    keep_alive: float | str = Field(
        DEFAULT_KEEP_ALIVE,
        description="How long Ollama keeps the model loaded after each request: a Go duration (`30m`, "
        "`2h`), or seconds; negative keeps it loaded, `0` unloads it at once.",
    )

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
    shard_id: int | None = Field(
        None,
        ge=0,
        description="This process's one shard of `shard_count` (or `shards`, not both).",
    )
    shards: str | None = Field(
        None,
        description="This process's shards of `shard_count`, a range such as `0-3` or `0-3,8`: several "
        "processes on one database each take their own.",
    )
    shard_count: int | None = Field(
        None,
        ge=1,
        description="The shards of the whole bot, the same for every process (with `shards` or `shard_id`).",
    )

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
        if self.engine == "openai" and not self.openai_url:
            raise ValueError(
                "STORY_BOT_ENGINE=openai needs STORY_BOT_OPENAI_URL: the engine's base URL, such as "
                "http://127.0.0.1:8000/v1"
            )
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
        STORY_BOT_ENGINE=llama.cpp, the GGUF in-process (the same interface again, no server); with
        STORY_BOT_ENGINE=openai, an OpenAI-compatible engine."""
        if self.engine == "llama.cpp":
            from .local import LlamaCppBackend

            assert self.gguf is not None  # the settings' validator refuses llama.cpp without a GGUF
            return LlamaCppBackend(self.gguf, self.lora, self.limits().num_ctx or 4096, self.timeouts())
        if self.engine == "openai":
            from .openai_backend import OpenAIBackend

            assert self.openai_url is not None  # the settings' validator refuses openai without a URL
            key = self.openai_api_key.get_secret_value() if self.openai_api_key else None
            templates = {**({"*": self.chat_template} if self.chat_template else {}), **self.chat_templates}
            return OpenAIBackend(self.openai_url, key, self.timeouts(), templates)
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
        for key, table in (
            (channel.id, self.channel_models),
            (channel.parent_id, self.channel_models),
            (channel.guild_id, self.guild_models),
        ):
            if key and key in table:
                return table[key]
        return self.model

    def models_allowed(self, channel: Channel) -> list[str]:
        """The models a story in `channel` may pick: the channel's list (or its parent's), else its
        server's, else `allowed_models`; the channel's own model first."""
        chosen = self.allowed_models
        for key, table in (
            (channel.guild_id, self.guild_allowed_models),
            (channel.parent_id, self.channel_allowed_models),
            (channel.id, self.channel_allowed_models),
        ):
            if key and key in table:
                chosen = table[key]
        return list(dict.fromkeys([self.model_for(channel), *chosen]))

    def core(self, kind: type[T], **derived: Any) -> T:
        """The core's dataclass `kind` from the settings it declares, by name; `derived`: its fields
        worked out from other settings."""
        values = {field.name: getattr(self, name) for name, field, _ in declared(kind)}
        return kind(**values, **derived)

    def limits(self) -> Limits:
        return self.core(Limits, parallel=self.parallel * len(self.hosts()))  # `parallel` is per server

    def timeouts(self) -> Timeouts:
        return self.core(Timeouts)

    def pace(self) -> Pace:
        return self.core(Pace)

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
        raise ConfigError(_explain(exc, path if path.is_file() else None)) from exc
    except ValueError as exc:  # a TOML syntax error
        raise ConfigError(f"{path}: {exc}") from exc


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
