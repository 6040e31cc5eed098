"""The import graph a newcomer relies on: each package imports only the packages below it (ALLOWED):
`plumbing` nothing of ours, `contract` the plumbing, `engines` the contract; `pipeline` and `bot` all three
and never each other; `demo` is the one package over both. And no module circle, lazy imports inside
functions included (only `if TYPE_CHECKING:` blocks, which never run, are left out)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: What each package may import besides itself: the stated directions of the house, top to bottom.
ALLOWED: dict[str, set[str]] = {
    "plumbing": set(),
    "contract": {"plumbing"},
    "engines": {"contract", "plumbing"},
    "pipeline": {"engines", "contract", "plumbing"},
    "bot": {"engines", "contract", "plumbing"},
    "demo": {"pipeline", "bot", "engines", "contract", "plumbing"},
}
PACKAGES = tuple(ALLOWED)


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def _imported(name: str, path: Path, source: str | None = None) -> Iterator[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    text = path.read_text(encoding="utf-8") if source is None else source
    for node in _runtime_nodes(ast.parse(text)):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            yield base  # `from bot.store import opening` runs bot/store/__init__.py: an arrow to it too
            yield from (f"{base}.{a.name}" for a in node.names)


def graph() -> dict[str, set[str]]:
    modules = _modules()

    def owner(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = {owner(t) for t in _imported(name, path)}
        # A package's __init__ a module names is an arrow (bot.store.repository importing `bot.store`
        # closes a circle through the __init__ that imports it); the parents Python runs first are not.
        edges[name] = {t for t in targets if t and t != name}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def _top(module: str) -> str:
    return module.split(".")[0]


def crossings(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """The arrows that go against ALLOWED: upward, or across between `bot` and `pipeline`."""
    return sorted(
        (a, b)
        for a, targets in edges.items()
        for b in targets
        if _top(b) != _top(a) and _top(b) not in ALLOWED[_top(a)]
    )


def test_each_package_imports_only_those_below_it():
    assert crossings(graph()) == []


def test_no_module_imports_itself_round_a_circle():
    assert cycles(graph()) == []


def test_the_checker_sees_a_circle_and_a_crossing():
    # The checks above can fail: a made-up graph with both faults is caught.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    against = {
        "bot.llm": {"pipeline.cli", "contract.prompt"},
        "contract.serving": {"engines.local_engine", "plumbing.atomic"},
        "plumbing.jsonl": {"contract.prompt"},
        "engines.local_engine": {"contract.serving"},
    }
    assert crossings(against) == [
        ("bot.llm", "pipeline.cli"),
        ("contract.serving", "engines.local_engine"),
        ("plumbing.jsonl", "contract.prompt"),
    ]
    assert "engines.local_engine" in graph()["bot.local"]
    assert "contract.prompt" in graph()["bot.core.context"] | graph()["pipeline.train.rows"]
    # `from bot.store import opening` names the package: an arrow to its __init__ as well as to opening.
    named = set(_imported("x", Path("x.py"), "from bot.store import opening"))
    assert {"bot.store", "bot.store.opening"} <= named
