"""The Discord adapter's modules import downward only: no import circle, none hidden under TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

import bot.discord

LAYERS = ["client", "cog", "delivery", "stream", "views"]  # each may import only those after it


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bot.discord."):
            found.add((node.module or "").split(".")[2])
    return found & set(LAYERS)


def test_each_module_imports_only_the_layers_below_it():
    folder = Path(bot.discord.__file__).parent
    assert sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__") == sorted(LAYERS)
    for i, name in enumerate(LAYERS):
        assert _imports(folder / f"{name}.py") <= set(LAYERS[i + 1 :]), name
