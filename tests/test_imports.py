"""cluster/ and runtime/ import one way: no module imports, directly or through others, a module that
imports it back; and runtime/ (the worker) never imports cluster/ (the master and daemon).

Every import counts, those under TYPE_CHECKING and inside functions too: a cycle hidden from the
interpreter still ties the modules together for whoever reads or changes them.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cluster", "runtime")


def module_name(path: Path) -> str:
    parts = ("prun", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, known: set[str]) -> set[str]:
    """The prun.cluster and prun.runtime modules `path` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                found.add(target if target in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in known}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    known = set(files)
    graph = {name: imports(path, known) for name, path in files.items()}
    for name, targets in graph.items():
        # A package's __init__ is imported by each of its modules: that edge is the package, not a cycle.
        targets.discard(name)
        package = name.rpartition(".")[0]
        targets.discard(package)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_the_http_package() -> None:
    graph = import_graph()
    assert "prun.runtime.http.settings" in graph["prun.runtime.http.protocol"]
    assert "prun.runtime.http.exchange" in graph["prun.runtime.http.protocol"]


def test_no_import_cycle_in_cluster_or_runtime() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_graph_sees_the_master() -> None:
    graph = import_graph()
    assert "prun.cluster.rollout" in graph["prun.cluster.master"]
    assert "prun.runtime.channel" in graph["prun.cluster.master"]


def test_runtime_never_imports_cluster() -> None:
    for name, targets in import_graph().items():
        if name.startswith("prun.runtime"):
            assert not {t for t in targets if t.startswith("prun.cluster")}, name


def test_http_settings_is_a_leaf_of_the_http_package() -> None:
    graph = import_graph()
    inside = {name for name in graph["prun.runtime.http.settings"] if name.startswith("prun.runtime.http.")}
    assert inside <= {"prun.runtime.http.logs", "prun.runtime.http.proxy"}
    for leaf in ("logs", "proxy"):
        assert not {n for n in graph[f"prun.runtime.http.{leaf}"] if n.startswith("prun.runtime.http.")}
