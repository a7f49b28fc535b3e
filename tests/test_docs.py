"""The project's documents are its own: every design reference points into docs/ and resolves.

Comments and docstrings cite ``docs/architecture.md#…``, ``docs/pitfalls.md#…`` or
``docs/settings.md#…`` (or an RFC section). A citation of a document outside the repository, or
of a heading that does not exist (renamed, removed, mistyped), fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# Where citations live: the package, its tests, benchmarks, tools, scripts and the README.
SOURCES = ("mailguard", "tests", "bench", "tools", "scripts", "contrib", "README.md")

# Documents that were never part of the repository. Built from pieces so this file does not
# cite them itself.
FOREIGN = re.compile("|".join([
    r"(?<![\w/])DESIGN" + r"\.md",           # upper case: docs/settings.md is ours
    r"(?<![\w/])SETTINGS" + r"\.md",
    r"(?i:protocol-" + r"pitfalls)",
    r"(?i:pitfalls[\s#*]*" + "§)",          # the old section numbers, even split over two lines
]))
CITATION = re.compile(r"docs/([A-Za-z0-9_.-]+\.md)(?:#([A-Za-z0-9_-]+))?")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _text_files():
    for name in SOURCES:
        path = ROOT / name
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for candidate in candidates:
            if "__pycache__" in candidate.parts or candidate.suffix in {".pyc", ".gz", ".zip", ".7z"}:
                continue
            try:
                yield candidate, candidate.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue


def slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to dashes."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(document: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in document.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        match = re.match(r"#{1,6} (.+)", line)
        if match and not in_code:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def test_slug_matches_github():
    assert slug("The asyncio buffer at a TLS switch") == "the-asyncio-buffer-at-a-tls-switch"
    assert slug("Re-serialising a message") == "re-serialising-a-message"
    assert slug("One sans-I/O machine per protocol") == "one-sans-io-machine-per-protocol"
    assert slug("`scan --json` output") == "scan---json-output"


def test_no_citation_of_documents_outside_the_repository():
    offenders = []
    for path, text in _text_files():
        for number, line in enumerate(text.splitlines(), 1):
            if FOREIGN.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
        # A citation split over two lines ("pitfalls" at the end of one, "§" on the next).
        for match in FOREIGN.finditer(text):
            if "\n" in match.group(0):
                line = text.count("\n", 0, match.start()) + 1
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0)!r}")
    assert not offenders, "cite docs/… or an RFC section instead:\n" + "\n".join(offenders)


def test_every_cited_document_and_heading_exists():
    missing = []
    cited = 0
    for path, text in _text_files():
        for match in CITATION.finditer(text):
            document, anchor = DOCS / match.group(1), match.group(2)
            cited += 1
            where = f"{path.relative_to(ROOT)}: docs/{match.group(1)}" + (f"#{anchor}" if anchor else "")
            if not document.is_file():
                missing.append(where + " (no such document)")
            elif anchor and anchor not in anchors(document):
                missing.append(where + " (no such heading)")
    assert cited > 50, "the code cites docs/ for its design references"
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("document", ["README.md", *sorted(f"docs/{p.name}" for p in DOCS.glob("*.md"))])
def test_links_stay_inside_the_repository_and_resolve(document):
    path = ROOT / document
    broken = []
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if ROOT not in resolved.parents and resolved != ROOT:
            broken.append(f"{target} (outside the repository)")
        elif not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{document}: " + ", ".join(broken)


def test_readme_lists_the_documents():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for document in ("docs/architecture.md", "docs/settings.md", "docs/pitfalls.md"):
        assert f"]({document})" in readme
