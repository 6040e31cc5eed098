"""`ruff format` owns the layout (CI runs `ruff format --check .`): no code opts out of it, so a hand-packed
argument list cannot creep back in under an opt-out comment, and the formatter's output is the one style."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SKIPPED = (".venv", ".cache", "site", ".git", "build")
OPT_OUTS = ("# fmt: " + "skip", "# fmt: " + "off")  # split, so this file does not name itself


def test_no_code_opts_out_of_the_formatter():
    found = [
        f"{path.relative_to(REPO)}:{n}"
        for path in REPO.rglob("*.py")
        if not set(path.relative_to(REPO).parts) & set(SKIPPED)
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if any(o in line for o in OPT_OUTS)
    ]
    assert not found, f"remove these opt-outs and let `ruff format` lay the code out: {found}"
