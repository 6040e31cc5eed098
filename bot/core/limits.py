"""The service's settings, and the request options they give a model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from contract import serving

from ..llm import ModelInfo
from . import summary as summaries
from .configurable import setting
from .context import Shares
from .text import OPTION_LIMIT

#: The window when neither the settings nor the model name one.
DEFAULT_NUM_CTX = 8192


@dataclass(frozen=True)
class Limits:
    """What the service may do. A field made with `setting` is also a bot setting of that name (see
    bot/core/configurable.py): its default, help and range are declared here and nowhere else."""

    # Across all servers; the bot's `parallel` setting is per server (bot/config.py multiplies).
    parallel: int = 1
    num_ctx: int | None = setting(
        None,
        ge=256,
        help=f"The context window in tokens (unset: the model's own `num_ctx`, else {DEFAULT_NUM_CTX}).",
    )
    default_num_ctx: int = DEFAULT_NUM_CTX
    # Discord also caps a typed passage at OPTION_LIMIT (this default); set higher, it lets the console
    # and story files take longer ones.
    max_passage_chars: int = setting(
        OPTION_LIMIT, ge=100, help="The longest passage a member may write (`/write`)."
    )
    options: dict[str, float | int | str | bool | list[str]] = setting(
        factory=dict,
        help="More Ollama options for every generation (a TOML table, e.g. `temperature = 0.8`).",
    )
    delta_every: float = 0.05  # seconds between Delta events of one stream (drivers edit far less often)
    max_memory_chars: int = setting(
        2000, ge=100, help="The longest memory a story may pin (`/story memory`)."
    )
    shares: Shares = field(default_factory=Shares)  # what memory, summary and lore may take of the window
    summary_model: str | None = setting(
        None, help="The model that writes the rolling summaries (unset: the story's own)."
    )
    summary_words: int = summaries.SUMMARY_WORDS
    summary_timeout: float = setting(
        180.0,
        gt=0,
        help="Seconds a rolling summary may take; one that fails or times out is recorded and tried again "
        "with a passage at least a minute later.",
    )
    summary_retry_s: float = 60.0  # after a failed summary, wait this long before trying again
    lease_s: float = setting(
        30.0,
        ge=3,
        name="lease_seconds",
        help="How long a stopped process's work stays its own before another process takes it over; a "
        "live process renews its leases every third of it.",
    )

    def window(self, info: ModelInfo) -> int:
        """The model's window in tokens: the configured num_ctx, else the model's own, else the default."""
        return self.num_ctx or info.num_ctx or self.default_num_ctx

    def request_options(self, info: ModelInfo, num_predict: int) -> serving.Options:
        """The Ollama options of a request to this model (a passage or a summary)."""
        given = cast(serving.Options, self.options)  # Ollama's names, as the operator's table holds them
        stop = serving.stop_sequences(info.stop, given.get("stop"), info.template)
        return {**given, "num_ctx": self.window(info), "num_predict": num_predict, "stop": stop}
