"""The import graph of kdlab (docs/architecture.md): no cycle, nothing imports the command line,
and the leaf packages import nothing from the rest of kdlab."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kdlab"
LEAVES = {"kdlab.data", "kdlab.models"}
LEAF_MAY_IMPORT = ("kdlab.data", "kdlab.models")


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kdlab"):
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names if a.name.startswith("kdlab")}
        graph[name] = imported
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target, [*path, target])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [node])):
            return found
    return None


def test_the_import_graph_has_no_cycle():
    assert _cycle(_graph()) is None, f"import cycle: {' -> '.join(_cycle(_graph()))}"


def test_nothing_outside_the_command_line_imports_it():
    graph = _graph()
    upward = {
        m
        for m, imports in graph.items()
        if not m.startswith("kdlab.cli") and any(i.startswith("kdlab.cli") for i in imports)
    }
    assert not upward


def test_data_and_models_import_nothing_from_the_rest_of_kdlab():
    graph = _graph()
    for module, imports in graph.items():
        if module.startswith(tuple(LEAVES)):
            outside = {i for i in imports if not i.startswith(LEAF_MAY_IMPORT)}
            assert not outside, f"{module} imports {sorted(outside)}"
