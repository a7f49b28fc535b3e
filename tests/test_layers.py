"""The layers of docs/architecture.md#layers: arrows point down only, and no module imports
itself round a circle.

Each package may import only the packages below it (and the small shared modules), so
protocols and scan stay pure and testable with plain bytes. Checked on the source, so an
import hidden inside a function or under ``if TYPE_CHECKING:`` counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mailguard"
# small shared modules anyone may use
SHARED = {"mailguard", "mailguard.errors", "mailguard.files", "mailguard.processes"}

# package -> the packages of ours it may import (besides itself and SHARED)
ALLOWED = {
    "cli": {"service", "proxy", "scanpool", "transparent", "protocols", "scan", "tls", "settings", "mailbox",
            "quarantine", "demo"},
    "demo": {"proxy", "scanpool", "transparent", "protocols", "scan", "tls", "settings", "quarantine", "cli"},
    "service": {"proxy", "scanpool", "transparent", "protocols", "scan", "tls", "settings", "quarantine"},
    "proxy": {"scanpool", "transparent", "protocols", "scan", "tls", "settings", "quarantine"},
    "scanpool": {"scan", "settings", "quarantine"},
    "transparent": {"settings"},
    "mailbox": {"scanpool", "scan", "settings", "quarantine"},
    "quarantine": {"scan"},
    "protocols": set(),
    "scan": {"settings"},
    "tls": {"settings"},
    "settings": set(),
}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "mailguard" else None


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name.startswith("mailguard")}


def _sources():
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if len(relative.parts) > 1 or relative.stem not in {"__init__", "__main__", "errors", "files", "processes"}:
            yield path


@pytest.mark.parametrize("path", list(_sources()), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    relative = path.relative_to(PACKAGE)
    own = relative.parts[0] if len(relative.parts) > 1 else relative.stem
    allowed = ALLOWED[own] | {own}
    wrong = sorted(name for name in _imports(path) if name not in SHARED and _layer(name) not in allowed)
    assert not wrong, f"{relative} imports {wrong}, which sit above or beside its layer ({own})"


# --- import circles ------------------------------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """module -> the modules of ours it imports, read from the source: every import statement,
    at the top, inside functions and under ``if TYPE_CHECKING:``. ``from package import name``
    is an import of the submodule when ``name`` is one, else of the package itself (whose
    ``__init__`` defines the name)."""
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:
                    found.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in paths else source)
        graph[name] = {module for module in found if module in paths}
    return graph


def _groups(graph: dict[str, set[str]]) -> list[set[str]]:
    """The groups of modules that import each other, directly or round a circle (strongly
    connected components, Tarjan's algorithm; a module that imports itself is a group too)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph[module]):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == module:
                    break
            if len(group) > 1 or module in graph[module]:
                groups.append(group)

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return groups


def _one_circle(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest way from the group's first module back to itself, inside the group."""
    start = min(group)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for imported in sorted(graph[module] & group):
                if imported == start:
                    path = [module]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if imported not in came_from:
                    came_from[imported] = module
                    following.append(imported)
        frontier = following
    raise AssertionError(f"no circle in {sorted(group)}")


def test_no_import_circles():
    graph = _import_graph()
    circles = [_one_circle(graph, group) for group in _groups(graph)]
    assert not circles, "modules that import each other in a circle:\n" + "\n".join(
        " -> ".join(circle) for circle in circles)


def test_the_cycle_check_sees_every_kind_of_import():
    """The check itself: it finds circles, and it reads an import inside a function, one under
    TYPE_CHECKING and a submodule named in ``from package import``."""
    graph = {"a": {"b"}, "b": {"c", "e"}, "c": {"a"}, "d": {"d"}, "e": set()}
    assert sorted(map(sorted, _groups(graph))) == [["a", "b", "c"], ["d"]]
    assert _one_circle(graph, {"a", "b", "c"}) == ["a", "b", "c", "a"]
    imports = _import_graph()
    assert "mailguard.scan.detectors.build" in imports["mailguard.scan.engine"]  # inside a function
    assert "mailguard.protocols.pop3_core" in imports["mailguard.protocols.pop3_stls"]  # TYPE_CHECKING
    assert "mailguard.scan.containers.bounded" in imports["mailguard.scan.containers.pkzip"]  # from pkg import mod
