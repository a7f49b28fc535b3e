"""Heuristics: executables by magic, double extensions, Office macros; and no noise (names alone give nothing)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailguard.scan.detectors.base import ScanObject
from mailguard.scan.detectors.heuristics import LNK_MAGIC, HeuristicsDetector
from tests.peers import require_clamav_testfiles
from tests.scan.archives import make_ole, make_zip


def pe_file() -> bytes:
    header = bytearray(b"MZ" + bytes(0x3A))
    header += struct.pack("<I", 0x80)
    header += bytes(0x80 - len(header))
    return bytes(header) + b"PE\x00\x00" + bytes(64)


def names(data: bytes, *file_names: str, declared: str = "") -> list[str]:
    return [f.name for f in HeuristicsDetector().scan(ScanObject(data, "2", file_names, declared))]


@pytest.mark.parametrize("data,expected", [
    (pe_file(), "Heuristics.Executable.PE"),
    (b"\x7fELF\x02\x01\x01" + bytes(60), "Heuristics.Executable.ELF"),
    (b"\xcf\xfa\xed\xfe" + bytes(60), "Heuristics.Executable.MachO"),
    (b"\xfe\xed\xfa\xce" + bytes(60), "Heuristics.Executable.MachO"),
    (b"\xca\xfe\xba\xbe\x00\x00\x00\x02" + bytes(60), "Heuristics.Executable.MachO"),  # fat, 2 archs
])
def test_executables_by_magic_whatever_the_name(data, expected):
    assert names(data, "holiday.jpg", declared="image/jpeg") == [expected]


def test_not_executables():
    assert names(b"MZ is how this text starts, and nothing more follows" * 3, "notes.txt") == []
    assert names(b"\xca\xfe\xba\xbe\x00\x00\x00\x34" + bytes(60), "A.class") == []  # Java class, version 52
    assert names(b"MZ" + bytes(100), "old.txt") == []  # MZ without a PE header where e_lfanew points


@pytest.mark.peer
def test_the_clamav_test_exe_is_a_pe():
    folder = require_clamav_testfiles()
    assert "Heuristics.Executable.PE" in names((Path(folder) / "clam.exe").read_bytes())


@pytest.mark.parametrize("name", ["run.js", "RUN.JSE", "invoice.vbs", "setup.ps1", "start.bat", "almost.com",
                                  "screensaver.scr", "info.pif", "evil.js.", "folder/sub/evil.vbe"])
def test_a_name_alone_is_no_heuristic_finding(name):
    # Attachment names are a policy (blocked_types.py), kept apart from what heuristics find.
    assert names(b"harmless bytes", name) == []


def test_lnk_by_header():
    assert names(LNK_MAGIC + bytes(60), "photo.jpg") == ["Heuristics.Script.LNK"]


@pytest.mark.parametrize("name", [
    "invoice.pdf.exe",
    "invoice.PDF.Exe",
    "invoice.pdf                          .exe",
    "scan.jpg.js",
    "invoice\u202efdp.exe",       # shows as "invoiceexe.pdf"
    "report\u202excod.scr",
])
def test_double_extensions(name):
    assert "Heuristics.DoubleExtension" in names(b"x", name)


@pytest.mark.parametrize("name", ["report.pdf", "archive.tar.gz", "v1.2.exe.txt", "photo.2024.jpg",
                                  "eicar.txt", "my.notes.txt", "\u202ereport.pdf"])
def test_no_double_extension(name):
    assert "Heuristics.DoubleExtension" not in names(b"x", name)


def test_plain_pdf_named_report_pdf_is_clean():
    assert names(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n", "report.pdf",
                 declared="application/pdf") == []


def test_ooxml_with_vba_project():
    docm = make_zip({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w/>",
                     "word/vbaProject.bin": make_ole([("VBA", 1), ("dir", 2)])})
    assert names(docm, "report.docm") == ["Heuristics.Office.Macro"]
    docx = make_zip({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w/>"})
    assert names(docx, "report.docx") == []


@pytest.mark.parametrize("entries", [
    [("Macros", 1), ("VBA", 1), ("_VBA_PROJECT", 2), ("dir", 2)],   # Word 97-2003
    [("_VBA_PROJECT_CUR", 1), ("VBA", 1)],                           # Excel 97-2003
])
def test_ole_with_vba_storage(entries):
    assert names(make_ole([("WordDocument", 2)] + entries), "old.doc") == ["Heuristics.Office.Macro"]


def test_ole_without_macros():
    assert names(make_ole([("WordDocument", 2), ("1Table", 2), ("\x05SummaryInformation", 2)]), "old.doc") == []


def test_ole_with_many_directory_sectors():
    entries = [(f"Stream{n}", 2) for n in range(40)] + [("VBA", 1)]
    assert names(make_ole(entries)) == ["Heuristics.Office.Macro"]


def test_damaged_files_give_nothing_and_never_raise():
    ole = make_ole([("VBA", 1)])
    for cut in (8, 100, 520, 600, len(ole) - 1):
        HeuristicsDetector().scan(ScanObject(ole[:cut], "2"))
    assert names(b"PK\x03\x04 not really a zip", "a.docm") == []


@pytest.mark.peer
def test_real_word_documents_from_clamav_testfiles():
    folder = Path(require_clamav_testfiles())
    # clam.ole.doc embeds an OLE object (a packaged exe), not VBA: no macro finding
    assert "Heuristics.Office.Macro" not in names((folder / "clam.ole.doc").read_bytes(), "clam.ole.doc")


# -- the per-object fast paths against the plain reading they replace --

def _reference_scan(data: bytes, file_names: tuple[str, ...]) -> list[str]:
    """HeuristicsDetector.scan as first written: every test on every object, names read twice."""
    from mailguard.scan.detectors import heuristics as h

    def executable_kind(data: bytes) -> str | None:
        if data[:2] == b"MZ" and len(data) >= 0x40:
            (e_lfanew,) = struct.unpack_from("<I", data, 0x3C)
            if data[e_lfanew:e_lfanew + 4] == b"PE\x00\x00":
                return h.PE
        if data[:4] == b"\x7fELF" and data[4:5] in (b"\x01", b"\x02"):
            return h.ELF
        if data[:4] in h._MACHO_MAGICS:
            return h.MACHO
        if data[:4] in h._FAT_MAGICS and len(data) >= 8:
            (count,) = struct.unpack_from(">I", data, 4)
            if 0 < count < h._MAX_FAT_ARCHITECTURES:
                return h.MACHO
        return None

    def extension(name: str) -> str:
        _, dot, suffix = h.windows_name(name).translate(h._BIDI_TABLE).rpartition(".")
        return suffix.strip().lower() if dot else ""

    def is_double_extension(name: str) -> bool:
        visible = h.windows_name(name)
        if extension(name) not in h.DANGEROUS_EXTENSIONS:
            return False
        if any(c in h.BIDI_CONTROLS for c in visible):
            return True
        parts = [part.strip().lower() for part in visible.split(".")]
        return len(parts) >= 3 and parts[-2] in h.DECOY_EXTENSIONS

    found: set[str] = set()
    if kind := executable_kind(data):
        found.add(kind)
    if data.startswith(LNK_MAGIC):
        found.add("Heuristics.Script.LNK")
    for file_name in file_names:
        if is_double_extension(file_name):
            found.add(h.DOUBLE_EXTENSION)
    if h.has_office_macros(data):
        found.add(h.OFFICE_MACRO)
    return sorted(found)


_HEADS = [b"", b"MZ", pe_file(), b"\x7fELF\x01", b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe\x00\x00\x00\x02",
          b"\xca\xfe\xba\xbe\x00\x00\x00\x34", LNK_MAGIC, b"PK\x03\x04", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"]
_NAME_PARTS = ["invoice", ".", "pdf", "exe", "js", "JS", " ", "\u202e", "\u202a", "txt", "\\", "/", "\x00",
               "é", "scr", "docx", "..", "lnk"]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(_HEADS), st.binary(max_size=80),
       st.lists(st.lists(st.sampled_from(_NAME_PARTS), max_size=7).map("".join) | st.text(max_size=12), max_size=3))
def test_fast_paths_find_what_every_test_finds(head, tail, file_names):
    data = head + tail
    assert names(data, *file_names) == _reference_scan(data, tuple(file_names))
