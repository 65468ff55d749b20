"""medgen's import arrows point one way: no package or module of medgen imports one that imports it back.

Imports inside functions count too: a circle of lazy imports still ties the modules into one unit that can
only be understood, tested and changed together."""

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


def _modules() -> dict[str, Path]:
    return {
        ".".join(path.relative_to(MEDGEN.parent).with_suffix("").parts).removesuffix(".__init__"): path
        for path in MEDGEN.rglob("*.py")
    }


def _imported_modules(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The medgen modules `module` imports anywhere in its file (`from medgen.pipelines import hub` imports the
    module `medgen.pipelines.hub`; `from medgen.pipelines import load_pipeline` the package's `__init__`)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parent, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        for target in targets:
            while target not in modules and "." in target:  # `import medgen.pipelines.hub.x` -> the module it names
                target = target.rpartition(".")[0]
            if target in modules and target != module:
                found.add(target)
    return found


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that reach each other (Tarjan's algorithm, iterative), each larger than one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
    return groups


def test_no_import_cycles_between_medgen_modules():
    modules = _modules()
    graph = {module: _imported_modules(module, path, modules) for module, path in modules.items()}
    assert "medgen.pipelines.publishing" in graph["medgen.pipelines.hub"]  # lazy imports were read
    cycles = _strongly_connected(graph)
    assert not cycles, "modules importing each other (directly or in a circle): " + "; ".join(
        " <-> ".join(group) for group in cycles
    )


def test_the_cycle_finder_finds_a_circle_of_three_and_ignores_a_chain():
    assert _strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _strongly_connected({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_layers_below_the_commands_never_import_them():
    graph = _import_graph()
    for lower in ("medgen.files", "medgen.data", "medgen.config", "medgen.pipelines", "medgen.training", "medgen.evaluation", "medgen.downstream"):
        assert "medgen.commands" not in graph.get(lower, set()), f"{lower} imports medgen.commands"
        assert "medgen.cli" not in graph.get(lower, set()), f"{lower} imports medgen.cli"
