"""The service's settings, and the request options they give a model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

from contract import prompt as writer_prompt
from contract import serving

from ..llm import ModelInfo
from . import summary as summaries
from .context import Shares


@dataclass(frozen=True)
class Limits:
    parallel: int = 1  # generations in flight across all stories: the server's OLLAMA_NUM_PARALLEL
    num_ctx: int | None = None  # the model's window; default: the model's own num_ctx, else default_num_ctx
    default_num_ctx: int = 8192
    max_passage_chars: int = 6000
    options: Mapping[str, object] = field(default_factory=dict)  # the operator's Ollama options, by name
    delta_every: float = 0.05  # seconds between Delta events of one stream (drivers edit far less often)
    max_memory_chars: int = 2000
    shares: Shares = field(default_factory=Shares)  # what memory, summary and lore may take of the window
    summary_model: str | None = None  # default: the story's own model
    summary_words: int = summaries.SUMMARY_WORDS
    summary_timeout: float = 180.0  # seconds for a whole summary
    summary_retry_s: float = 60.0  # after a failed summary, wait this long before trying again
    lease_s: float = 30.0  # a lease (story, summary, delivery) lapses this long after its last renewal

    def window(self, info: ModelInfo) -> int:
        """The model's window in tokens: the configured num_ctx, else the model's own, else the default."""
        return self.num_ctx or info.num_ctx or self.default_num_ctx

    def request_options(self, info: ModelInfo, num_predict: int) -> serving.Options:
        """The Ollama options of a request to this model (a passage or a summary)."""
        given = cast(serving.Options, self.options)  # Ollama's names, as the operator's table holds them
        stop = stop_sequences(info.stop, given.get("stop"), info.template)
        return {**given, "num_ctx": self.window(info), "num_predict": num_predict, "stop": stop}


def stop_sequences(
    model_stop: Sequence[str] = (), configured: Sequence[str] | str | None = None, template: str = ""
) -> list[str]:
    """The `stop` option of a request: `</answer>` (the passage is complete there), the model's own stops
    and those of the chat template it was trained with (a request's stop list replaces the model's in
    Ollama, and a raw request must stop at the end of the turn whatever the model's parameters say)."""
    configured = [configured] if isinstance(configured, str) else list(configured or ())
    trained = serving.served_template(template) if template else None
    turn_ends = list(trained.stops) if trained is not None else []
    return list(dict.fromkeys([writer_prompt.ANSWER_CLOSE, *model_stop, *configured, *turn_ends]))
