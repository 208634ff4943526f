"""The package's import graph has no cycles, TYPE_CHECKING and function-level imports included.

A cycle makes the order of module initialisation matter and ties two modules
into one; the only ones allowed are listed below, each with the comment at its
import that says why.
"""

from __future__ import annotations

import ast
from pathlib import Path

import durafka

PACKAGE = Path(durafka.__file__).parent

#: Cycles with a comment at the import saying why (sorted module names).
ALLOWED = {
    # errors.py: OrchestrationFailed carries the final status (TYPE_CHECKING only).
    ("durafka.codec.payload", "durafka.errors", "durafka.status"),
    # runtime/context.py: the executor drives the context, which records into it.
    ("durafka.runtime.context", "durafka.runtime.executor"),
}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``path`` imports, wherever the import statement is."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import submodule` depends on the submodule, not on pkg's body.
            subs = [f"{node.module}.{a.name}" for a in node.names]
            out.update(s for s in subs if s in modules)
            if node.module in modules and any(s not in modules for s in subs):
                out.add(node.module)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[tuple[str, ...]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(tuple(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_but_the_commented_ones() -> None:
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    assert set(_cycles(graph)) <= ALLOWED


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [("a", "b", "c")]
