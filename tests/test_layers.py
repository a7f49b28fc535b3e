"""The layers of docs/architecture.md#layers: arrows point down only.

Each package may import only the packages below it (and the small shared modules), so
protocols and scan stay pure and testable with plain bytes. Checked on the source, so an
import hidden inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mailguard"
SHARED = {"mailguard", "mailguard.errors", "mailguard.files", "mailguard.processes"}  # small shared modules anyone may use

# package -> the packages of ours it may import (besides itself and SHARED)
ALLOWED = {
    "cli": {"service", "proxy", "scanpool", "transparent", "protocols", "scan", "tls", "settings", "mailbox", "quarantine", "demo"},
    "demo": {"proxy", "scanpool", "transparent", "protocols", "scan", "tls", "settings", "quarantine", "cli"},
    "service": {"proxy", "scanpool", "transparent", "protocols", "scan", "tls", "settings", "quarantine"},
    "proxy": {"scanpool", "transparent", "protocols", "scan", "tls", "settings", "quarantine"},
    "scanpool": {"scan", "settings", "quarantine"},
    "transparent": {"settings"},
    "mailbox": {"scan", "settings", "quarantine"},
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
