"""Training rows for the windows the teacher did not reach, with a short reasoning derived from the
window itself instead of a teacher's.

The demo's teacher is SmolLM2-135M: on 2 CPU cores it answers about one item in several seconds and
half its replies are refused (the report's teacher table says why), so a run can afford a dozen teacher
rows, far too few to train on. The other windows still carry what the student most needs to learn, a
human continuation in the trained format; their reasoning is one templated plan built from the window
(who is on stage, how long the next passage runs), in the same <reasoning>/<answer> shape. Like the
teacher, it is written knowing the continuation (it names the characters who act next first).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from contract import prompt
from demo.panel import characters


def derived_reasoning(context: str, continuation: str) -> str:
    names = characters(context)
    names.sort(key=lambda n: n not in continuation)  # who acts next first; stable otherwise
    who = f"with {_and(names[:2])} on stage" if names else "in the same place"
    sentences = max(1, len(re.findall(r"[.!?](?:[\"'”’)]*)(?:\s|$)", continuation)))
    return (
        f"The scene goes on from its last sentence, {who}. The next passage keeps the story's voice, "
        f"tense and pace, and runs about {sentences} sentence{'s' if sentences > 1 else ''}."
    )


def derived_rows(windows: Iterable[dict]) -> list[dict]:
    """One SFT row per window: its context, a derived reasoning and the human continuation, asked for
    at the continuation's own length (to the nearest ten words), as the bot asks for a length."""
    rows = []
    for w in windows:
        reasoning = derived_reasoning(w["context"], w["continuation"])
        length = max(10, round(len(w["continuation"].split()), -1))
        rows.append(prompt.training_row(w["context"], reasoning, w["continuation"], length=length))
    return rows


def _and(names: list[str]) -> str:
    return " and ".join(names)
