"""Archives inside Windows executables: self-extracting zips, 7z, cabinets and MSI packages.

A self-extractor is a PE program with an archive appended (or in a resource); Windows
runs it with a double-click, so what it would unpack must be scanned. zipfile already
opens a zip with a program in front of it (it finds the end record from the back and
corrects the offsets). For the others we look for their magic after the PE headers and
keep only candidates whose own structure checks out (a cabinet whose header sizes agree,
a 7z whose start header CRC matches, a compound file whose directory reads), so that a
program that merely contains those bytes, as archivers do, is not reported as a broken
archive. Each found archive becomes a child, ``embedded-OFFSET.KIND``, which the engine
then expands like any other.
"""

from __future__ import annotations

import struct
import zlib

from mailguard.scan.containers import bounded, cfb, pkzip
from mailguard.scan.limits import Budget, ScanIncomplete
from mailguard.scan.verdict import Reason

_CAB = b"MSCF\x00\x00\x00\x00"
_SEVEN_ZIP = b"7z\xbc\xaf\x27\x1c"
# Candidates of one kind tried per program: real self-extractors have one archive.
_MAX_CANDIDATES = 16


def recognise(data: bytes) -> bool:
    if data[:2] != b"MZ" or len(data) < 0x40:
        return False
    (e_lfanew,) = struct.unpack_from("<I", data, 0x3C)
    return data[e_lfanew:e_lfanew + 4] == b"PE\x00\x00"


def unpack(members: bounded.Members, data: bytes, budget: Budget) -> None:
    if b"PK\x05\x06" in data[-65_557:]:
        _quietly(lambda: pkzip.unpack(members, data, budget))
    start = struct.unpack_from("<I", data, 0x3C)[0] + 4
    for magic, kind, archive_end in ((_CAB, "cab", _cab_end), (_SEVEN_ZIP, "7z", _seven_zip_end),
                                     (cfb.MAGIC, "ole2", _compound_file_end)):
        position, tried = data.find(magic, start), 0
        while position >= 0 and tried < _MAX_CANDIDATES:
            tried += 1
            end = archive_end(data, position)
            if end is not None:
                members.count()
                members.add(f"embedded-{position}.{kind}", data[position:end], names=())
            position = data.find(magic, position + 1)


def _quietly(unpack_zip) -> None:  # noqa: ANN001 - a closure over members, data and budget
    """A zip that does not open is just bytes in a program, not a damaged archive."""
    try:
        unpack_zip()
    except ScanIncomplete as exc:
        if exc.reason in (Reason.LIMIT, Reason.TIMEOUT):
            raise


def _cab_end(data: bytes, position: int) -> int | None:
    """[MS-CAB] 2.1: cbCabinet covers the whole file; coffFiles lies inside it; version 1.3."""
    if position + 36 > len(data):
        return None
    size, _, files_offset = struct.unpack_from("<III", data, position + 8)
    minor, major, folders = data[position + 24], data[position + 25], struct.unpack_from("<H", data, position + 26)[0]
    if (major, minor) != (1, 3) or folders == 0 or not 36 <= files_offset < size <= len(data) - position:
        return None
    return position + size


def _seven_zip_end(data: bytes, position: int) -> int | None:
    """The 7z start header's CRC (over the 20 bytes after it) must match."""
    header = data[position:position + 32]
    if len(header) < 32 or zlib.crc32(header[12:32]) != struct.unpack_from("<I", header, 8)[0]:
        return None
    next_offset, next_size = struct.unpack_from("<QQ", header, 12)
    end = position + 32 + next_offset + next_size
    return end if end <= len(data) else None


def _compound_file_end(data: bytes, position: int) -> int | None:
    try:
        cfb.CompoundFile(data[position:])
    except (cfb.CompoundFileError, struct.error):
        return None
    return len(data)
