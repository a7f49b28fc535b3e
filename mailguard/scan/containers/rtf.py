"""RTF embedded objects (``{\\object ... {\\*\\objdata HEX}}``): the payload of many a
malicious .rtf, and what Word lets a user double-click.

Each ``\\objdata`` group holds the hex of an OLE1 object ([MS-OLEDS] 2.2.4 ObjectHeader):
version (4), format (4), then the class, topic and item names as length-prefixed strings,
then the native data, length-prefixed. We emit the decoded object, and its native data
as a child of it: for class ``Package`` the native data is an OLE Package (unwrapped to
the file it carries, as in ``ole2``), for others it is often an OLE2 file, which the
engine expands again by its magic.

Word's reader is lenient, and exploit kits lean on it: control words, spaces and line
breaks inside the hex are ignored, so we ignore them too and keep only hex digits, never
stopping at the first odd character. Any RTF-like file is looked at, since Word opens a
file that merely starts with ``{\\rt``.
"""

from __future__ import annotations

import re
import struct

from mailguard.scan.containers import bounded
from mailguard.scan.containers.ole2 import ole10_native
from mailguard.scan.limits import Budget, ScanIncomplete
from mailguard.scan.verdict import Reason

MAGIC = b"{\\rt"
_OBJDATA = re.compile(rb"\\objdata\b")
_CONTROL_WORD = re.compile(rb"\\[A-Za-z]+-?\d* ?|\\[^A-Za-z]")
_NOT_HEX = re.compile(rb"[^0-9A-Fa-f]+")
_BRACE_OR_ESCAPE = re.compile(rb"\\.|[{}]", re.DOTALL)  # an escaped brace (\{) is text, not a group
_OLE1_FORMAT_EMBEDDED = 2
_MAX_CLASS_NAME = 256


def recognise(data: bytes) -> bool:
    return data[:4] == MAGIC


def unpack(members: bounded.Members, data: bytes, budget: Budget) -> None:
    cap = bounded.member_cap(budget)
    for number, match in enumerate(_OBJDATA.finditer(data), 1):
        members.count()
        group = _group_rest(data, match.end())
        hexdigits = _NOT_HEX.sub(b"", _CONTROL_WORD.sub(b"", group))
        obj = bytes.fromhex(hexdigits[:len(hexdigits) // 2 * 2].decode("ascii"))
        name = f"object-{number}"
        if len(obj) > cap:
            raise ScanIncomplete(Reason.LIMIT, f"RTF object {number} is larger than {cap} bytes")
        budget.charge(len(obj))
        members.add(name, obj)
        native = ole1_native(obj)
        if native is None:
            continue
        class_name, payload = native
        package = ole10_native(struct.pack("<I", len(payload)) + payload) if class_name == "Package" else None
        if package is not None:
            label, content = package
            members.add(f"{name}/{label or 'package'}", content)
        else:
            members.add(f"{name}/{class_name or 'native'}", payload)


def _group_rest(data: bytes, start: int) -> bytes:
    """The rest of the group that ``\\objdata`` opens, up to its closing brace (or the end)."""
    depth = 0
    for token in _BRACE_OR_ESCAPE.finditer(data, start):
        brace = token.group()
        if brace == b"{":
            depth += 1
        elif brace == b"}":
            if depth == 0:
                return data[start:token.start()]
            depth -= 1
    return data[start:]


def ole1_native(obj: bytes) -> tuple[str, bytes] | None:
    """([MS-OLEDS] 2.2.4) the class name and native data of an embedded OLE1 object, or None."""
    try:
        _version, format_id = struct.unpack_from("<II", obj, 0)
        if format_id != _OLE1_FORMAT_EMBEDDED:
            return None
        pos = 8
        names = []
        for _ in range(3):  # class, topic, item
            (length,) = struct.unpack_from("<I", obj, pos)
            if length > _MAX_CLASS_NAME:
                return None
            names.append(obj[pos + 4:pos + 4 + length].split(b"\x00", 1)[0].decode("cp1252", "replace"))
            pos += 4 + length
        (size,) = struct.unpack_from("<I", obj, pos)
    except struct.error:
        return None
    payload = obj[pos + 4:pos + 4 + size]
    return (names[0], payload) if len(payload) == size else None
