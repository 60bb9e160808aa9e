"""The import graph of the shipped code has no cycle, and its layers point one way:
the core (`bizzyd`) imports no module and no process role, modules use the module API
only, and the cache processes may use modules but not the other way round.

Every import counts: at the top, inside functions and under `TYPE_CHECKING` (a type a
module needs is a dependency too).  Importing `a.b.c` also runs the packages `a` and
`a.b`, so those are edges as well, except a module's own ancestors (a package may
import its submodules, and they may import their siblings).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TREES = ("bizzyd", "modules", "cache_loader")
# What a module may import of the core: the module API and the parts it names.
MODULE_API = ("bizzyd.module", "bizzyd.config", "bizzyd.config.schema",
              "bizzyd.config.types", "bizzyd.http.response", "bizzyd.http.phases",
              "bizzyd.shm", "bizzyd.bus", "bizzyd.stats", "bizzyd")


def module_files() -> dict[str, Path]:
    found = {}
    for tree in TREES:
        for path in (ROOT / tree).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imported_names(name: str, path: Path) -> Iterator[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            origin = node.module if not node.level else \
                ".".join(p for p in (base, node.module) if p)
            yield origin
            yield from (f"{origin}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        ancestors = {name.rsplit(".", n)[0] for n in range(1, name.count(".") + 1)}
        edges = set()
        for target in imported_names(name, path):
            if target not in files:
                continue
            parts = target.split(".")
            edges.update(".".join(parts[:n]) for n in range(1, len(parts) + 1))
        graph[name] = {e for e in edges if e in files and e != name and e not in ancestors}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_import_graph_has_no_cycle():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_type_only_and_function_level_imports_are_edges():
    graph = import_graph()
    assert "bizzyd.config.load" in graph["bizzyd.http.engine"]  # under TYPE_CHECKING
    assert "bizzyd.http.engine" in graph["bizzyd.http.protocol"]


def test_the_core_imports_no_module_and_no_process_role():
    wrong = [(a, b) for a, edges in import_graph().items() if a.startswith("bizzyd")
             for b in edges if not b.startswith("bizzyd")]
    assert wrong == []


def test_modules_use_only_the_module_api():
    wrong = [(a, b) for a, edges in import_graph().items() if a.startswith("modules.")
             for b in edges if b.startswith("bizzyd") and b not in MODULE_API]
    assert wrong == []


def test_modules_do_not_import_the_cache_processes():
    wrong = [(a, b) for a, edges in import_graph().items() if a.startswith("modules")
             for b in edges if b.startswith("cache_loader")]
    assert wrong == []
