"""What a model is trained to write (its target), and so how it is served and its output read.

One owner for each target's row shape and served format; training (`pipeline.train.rows`), the
trained chat template's record (`contract.chat_template`: it rides with the model into its GGUF,
Modelfile TEMPLATE and served requests), `eval perplexity` and the bot all ask here:

- `reasoning+answer` (the default): the writer prompt in the base's chat template; the reply is
  `<reasoning>…</reasoning><answer>…</answer>` (`contract.prompt.render_target`).
- `answer`: the same prompt, the same rows with the reasoning block removed: the reply is
  `<answer>…</answer>`. The answer keeps its tags so everything that ends and reads a passage works
  unchanged: the `</answer>` stop of the Modelfile and of the bot's stream, `restore_stop`, and the
  parser's cut of text written after the passage. A reply without reasoning is this target's shape,
  not a fault, so parsing for it does not report `missing_reasoning`.
- `text`: continued training on plain book text (the data step's windows, context then continuation,
  one space between), no chat template, loss on every token, EOS at the end of each window. Such a
  model continues raw text: it has never seen the writer prompt, so the Modelfile step and the bot
  refuse to serve it by name; it is a stage to train an SFT target on top of (`train --adapter`).

Standard library only: the bot imports it.
"""

from __future__ import annotations

from enum import StrEnum

from contract import prompt

#: Between a window's context and its continuation in `text` rows: the boundary is a sentence end,
#: and most sentence ends in a book are followed by a space (a paragraph break is the rarer case).
TEXT_JOIN = " "


class TargetError(ValueError):
    """A row or a model that does not fit a target; the message says what to do."""


class Target(StrEnum):
    REASONING_ANSWER = "reasoning+answer"
    ANSWER = "answer"
    TEXT = "text"

    @property
    def chat(self) -> bool:
        """Whether rows are writer prompts in the chat template (served to the bot), not plain text."""
        return self is not Target.TEXT

    def reply(self, text: str) -> str:
        """A training row's assistant text in this target's shape: the data step's
        `<reasoning>…</reasoning><answer>…</answer>` as it is, or reduced to `<answer>…</answer>`
        (an `<answer>…</answer>` row is taken as it is too). TargetError says what is wrong."""
        parsed = prompt.parse_output(text)
        if not parsed.answer:
            raise TargetError("empty answer")
        if self is Target.REASONING_ANSWER:
            if not parsed.ok:
                raise TargetError("target is not <reasoning>…</reasoning><answer>…</answer>")
            return text
        if self is Target.ANSWER:
            if [i for i in parsed.issues if i is not prompt.Issue.MISSING_REASONING]:
                raise TargetError("target is not [<reasoning>…</reasoning>]<answer>…</answer>")
            return f"{prompt.ANSWER_OPEN}{parsed.answer}{prompt.ANSWER_CLOSE}"
        raise TargetError("--target text trains on plain text, not on chat rows")

    def parse(self, text: str, *, partial: bool = False) -> prompt.ParsedOutput:
        """A model's output read as this target writes it (`prompt.parse_output`, leniently)."""
        parsed = prompt.parse_output(text, partial=partial)
        if self is Target.ANSWER and not parsed.reasoning:
            parsed.issues = [i for i in parsed.issues if i is not prompt.Issue.MISSING_REASONING]
        return parsed

    def check_servable(self) -> None:
        """Refuse, by name, to serve a model the writer prompt it was never trained on."""
        if not self.chat:
            raise TargetError(
                "this model was trained with --target text (plain book text, no writer prompt and no chat "
                "turns): it continues raw text, so it cannot be served the writer prompt; train a "
                "reasoning+answer or answer target on top of it (story-pipeline train --adapter ...)"
            )


DEFAULT = Target.REASONING_ANSWER
NAMES = tuple(t.value for t in Target)


def of(value: str | Target) -> Target:
    try:
        return Target(value)
    except ValueError as exc:
        raise TargetError(f"unknown target {value!r}: use one of {', '.join(NAMES)}") from exc


def plain_text(row: dict) -> str:
    """The plain text of a `text` row: a window of the data step (context, then continuation) or a
    `{"text": ...}` row (TRL's language-modeling form). TargetError says what is wrong."""
    if isinstance(row.get("text"), str):
        text = row["text"]
    elif isinstance(row.get("context"), str) and isinstance(row.get("continuation"), str):
        text = row["context"].strip() + TEXT_JOIN + row["continuation"].strip()
    elif "messages" in row:
        raise TargetError(
            "a chat row: --target text trains on the data step's windows (context, continuation)"
        )
    else:
        raise TargetError('neither "context" and "continuation" nor "text"')
    text = text.replace("\r\n", "\n").strip()
    if not text:
        raise TargetError("empty text")
    return text
