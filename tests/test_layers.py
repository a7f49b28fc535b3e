"""The layers of docs/architecture.md#layers: arrows point down only, and no module imports
itself round a circle.

Each package may import only the packages below it (and the small shared modules), so
protocols and scan stay pure and testable with plain bytes. Checked on the source, so an
import hidden inside a function or under ``if TYPE_CHECKING:`` counts too.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mailguard"
# small shared modules anyone may use
SHARED = {"mailguard", "mailguard.errors", "mailguard.files", "mailguard.processes"}

# package -> the packages of ours it may import (besides itself and SHARED)
ALLOWED = {
    "cli": {"service", "proxy", "scanpool", "transparent", "protocols", "scan", "tls", "settings", "mailbox",
            "quarantine", "demo"},
    "demo": {"proxy", "scanpool", "transparent", "protocols", "scan", "tls", "settings", "quarantine"},
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
    return _import_graph()[_module_name(path)]


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


@functools.cache
def _import_graph() -> dict[str, set[str]]:
    """module -> the modules of ours it imports, read from the source: every import statement,
    at the top, inside functions and under ``if TYPE_CHECKING:``. ``from package import name``
    is an import of the submodule when ``name`` is one, else of the package itself (whose
    ``__init__`` defines the name). Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__``
    first, so it imports those packages too. A relative import is read from where it stands."""
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: _imported(name, path.read_text(), path.name == "__init__.py", set(paths))
            for name, path in paths.items()}


def _imported(name: str, source: str, is_package: bool, modules: set[str]) -> set[str]:
    """The modules among ``modules`` that the code ``source`` of module ``name`` imports."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            for alias in node.names:
                found.add(f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin)
    # a.b.c imports a.b and a as well: their __init__ runs first. Not so the packages that
    # hold ``name`` itself (or are it): they have run, or are running, before ``name`` does.
    parts = name.split(".")
    own = {".".join(parts[:end]) for end in range(1, len(parts) + is_package)}
    for module in list(found):
        parts = module.split(".")
        found.update(".".join(parts[:end]) for end in range(1, len(parts)) if ".".join(parts[:end]) not in own)
    return found & modules


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
    TYPE_CHECKING, a submodule named in ``from package import``, the packages an import runs
    first and relative imports."""
    graph = {"a": {"b"}, "b": {"c", "e"}, "c": {"a"}, "d": {"d"}, "e": set()}
    assert sorted(map(sorted, _groups(graph))) == [["a", "b", "c"], ["d"]]
    assert _one_circle(graph, {"a", "b", "c"}) == ["a", "b", "c", "a"]
    imports = _import_graph()
    assert "mailguard.scan.detectors.build" in imports["mailguard.scan.engine"]  # inside a function
    assert "mailguard.protocols.pop3_core" in imports["mailguard.protocols.pop3_stls"]  # TYPE_CHECKING
    assert "mailguard.scan.containers.bounded" in imports["mailguard.scan.containers.pkzip"]  # from pkg import mod
    modules = {"a", "a.b", "a.b.c", "a.b.d", "a.e", "f", "f.g"}
    # import a.b.c runs a/b/__init__ (and a's) first; so does from a.b import c
    assert _imported("f.g", "import a.b.c", False, modules) == {"a", "a.b", "a.b.c"}
    assert _imported("f.g", "from a.b import c", False, modules) == {"a", "a.b", "a.b.c"}
    # but not the packages that hold the importer: they ran before it
    assert _imported("a.b.d", "import a.b.c", False, modules) == {"a.b.c"}
    # relative imports, read from where they stand (a module, then a package's __init__)
    assert _imported("a.b.d", "from . import c", False, modules) == {"a.b.c"}
    assert _imported("a.b.d", "from ..e import x", False, modules) == {"a.e"}
    assert _imported("a.b", "from .c import x", True, modules) == {"a.b.c"}
    assert _imported("a.b", "from .. import e", True, modules) == {"a.e"}
    # and the circle these make is found
    assert _groups({"a.b": {"a.b.c"}, "a.b.c": set(), "f.g": {"a.b"}, "a.b.d": {"f.g"}}) == []
    graph = {name: _imported(name, source, name == "a.b", modules) for name, source in {
        "a": "", "a.b": "from . import d", "a.b.c": "", "a.b.d": "import f.g", "a.e": "", "f": "",
        "f.g": "from a.b import c"}.items()}
    assert sorted(map(sorted, _groups(graph))) == [["a.b", "a.b.d", "f.g"]]
