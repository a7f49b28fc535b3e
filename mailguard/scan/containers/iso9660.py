"""ISO 9660 disk images (.iso): a favourite wrapper for malware in mail, because Windows
mounts one with a double-click and its files do not inherit the "downloaded from the
internet" mark.

ECMA-119: 2048-byte sectors; volume descriptors from sector 16 on, the primary one
("CD001", type 1) holding the root directory record; a directory is an extent of
variable-length records (§9.1), each naming a file or directory by its extent and length.
Files are stored uncompressed. When a Joliet supplementary descriptor (type 2 with a UCS-2
escape sequence) is present its tree is used, for the long names Windows shows. Hidden
files (flag bit 0) are unpacked like the others: hiding is the point of the trick.
Directory extents are followed once each (a loop in the tree stops there).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from mailguard.scan.containers import bounded
from mailguard.scan.limits import Budget, ScanIncomplete
from mailguard.scan.verdict import Reason

_SECTOR = 2048
_DESCRIPTORS_START = 16 * _SECTOR
_MAX_DESCRIPTORS = 32
_JOLIET_ESCAPES = (b"%/@", b"%/C", b"%/E")
_DIRECTORY_FLAG = 0x02
_MAX_DEPTH = 32


class _Record(NamedTuple):
    name: str
    extent: int
    size: int
    is_directory: bool


def recognise(data: bytes) -> bool:
    return data[_DESCRIPTORS_START + 1:_DESCRIPTORS_START + 6] == b"CD001"


def unpack(members: bounded.Members, data: bytes, budget: Budget) -> None:
    root, joliet = _root_record(data)
    if root is None:
        raise ScanIncomplete(Reason.CORRUPT, "ISO image without a primary volume descriptor")
    cap = bounded.member_cap(budget)
    visited: set[int] = set()
    pending: list[tuple[_Record, str, int]] = [(root, "", 0)]
    while pending:
        directory, prefix, depth = pending.pop()
        if directory.extent in visited or depth > _MAX_DEPTH:
            continue
        visited.add(directory.extent)
        for record in _records(data, directory, joliet):
            members.count()
            path = prefix + record.name
            if record.is_directory:
                pending.append((record, path + "/", depth + 1))
                continue
            members.unpack(path, lambda r=record: _file(data, r, cap, budget))


def _root_record(data: bytes) -> tuple[_Record | None, bool]:
    primary = joliet = None
    for index in range(_MAX_DESCRIPTORS):
        offset = _DESCRIPTORS_START + index * _SECTOR
        kind, ident = data[offset:offset + 1], data[offset + 1:offset + 6]
        if ident != b"CD001" or kind == b"\xff":
            break
        if kind == b"\x01" and primary is None:
            primary = offset
        elif kind == b"\x02" and data[offset + 88:offset + 91] in _JOLIET_ESCAPES:
            joliet = offset
    chosen = joliet if joliet is not None else primary
    if chosen is None:
        return None, False
    record = _record(data, chosen + 156, joliet is not None)
    return record, joliet is not None


def _records(data: bytes, directory: _Record, joliet: bool) -> list[_Record]:
    start = directory.extent * _SECTOR
    end = min(start + directory.size, len(data))
    found = []
    position = start
    while position < end:
        length = data[position]
        if length == 0:  # records do not cross sectors: the rest of this one is padding
            position = (position // _SECTOR + 1) * _SECTOR
            continue
        record = _record(data, position, joliet)
        position += length
        if record is None or record.name in ("", "\x00", "\x01"):
            continue  # "." and ".." are the names \x00 and \x01
        found.append(record)
        if len(found) > bounded.MAX_MEMBERS:
            raise ScanIncomplete(Reason.LIMIT, f"a directory with more than {bounded.MAX_MEMBERS} entries")
    return found


def _record(data: bytes, position: int, joliet: bool) -> _Record | None:
    if position + 33 > len(data):
        return None
    length = data[position]
    extent, size = struct.unpack_from("<I", data, position + 2)[0], struct.unpack_from("<I", data, position + 10)[0]
    flags, name_length = data[position + 25], data[position + 32]
    if length < 33 + name_length:
        return None
    raw = data[position + 33:position + 33 + name_length]
    if raw in (b"\x00", b"\x01"):
        name = raw.decode("latin-1")
    elif joliet:
        name = raw.decode("utf-16-be", "replace")
    else:
        name = raw.decode("latin-1")
    name = name.split(";", 1)[0]  # the version suffix: "SETUP.EXE;1"
    if not flags & _DIRECTORY_FLAG and name.endswith(".") and not joliet:
        name = name[:-1]  # "README." is how ISO level 1 writes a name without extension
    return _Record(name, extent, size, bool(flags & _DIRECTORY_FLAG))


def _file(data: bytes, record: _Record, cap: int, budget: Budget) -> bytes:
    if record.size > cap:
        raise ScanIncomplete(Reason.LIMIT, f"file is larger than {cap} bytes")
    start = record.extent * _SECTOR
    content = data[start:start + record.size]
    if len(content) < record.size:
        raise ScanIncomplete(Reason.CORRUPT, "file runs past the end of the image")
    budget.charge(len(content))
    return content
