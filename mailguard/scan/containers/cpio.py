"""cpio archives in all three header formats (POSIX.1 / cpio(5)): newc ("070701", and
"070702" with checksums), portable odc ("070707"), and old binary, either byte order.

Members are stored, not compressed (a .cpio.gz is a gzip stream whose child is this),
but they are still read through the member cap and charged to the budget. The old binary
format has only a 2-byte magic, so a file is taken for one only when its first header
also makes sense (a NUL-terminated, printable name of a sane length): a JPEG that happens
to start with 0xC771 must not become a "corrupt archive".
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from mailguard.scan.containers import bounded
from mailguard.scan.limits import Budget, ScanIncomplete
from mailguard.scan.verdict import Reason

_NEWC = (b"070701", b"070702")
_ODC = b"070707"
_BINARY = {b"\xc7\x71": "<", b"\x71\xc7": ">"}  # 0o070707 as a little- or big-endian short
FIRST_BYTES = b"0\xc7\x71"  # what the three magics above start with
_TRAILER = "TRAILER!!!"
_REGULAR = 0o100000
_TYPE_MASK = 0o170000
_MAX_NAME = 4096


class _Header(NamedTuple):
    name: str
    mode: int
    size: int
    data_start: int
    next_header: int


def recognise(data: bytes) -> bool:
    if data[:6] in _NEWC or data[:6] == _ODC:
        return True
    return data[:2] in _BINARY and _binary_header(data, 0) is not None


def unpack(members: bounded.Members, data: bytes, budget: Budget) -> None:
    cap = bounded.member_cap(budget)
    position = 0
    while position < len(data):
        header = _header(data, position)
        if header is None:
            raise ScanIncomplete(Reason.CORRUPT, f"damaged cpio header at byte {position}")
        if header.name == _TRAILER:
            return
        members.count()
        if header.mode & _TYPE_MASK == _REGULAR:
            members.unpack(header.name, lambda h=header: _member(data, h, cap, budget))
        position = header.next_header
    raise ScanIncomplete(Reason.CORRUPT, "cpio archive without its trailer")


def _member(data: bytes, header: _Header, cap: int, budget: Budget) -> bytes:
    if header.size > cap:
        raise ScanIncomplete(Reason.LIMIT, f"member is larger than {cap} bytes")
    content = data[header.data_start:header.data_start + header.size]
    if len(content) < header.size:
        raise ScanIncomplete(Reason.CORRUPT, "cpio member is truncated")
    budget.charge(len(content))
    return content


def _header(data: bytes, position: int) -> _Header | None:
    magic = data[position:position + 6]
    if magic in _NEWC:
        return _ascii_header(data, position, 110, 16, [(6 + 8 * i, 8) for i in range(13)], align=4)
    if magic == _ODC:
        return _ascii_header(data, position, 76, 8, [(18, 6), (59, 6), (65, 11)], align=1)
    return _binary_header(data, position)


def _ascii_header(data: bytes, position: int, size: int, base: int, fields: list[tuple[int, int]],
                  align: int) -> _Header | None:
    raw = data[position:position + size]
    if len(raw) < size:
        return None
    try:
        values = [int(raw[start:start + length], base) for start, length in fields]
    except ValueError:
        return None
    if base == 16:  # newc: mode is field 1, file size field 6, name size field 11
        mode, file_size, name_size = values[1], values[6], values[11]
    else:           # odc: mode, name size, file size
        mode, name_size, file_size = values
    return _finish(data, position, size, name_size, mode, file_size, align)


def _binary_header(data: bytes, position: int) -> _Header | None:
    order = _BINARY.get(data[position:position + 2])
    raw = data[position:position + 26]
    if order is None or len(raw) < 26:
        return None
    # magic, dev, ino, mode, uid, gid, nlink, rdev, mtime (2 shorts), namesize, filesize (2 shorts,
    # most significant first, whatever the byte order)
    fields = struct.unpack(order + "13H", raw)
    mode, name_size, file_size = fields[3], fields[10], fields[11] << 16 | fields[12]
    return _finish(data, position, 26, name_size, mode, file_size, align=2)


def _finish(data: bytes, position: int, header_size: int, name_size: int, mode: int, file_size: int,
            align: int) -> _Header | None:
    if not 1 <= name_size <= _MAX_NAME:
        return None
    name_start = position + header_size
    raw_name = data[name_start:name_start + name_size]
    if len(raw_name) < name_size or raw_name[-1:] != b"\x00" or b"\x00" in raw_name[:-1]:
        return None
    name = raw_name[:-1].decode("utf-8", "replace")
    if not name or not name.isprintable():
        return None
    data_start = _aligned(name_start + name_size - position, align) + position
    next_header = _aligned(data_start + file_size - position, align) + position
    return _Header(name, mode, file_size, data_start, next_header)


def _aligned(offset: int, align: int) -> int:
    return (offset + align - 1) // align * align
