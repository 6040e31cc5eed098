"""How a story context reaches an Ollama model with the writer prompt applied exactly once.

Two kinds of model are served:
- a model created from our Modelfiles, whose TEMPLATE already wraps the user's text in the writer prompt:
  it gets the bare context (or, when a direction or length is asked for, the whole chat text in `raw`
  mode, rendered by the same chat format the TEMPLATE came from);
- any other model (a plain instruct model): it gets the writer prompt as the user's text, and its own
  template does the chat wrapping.
Either way `user_text` is the writer prompt exactly as the model reads it, which is what generation
records and the feedback export keep.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pipeline import chat_formats, prompt
from pipeline.chat_formats import ChatFormat

DEFAULT_HOST = "http://127.0.0.1:11434"
#: Tokens for the reasoning before the answer starts, on top of the answer's own budget.
REASONING_TOKENS = 400
TOKENS_PER_WORD = 1.4


class ServingError(ValueError):
    pass


@dataclass(frozen=True)
class GenerateRequest:
    """The `prompt` and `raw` fields of an /api/generate call, and the writer prompt behind them."""

    prompt: str
    raw: bool
    user_text: str


def holds_writer_prompt(template: str) -> bool:
    """Whether a model's TEMPLATE already contains the writer prompt (ours, or one built like it)."""
    return prompt.TASK_LINE in template and prompt.CONTEXT_HEADER in template


def format_of_template(template: str) -> ChatFormat | None:
    """Which of our chat formats produced this TEMPLATE, if it is one of ours byte for byte."""
    return chat_formats.from_ollama_template(template)


def build_request(
    context: str,
    template: str,
    guidance: str | None = None,
    length: prompt.Length | str | int | None = None,
    system: str | None = None,
) -> GenerateRequest:
    """The generate request for a context, given the model's TEMPLATE (from /api/show)."""
    user_text = prompt.render_prompt(context, guidance, length)
    if not holds_writer_prompt(template):
        return GenerateRequest(prompt=user_text, raw=False, user_text=user_text)
    if user_text == prompt.render_prompt(context):  # no direction, no length: the TEMPLATE does it all
        return GenerateRequest(prompt=prompt.clean_context(context), raw=False, user_text=user_text)
    fmt = format_of_template(template)
    if fmt is None:
        raise ServingError(
            "this model's TEMPLATE holds a writer prompt that is not one of ours, so a direction or a "
            "length cannot be added to it: recreate the model with `story-pipeline modelfile`, or "
            "continue without a direction"
        )
    return GenerateRequest(
        prompt=fmt.generation_prompt(user_text, system or None), raw=True, user_text=user_text
    )


def num_predict(length: prompt.Length | str | int | None, default_words: int = 250) -> int:
    """A token budget for reasoning plus an answer of the asked length, with room to finish."""
    words = prompt.length_words(length) or default_words
    return REASONING_TOKENS + int(words * TOKENS_PER_WORD * 1.5)


def resolve_host(host: str | None) -> str:
    """The server URL: the argument, else OLLAMA_HOST, else the default; scheme and port filled in."""
    host = (host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST).strip().rstrip("/")
    if "://" not in host:
        host = "http://" + host
    scheme, rest = host.split("://", 1)
    if ":" not in rest.split("/", 1)[0]:
        rest = rest.replace("/", ":11434/", 1) if "/" in rest else rest + ":11434"
    return f"{scheme}://{rest}"
