"""A story's generation settings (`/story settings`): its model, sampling and default length. Pure.

The operator names the models a channel may pick (bot/config.py: `allowed_models` and its per guild and
per channel tables); the story keeps what its members set, newest row standing (a fork copies it). What
a setting leaves unset is the operator's: the channel's model, the `[options]` table, the usual length.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import cast

from contract import prompt as writer_prompt
from contract.serving import Options

from .events import StoryError

#: Each sampling setting's Ollama option name and the range a member may set (Ollama's own bounds).
RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "repeat_penalty": (0.5, 2.0),
}
LENGTHS = tuple(length.value for length in writer_prompt.Length)


@dataclass(frozen=True)
class StorySettings:
    """What a story's members set; None: the operator's default."""

    model: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    repeat_penalty: float | None = None
    length: str | None = None  # the default length of /continue: short, medium or long
    id: int | None = None  # the stored row (the generation record names it)

    def values(self) -> dict:
        """The keys set, in field order (what is stored and exported)."""
        return {k: v for k, v in asdict(self).items() if v is not None and k != "id"}

    def options(self) -> Options:
        """The Ollama options these settings give a request (RANGES names Options' float keys)."""
        return cast(Options, {k: v for k, v in self.values().items() if k in RANGES})

    def to_json(self) -> str:
        return json.dumps(self.values(), sort_keys=False)

    @classmethod
    def from_values(cls, values: dict, row_id: int | None = None) -> StorySettings:
        names = {f.name for f in fields(cls)} - {"id"}
        unknown = sorted(set(values) - names)
        if unknown:
            raise StoryError(f"unknown settings {unknown}: the settings are {sorted(names)}")
        return cls(**values, id=row_id)


def change(
    current: StorySettings,
    allowed: Sequence[str],
    *,
    model: str | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    repeat_penalty: float | None = None,
    length: str | None = None,
    reset: bool = False,
) -> StorySettings:
    """`current` with the given settings changed (None keeps one; `reset` starts from the defaults), each
    checked: the model from `allowed`, the sampling within RANGES, the length one of LENGTHS."""
    base = StorySettings() if reset else StorySettings(**current.values())
    values = base.values()
    if model is not None:
        if model not in allowed:
            raise StoryError(
                f"the model {model!r} is not one this channel may use: pick one of {', '.join(allowed)} "
                "(the operator lists them in the bot's config: allowed_models)"
            )
        values["model"] = model
    for name, value in (("temperature", temperature), ("top_p", top_p), ("repeat_penalty", repeat_penalty)):
        if value is None:
            continue
        low, high = RANGES[name]
        if not low <= float(value) <= high:
            raise StoryError(f"{name} {value:g} is out of range: give a number from {low:g} to {high:g}")
        values[name] = float(value)
    if length is not None:
        if length.lower() not in LENGTHS:
            raise StoryError(f"unknown length {length!r}: use {', '.join(LENGTHS)}")
        values["length"] = length.lower()
    return StorySettings.from_values({k: values[k] for k in _ORDER if k in values})


def check_imported(values: object, allowed: Sequence[str]) -> StorySettings:
    """Settings from a story file, checked as a member's would be; a model this channel may not use is
    left unset (the caller says so)."""
    if not isinstance(values, dict):
        raise StoryError("settings must be an object")
    unknown = sorted(set(values) - set(_ORDER))
    if unknown:
        raise StoryError(f"unknown settings {unknown}: the settings are {list(_ORDER)}")
    for name in (*RANGES, "length", "model"):
        value = values.get(name)
        wanted = str if name in ("length", "model") else (int, float)
        if value is not None and (not isinstance(value, wanted) or isinstance(value, bool)):
            raise StoryError(f"settings.{name} must be a {'text' if wanted is str else 'number'}")
    rest = {k: v for k, v in values.items() if k != "model"}
    model = values.get("model")
    return replace(change(StorySettings(), allowed, **rest), model=model if model in allowed else None)


_ORDER = ("model", "temperature", "top_p", "repeat_penalty", "length")


def describe(settings: StorySettings, model: str) -> str:
    """One line: the model used and each setting, "default" where the operator's stands."""
    parts = [f"model {model}" + ("" if settings.model else " (the channel's)")]
    for name in ("temperature", "top_p", "repeat_penalty", "length"):
        value = getattr(settings, name)
        shown = "default" if value is None else value if isinstance(value, str) else format(value, "g")
        parts.append(f"{name} {shown}")
    return " · ".join(parts)
