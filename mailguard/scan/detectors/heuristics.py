"""Heuristics (``threatsense.options.heuristics``): what mail should not carry, by form.

- Executable content by magic bytes, whatever the part claims to be: PE (``MZ`` and a
  ``PE\\0\\0`` header where ``e_lfanew`` points), ELF, Mach-O (thin and fat).
- Shortcut (.lnk) files by their header, whatever their name.
- Double extensions: a harmless-looking extension followed by a dangerous one
  (``invoice.pdf.exe``, also ``invoice.pdf      .exe``), and names that use Unicode
  bidirectional controls to show a different extension than the real one
  (``invoice<RLO>fdp.exe`` displays as ``invoiceexe.pdf``).
- Office files with macros: OOXML whose zip holds ``vbaProject.bin``; OLE2 documents
  with a ``VBA`` storage or ``_VBA_PROJECT`` stream ([MS-OVBA] 2.2).

Names are read as Windows opens them (docs/pitfalls.md#hidden-file-names): it runs ``evil.js.`` and ``evil.js ``
as ``.js`` (it drops trailing dots and spaces), so names are normalised that way before the
extension is read. An attachment merely *named* like a program (``almost.com``) is no
finding here: blocking such names is a policy (blocked_types.py), not a detection.

A plain PDF named report.pdf, or a text file named eicar.txt, gives nothing.
"""

from __future__ import annotations

import io
import struct
import zipfile

from mailguard.scan.containers import cfb
from mailguard.scan.detectors.base import ScanObject
from mailguard.scan.verdict import Finding

SCRIPT_EXTENSIONS = frozenset({
    "js", "jse", "vbs", "vbe", "vb", "wsf", "wsc", "wsh", "ws", "ps1", "ps1xml", "ps2", "psc1", "psm1",
    "hta", "lnk", "bat", "cmd", "jar", "msh", "scf", "sct", "reg", "inf", "url", "application", "gadget",
    "msc", "vbscript", "appref-ms", "settingcontent-ms",
})
EXECUTABLE_EXTENSIONS = frozenset({"exe", "scr", "pif", "com", "cpl", "dll", "msi", "msp", "mst", "sys", "ocx"})
DANGEROUS_EXTENSIONS = SCRIPT_EXTENSIONS | EXECUTABLE_EXTENSIONS
# Extensions people trust, which a double-extension name shows to hide the real one.
DECOY_EXTENSIONS = frozenset({
    "pdf", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "rtf", "txt", "csv", "odt", "ods", "odp",
    "jpg", "jpeg", "png", "gif", "bmp", "tif", "tiff", "svg", "mp3", "mp4", "wav", "avi", "mov",
    "htm", "html", "xml", "zip", "rar", "7z", "eml", "msg", "ics",
})
# Unicode bidirectional controls (RLO and friends) that reorder how a name is displayed.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
_BIDI_TABLE = {ord(c): None for c in BIDI_CONTROLS}

# [MS-SHLLINK] 2.1: HeaderSize 0x4C and LinkCLSID 00021401-0000-0000-C000-000000000046.
LNK_MAGIC = b"\x4c\x00\x00\x00\x01\x14\x02\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00\x46"
_ELF_MAGIC = b"\x7fELF"
_MACHO_MAGICS = (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe")
_FAT_MAGICS = (b"\xca\xfe\xba\xbe", b"\xca\xfe\xba\xbf")
# Java class files share the fat Mach-O magic; their next word is a version (>= 45), a fat
# binary's is its number of architectures (file(1) uses the same cut-off).
_MAX_FAT_ARCHITECTURES = 20
_OLE_MACRO_NAMES = frozenset({"vba", "_vba_project", "_vba_project_cur", "macros"})
# First bytes of the formats above (MZ, ELF, Mach-O thin and fat; OLE2 and zip): every object
# of every message is asked, so one look-up at its first byte answers for most.
_EXECUTABLE_FIRST_BYTES = frozenset(b"M\x7f\xfe\xce\xcf\xca")
_OFFICE_FIRST_BYTES = frozenset((cfb.MAGIC[0], ord("P")))
# Every first byte the content checks of ``HeuristicsDetector.scan`` can match on.
_ANY_FIRST_BYTES = _EXECUTABLE_FIRST_BYTES | _OFFICE_FIRST_BYTES | {LNK_MAGIC[0]}

PE = "Heuristics.Executable.PE"
ELF = "Heuristics.Executable.ELF"
MACHO = "Heuristics.Executable.MachO"
DOUBLE_EXTENSION = "Heuristics.DoubleExtension"
OFFICE_MACRO = "Heuristics.Office.Macro"


def executable_kind(data: bytes) -> str | None:
    """The detection name for executable content, or None."""
    if not data or data[0] not in _EXECUTABLE_FIRST_BYTES:
        return None
    if data[:2] == b"MZ" and len(data) >= 0x40:
        (e_lfanew,) = struct.unpack_from("<I", data, 0x3C)
        if data[e_lfanew:e_lfanew + 4] == b"PE\x00\x00":
            return PE
    if data[:4] == _ELF_MAGIC and data[4:5] in (b"\x01", b"\x02"):
        return ELF
    if data[:4] in _MACHO_MAGICS:
        return MACHO
    if data[:4] in _FAT_MAGICS and len(data) >= 8:
        (count,) = struct.unpack_from(">I", data, 4)
        if 0 < count < _MAX_FAT_ARCHITECTURES:
            return MACHO
    return None


def windows_name(name: str) -> str:
    """The name as Windows would open it: last path part, no NUL tail, no trailing dots or spaces."""
    name = name.split("\x00", 1)[0].replace("\\", "/").rsplit("/", 1)[-1]
    return name.rstrip(". \t")


def extension(name: str) -> str:
    return _extension(windows_name(name))


def _extension(visible: str) -> str:
    """``extension`` of a name already through ``windows_name``."""
    # An ASCII name has no bidi controls to drop (str.translate costs about 1 us a name).
    _, dot, suffix = (visible if visible.isascii() else visible.translate(_BIDI_TABLE)).rpartition(".")
    return suffix.strip().lower() if dot else ""  # ".js" alone is a script to Windows too


def is_double_extension(name: str) -> bool:
    visible = windows_name(name)
    return _is_double_extension(visible, _extension(visible))


def _is_double_extension(visible: str, real: str) -> bool:
    if real not in DANGEROUS_EXTENSIONS:
        return False
    if any(c in BIDI_CONTROLS for c in visible):
        return True  # the displayed extension is not the one that runs
    parts = [part.strip().lower() for part in visible.split(".")]
    return len(parts) >= 3 and parts[-2] in DECOY_EXTENSIONS


def has_office_macros(data: bytes) -> bool:
    if not data or data[0] not in _OFFICE_FIRST_BYTES:
        return False
    if cfb.is_compound_file(data):
        try:
            names = cfb.CompoundFile(data).names()
        except (cfb.CompoundFileError, struct.error):
            return False  # unreadable: the OLE2 container reader reports it as corrupt
        return any(name.lower() in _OLE_MACRO_NAMES for name in names)
    if data[:4] == b"PK\x03\x04":
        return any(name.lower().rsplit("/", 1)[-1] == "vbaproject.bin" for name in _zip_names(data))
    return False


def _zip_names(data: bytes) -> list[str]:
    from mailguard.scan.containers import pkzip
    from mailguard.scan.limits import ScanIncomplete

    try:
        pkzip.check_central_directory_size(data)
        return zipfile.ZipFile(io.BytesIO(data)).namelist()
    except (ScanIncomplete, *pkzip.ZIPFILE_ERRORS):
        return []  # an unreadable zip is the container reader's business (it reports it as corrupt)


class HeuristicsDetector:
    name = "heuristics"

    def scan(self, obj: ScanObject) -> list[Finding]:
        data = obj.data
        if not obj.names and (not data or data[0] not in _ANY_FIRST_BYTES):
            return []  # no name to judge, and no magic any check below could match (most parts)
        names: set[str] = set()
        kind = executable_kind(data)
        if kind:
            names.add(kind)
        if data.startswith(LNK_MAGIC):
            names.add("Heuristics.Script.LNK")
        for file_name in obj.names:
            visible = windows_name(file_name)
            if _is_double_extension(visible, _extension(visible)):
                names.add(DOUBLE_EXTENSION)
        if has_office_macros(data):
            names.add(OFFICE_MACRO)
        return [Finding(name, self.name, obj.path) for name in sorted(names)]

    def close(self) -> None:
        pass
