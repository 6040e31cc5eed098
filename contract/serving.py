"""How a prompt reaches an Ollama model with the writer prompt applied exactly once, byte for byte.

Every generate request is built by :func:`request_for`, whatever asks (the bot's passages and summaries,
`eval compare`, the teacher). Two kinds of model are served:
- a model made from our Modelfiles or our GGUF exports, whose template (the TEMPLATE, or the GGUF chat
  template Ollama shows when it prefers that one) renders the writer prompt in one of our chat formats:
  it gets the whole chat text in `raw` mode, rendered by that format exactly as training rendered it, so
  what the model reads does not depend on which template Ollama picks (pipeline/modelfile/selection.py);
- any other model (a plain instruct model): it gets the writer prompt as the user's text, and its own
  template does the chat wrapping.
`prompt` and `raw` are the exact bytes sent, which the generation record keeps; `user_text` is the user
turn inside them (the writer prompt exactly as the model reads it), which the feedback export keeps.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from contract import chat_formats, prompt
from contract.chat_formats import ChatFormat

DEFAULT_HOST = "http://127.0.0.1:11434"
#: Tokens for the reasoning before the answer starts, on top of the answer's own budget.
REASONING_TOKENS = 400
TOKENS_PER_WORD = 1.4
_PROBE_CONTEXT, _PROBE_SYSTEM = "PROBE \u2014 the story so far.", "PROBE-SYSTEM"


class ServingError(ValueError):
    pass


@dataclass(frozen=True)
class GenerateRequest:
    """The `prompt`, `raw` and `system` fields of an /api/generate call, and the user turn inside them."""

    prompt: str
    raw: bool
    user_text: str
    system: str | None = None  # only for a plain model asked with its own system turn

    def fields(self) -> dict:
        """Keyword arguments for `ollama` `generate`."""
        return {"prompt": self.prompt, "raw": self.raw, **({"system": self.system} if self.system else {})}


def holds_writer_prompt(template: str) -> bool:
    """Whether a model's template already contains the writer prompt (ours, or one built like it)."""
    return prompt.TASK_LINE in template and prompt.CONTEXT_HEADER in template


@functools.lru_cache(maxsize=64)
def served_format(template: str) -> ChatFormat | None:
    """The chat format whose writer prompt this template renders byte for byte, if any.

    `template` is what /api/show returns: the Go TEMPLATE, or the GGUF's Jinja chat template when
    Ollama renders with that one. It is recognised by what it renders (a probe turn with and without a
    system turn), not by its spelling, so older TEMPLATEs of ours and our GGUF chat templates count.
    """
    if not holds_writer_prompt(template):
        return None
    exact = chat_formats.from_ollama_template(template)  # our TEMPLATE as written, any default system turn
    if exact is not None:
        return exact
    user = prompt.render_prompt(_PROBE_CONTEXT)
    probes: tuple[list[dict], ...] = ([], [{"role": "system", "content": _PROBE_SYSTEM}])
    for fmt in [*chat_formats.FORMATS.values(), *_with_own_system_turns(template, user)]:
        try:
            if all(_renders(template, fmt, [*s, {"role": "user", "content": _PROBE_CONTEXT}])
                   == fmt.render([*s, {"role": "user", "content": user}], add_generation_prompt=True)
                   for s in probes):  # fmt: skip
                return fmt
        except Exception:  # noqa: BLE001 - a template we cannot render is simply not one of ours
            continue
    return None


def _with_own_system_turns(template: str, user: str) -> list[ChatFormat]:
    """Formats with a default system turn of the base's own (SmolLM2's), read off what the template
    renders for a turn with no system turn of the caller's."""
    found = []
    for family in (chat_formats.FORMATS["chatml"], chat_formats.FORMATS["llama3"]):
        try:
            got = _renders(template, family, [{"role": "user", "content": _PROBE_CONTEXT}])
        except Exception:  # noqa: BLE001 - a template we cannot render is simply not one of ours
            continue
        marked = chat_formats.with_default_system(family, "\x00")
        rendered = marked.render([{"role": "user", "content": user}], add_generation_prompt=True)
        head, _, tail = rendered.partition("\x00")
        if got.startswith(head) and got.endswith(tail) and len(got) >= len(head) + len(tail):
            found.append(chat_formats.with_default_system(family, got[len(head) : len(got) - len(tail)]))
    return found


def format_of_template(template: str) -> ChatFormat | None:
    """Which of our chat formats produced this TEMPLATE, if it is one of ours byte for byte."""
    return chat_formats.from_ollama_template(template)


def _renders(template: str, fmt: ChatFormat, messages: list[dict]) -> str:
    """What Ollama gives the model for these messages: the Go TEMPLATE's text after the runtime's BOS,
    or the Jinja chat template's as llama-server renders it."""
    if "{%" in template:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        return env.from_string(template).render(
            messages=messages, add_generation_prompt=True, bos_token=fmt.bos, eos_token=""
        )
    from contract.modelfile import gotemplate

    return fmt.bos + gotemplate.execute(template, messages)


def request_for(
    template: str, user_text: str, system: str | None = None, model_system: str = ""
) -> GenerateRequest:
    """The one place a generate request is built, from the model's template (from /api/show).

    `user_text` is the whole user turn (a rendered writer prompt, or a summary's instructions);
    `system` a system turn of the caller's own, else the model's SYSTEM (`model_system`) applies.
    """
    fmt = served_format(template)
    if fmt is not None:
        turn = system or model_system or None
        return GenerateRequest(fmt.generation_prompt(user_text, turn), raw=True, user_text=user_text)
    if holds_writer_prompt(template):
        raise ServingError(
            "this model's TEMPLATE holds a writer prompt that is not one of ours, so the exact text it was "
            "trained on cannot be sent: recreate the model with `story-pipeline modelfile`"
        )
    return GenerateRequest(user_text, raw=False, user_text=user_text, system=system or None)


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
        and not served_format(template)
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
