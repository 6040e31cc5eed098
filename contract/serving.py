"""How a prompt reaches an Ollama model with the writer prompt applied exactly once, byte for byte.

Every generate request is built by :func:`request_for`, whatever asks (the bot's passages and summaries,
`eval compare`, the teacher). Two kinds of model are served:
- a model made from our Modelfiles or our GGUF exports: its template (the TEMPLATE, or the GGUF chat
  template Ollama shows when it prefers that one) carries the chat template it was trained with
  (`contract.chat_template`, a record in a comment). It gets the whole chat text in `raw` mode, rendered
  by that template exactly as training rendered it, so what the model reads does not depend on which
  template Ollama picks (pipeline/modelfile/selection.py);
- any other model (a plain instruct model): it gets the writer prompt as the user's text, and its own
  template does the chat wrapping.
A model trained with an `answer` target is sent the same prompt, and its request says so (`target`) for
the reader of its output; a `text` model (plain book text, never the writer prompt) is refused by name.
`prompt` and `raw` are the exact bytes sent, which the generation record keeps; `user_text` is the user
turn inside them (the writer prompt exactly as the model reads it), which the feedback export keeps.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NotRequired, TypedDict

from contract import chat_template, prompt
from contract import target as targets
from contract.chat_template import ChatTemplate
from contract.target import Target

DEFAULT_HOST = "http://127.0.0.1:11434"
#: Tokens for the reasoning before the answer starts, on top of the answer's own budget.
REASONING_TOKENS = 400
TOKENS_PER_WORD = 1.4


class ServingError(ValueError):
    pass


class Options(TypedDict, total=False):
    """The `options` of an /api/generate call (Ollama's docs/api.md): those this project sets. An
    operator's table may name others of Ollama's; they are passed on as written. (`ollama.Options` is a
    pydantic model and has no `min_p`.)"""

    num_ctx: int
    num_predict: int
    stop: list[str]
    seed: int
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repeat_penalty: float
    repeat_last_n: int


class RequestFields(TypedDict):
    """The keyword arguments :meth:`GenerateRequest.fields` gives `ollama`'s `generate`."""

    prompt: str
    raw: bool
    system: NotRequired[str]


@dataclass(frozen=True)
class GenerateRequest:
    """The `prompt`, `raw` and `system` fields of an /api/generate call, and the user turn inside them."""

    prompt: str
    raw: bool
    user_text: str
    system: str | None = None  # only for a plain model asked with its own system turn
    target: Target = Target.REASONING_ANSWER  # what the model writes: read its output with target.parse

    def fields(self) -> RequestFields:
        """Keyword arguments for `ollama` `generate`: `system` only when not raw (a raw request that
        carries one is refused, server/routes.go GenerateHandler, v0.33.0-rc2)."""
        out: RequestFields = {"prompt": self.prompt, "raw": self.raw}
        if self.system:
            out["system"] = self.system
        return out


def holds_writer_prompt(template: str) -> bool:
    """Whether a model's template already contains the writer prompt (ours, or one built like it)."""
    return prompt.TASK_LINE in template and prompt.CONTEXT_HEADER in template


@functools.lru_cache(maxsize=64)
def served_template(template: str) -> ChatTemplate | None:
    """The chat template a model was trained with, as its template (from /api/show) carries it, when
    that template still renders what the carried one renders: a TEMPLATE edited by hand is not ours."""
    trained = chat_template.decode(template) if holds_writer_prompt(template) else None
    if trained is None:
        return None
    if "{%" in template:  # our GGUF exports' chat template
        return trained if template == trained.pinned_jinja(writer=True) else None
    from contract import go_chat

    return trained if go_chat.mismatch(trained, template) is None else None


def request_for(
    template: str, user_text: str, system: str | None = None, model_system: str = ""
) -> GenerateRequest:
    """The one place a generate request is built, from the model's template (from /api/show).

    `user_text` is the whole user turn (a rendered writer prompt, or a summary's instructions);
    `system` a system turn of the caller's own, else the model's SYSTEM (`model_system`) applies.
    """
    trained = served_template(template)
    if trained is not None:
        target = _target_of(trained)
        turn = system or model_system or None
        return GenerateRequest(trained.prompt(user_text, turn), raw=True, user_text=user_text, target=target)
    if holds_writer_prompt(template):
        raise ServingError(
            "this model's TEMPLATE holds a writer prompt but not the chat template it was trained with, "
            "so the exact text it was trained on cannot be sent: recreate the model with "
            "`story-pipeline modelfile`"
        )
    return GenerateRequest(user_text, raw=False, user_text=user_text, system=system or None)


def _target_of(trained: ChatTemplate) -> Target:
    """The target the model was trained to write, refused where it cannot serve the writer prompt."""
    try:
        target = targets.of(trained.target)
        target.check_servable()
    except targets.TargetError as e:
        raise ServingError(str(e)) from e
    return target


def build_request(
    context: str,
    template: str,
    guidance: str | None = None,
    length: prompt.Length | str | int | None = None,
    system: str | None = None,
) -> GenerateRequest:
    """The generate request for a story context (`system`: the model's SYSTEM, from /api/show)."""
    user_text = prompt.render_prompt(context, guidance, length)
    if (
        user_text == prompt.render_prompt(context)
        and holds_writer_prompt(template)
        and not served_template(template)
    ):
        # A writer prompt of someone else's: let its TEMPLATE wrap the bare context, the best we can do.
        return GenerateRequest(prompt.clean_context(context), raw=False, user_text=user_text)
    return request_for(template, user_text, model_system=system or "")


def system_of(modelfile: str) -> str:
    """A model's SYSTEM, read from the Modelfile /api/show returns (the `ollama` client drops the field)."""
    from contract.modelfile import grammar

    try:
        return grammar.parse(modelfile).first("system") or ""
    except grammar.ModelfileError:
        return ""


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


def template_of(where: str | Path) -> str:
    """A model's chat template from its files, for an engine that does not tell it (an OpenAI-compatible
    server): a GGUF or a Hugging Face folder (contract.modelfile.inspect reads both), else a template file
    as it is. ValueError says what is wrong."""
    path = Path(where)
    if not path.exists():
        raise ValueError(f"no chat template at {path}: give the model's GGUF, its folder or a template file")
    if path.is_file():
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                return path.read_text(encoding="utf-8")
    from contract.modelfile import inspect

    template = inspect.local_chat_template(path)[0]
    if not template:
        raise ValueError(f"{path} holds no chat template")
    return template


def stop_sequences(
    model_stop: Sequence[str] = (), configured: Sequence[str] | str | None = None, template: str = ""
) -> list[str]:
    """The `stop` option of a request: `</answer>` (the passage is complete there), the model's own stops
    and those of the chat template it was trained with (a request's stop list replaces the model's in
    Ollama, and a raw request must stop at the end of the turn whatever the model's parameters say).
    The bot and `eval compare` both send it, so a model is measured on the outputs writers are shown."""
    configured = [configured] if isinstance(configured, str) else list(configured or ())
    trained = served_template(template) if template else None
    turn_ends = list(trained.stops) if trained is not None else []
    return list(dict.fromkeys([prompt.ANSWER_CLOSE, *model_stop, *configured, *turn_ends]))
