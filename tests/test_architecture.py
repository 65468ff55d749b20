"""medgen's import arrows point one way: no package or module of medgen imports one that imports it back."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

MEDGEN = Path(__file__).resolve().parents[1] / "medgen"


def _unit(module: str) -> str:
    # a unit is a top-level module (medgen.config) or a sub-package (medgen.training)
    return ".".join(module.split(".")[:2])


def _import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in MEDGEN.rglob("*.py"):
        module = ".".join(path.relative_to(MEDGEN.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in targets:
                if target.startswith("medgen.") and _unit(target) != _unit(module):
                    graph[_unit(module)].add(_unit(target))
    return graph


def _cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    stack = [(start, [start])]
    seen = set()
    while stack:
        node, path = stack.pop()
        for nxt in graph.get(node, ()):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_no_import_cycles_between_medgen_units():
    graph = _import_graph()
    assert "medgen.commands" in graph and "medgen.training" in graph  # the graph was really read
    cycles = [cycle for unit in sorted(graph) if (cycle := _cycle_through(graph, unit))]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_layers_below_the_commands_never_import_them():
    graph = _import_graph()
    for lower in ("medgen.files", "medgen.data", "medgen.config", "medgen.pipelines", "medgen.training", "medgen.evaluation", "medgen.downstream"):
        assert "medgen.commands" not in graph.get(lower, set()), f"{lower} imports medgen.commands"
        assert "medgen.cli" not in graph.get(lower, set()), f"{lower} imports medgen.cli"
