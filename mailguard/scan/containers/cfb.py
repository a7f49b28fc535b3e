"""A bounded reader of OLE2 compound files ([MS-CFB]): Word/Excel/PowerPoint 97-2003, .msg.

The file is a little FAT file system: 512- or 4096-byte sectors chained by a FAT (whose
own sectors are listed in the header's DIFAT, 109 entries, then in DIFAT sectors, §2.5),
a directory of 128-byte entries kept as a red-black tree per storage (§2.6), and a
"mini stream" of 64-byte sectors, chained by the mini FAT, for streams under 4096 bytes
(§2.4). Every chain is followed with a step cap and a visited set, and every size is
checked against the caller's cap, so a file whose chains loop, point outside it or claim
huge sizes costs bounded time and memory; it is never a reason to raise.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_HEADER_SIZE = 512
_HEADER_DIFAT_ENTRIES = 109
_MAX_REGULAR_SECTOR = 0xFFFFFFFA
_END_OF_CHAIN = 0xFFFFFFFE
_NO_STREAM = 0xFFFFFFFF
_ENTRY_SIZE = 128
STORAGE, STREAM, ROOT = 1, 2, 5
# Directory entries we read at most; real documents have tens, .msg files hundreds.
MAX_DIRECTORY_ENTRIES = 20_000


class CompoundFileError(Exception):
    """Not a readable compound file (the caller reports it as corrupt)."""


@dataclass(frozen=True)
class DirectoryEntry:
    name: str
    kind: int           # STORAGE, STREAM or ROOT
    start: int          # first sector (mini sector for small streams)
    size: int
    left: int
    right: int
    child: int


def is_compound_file(data: bytes) -> bool:
    return data[:8] == MAGIC and len(data) >= _HEADER_SIZE


class CompoundFile:
    def __init__(self, data: bytes) -> None:
        if not is_compound_file(data):
            raise CompoundFileError("not an OLE2 compound file")
        self.data = data
        sector_shift, mini_shift = struct.unpack_from("<HH", data, 0x1E)
        if sector_shift not in (9, 12) or mini_shift != 6:
            raise CompoundFileError("bad sector sizes")
        self.sector_size = 1 << sector_shift
        self.mini_sector_size = 1 << mini_shift
        (self._first_directory,) = struct.unpack_from("<I", data, 0x30)
        (self.mini_cutoff, self._first_mini_fat, _mini_fat_count,
         first_difat, difat_count) = struct.unpack_from("<IIIII", data, 0x38)
        self._sectors_in_file = max(0, (len(data) - self.sector_size) // self.sector_size + 1)
        self._fat_sectors = self._read_difat(first_difat, difat_count)
        self.entries = self._read_directory()
        self._mini_stream: bytes | None = None
        self._mini_fat: bytes | None = None

    # -- sectors and chains ----------------------------------------------------------------

    def _sector(self, n: int) -> bytes:
        if n >= self._sectors_in_file:
            return b""
        offset = (n + 1) * self.sector_size
        return self.data[offset:offset + self.sector_size]

    def _read_difat(self, first: int, count: int) -> list[int]:
        sectors = [n for n in struct.unpack_from(f"<{_HEADER_DIFAT_ENTRIES}I", self.data, 0x4C)
                   if n <= _MAX_REGULAR_SECTOR]
        per_sector = self.sector_size // 4 - 1
        current, seen = first, set()
        for _ in range(min(count, self._sectors_in_file)):
            if current > _MAX_REGULAR_SECTOR or current in seen:
                break
            seen.add(current)
            block = self._sector(current)
            if len(block) < self.sector_size:
                break
            entries = struct.unpack_from(f"<{per_sector + 1}I", block)
            sectors += [n for n in entries[:per_sector] if n <= _MAX_REGULAR_SECTOR]
            current = entries[per_sector]
        return sectors

    def _next(self, n: int) -> int:
        # FAT entries are looked up in place: a large file has millions we never need.
        index, slot = divmod(n, self.sector_size // 4)
        if index >= len(self._fat_sectors):
            return _END_OF_CHAIN
        block = self._sector(self._fat_sectors[index])
        return struct.unpack_from("<I", block, slot * 4)[0] if len(block) == self.sector_size else _END_OF_CHAIN

    def _chain(self, start: int, limit: int) -> bytes:
        """The bytes of a sector chain, at most ``limit`` of them."""
        out = bytearray()
        current, seen = start, set()
        while current <= _MAX_REGULAR_SECTOR and current not in seen and len(out) < limit:
            seen.add(current)
            block = self._sector(current)
            if not block:
                break
            out += block
            current = self._next(current)
        return bytes(out[:limit])

    # -- the directory ---------------------------------------------------------------------

    def _read_directory(self) -> list[DirectoryEntry]:
        raw = self._chain(self._first_directory, MAX_DIRECTORY_ENTRIES * _ENTRY_SIZE)
        entries = []
        for offset in range(0, len(raw) - _ENTRY_SIZE + 1, _ENTRY_SIZE):
            name_length, kind = struct.unpack_from("<HB", raw, offset + 64)
            left, right, child = struct.unpack_from("<III", raw, offset + 68)
            start, size = struct.unpack_from("<IQ", raw, offset + 116)
            if self.sector_size == 512:
                size &= 0xFFFFFFFF  # version 3 files: the high word is undefined (§2.6.3)
            name = raw[offset:offset + max(0, min(name_length, 64) - 2)].decode("utf-16-le", "replace")
            entries.append(DirectoryEntry(name, kind, start, size, left, right, child))
        if not entries or entries[0].kind != ROOT:
            raise CompoundFileError("no root entry")
        return entries

    def names(self) -> list[str]:
        """Names of every storage and stream (for quick checks such as "has a VBA storage")."""
        return [e.name for e in self.entries if e.kind in (STORAGE, STREAM, ROOT)]

    def streams(self) -> Iterator[tuple[str, DirectoryEntry]]:
        """Every stream with its path ("ObjectPool/_1279313719/\\x01Ole10Native"), tree order."""
        visited: set[int] = set()
        pending: list[tuple[int, str]] = [(self.entries[0].child, "")]
        while pending:
            index, prefix = pending.pop()
            if index >= len(self.entries) or index in visited:
                continue  # _NO_STREAM, out of range, or a loop
            visited.add(index)
            entry = self.entries[index]
            pending.append((entry.right, prefix))
            pending.append((entry.left, prefix))
            path = f"{prefix}{entry.name}"
            if entry.kind == STREAM:
                yield path, entry
            elif entry.kind == STORAGE:
                pending.append((entry.child, path + "/"))

    # -- stream contents -------------------------------------------------------------------

    def read(self, entry: DirectoryEntry, cap: int) -> bytes:
        """A stream's bytes; raises CompoundFileError if it is larger than ``cap`` or truncated."""
        if entry.size > cap:
            raise CompoundFileError(f"stream {entry.name!r} is larger than {cap} bytes")
        if entry.size < self.mini_cutoff:
            data = self._mini_chain(entry.start, entry.size)
        else:
            data = self._chain(entry.start, entry.size)
        if len(data) < entry.size:
            raise CompoundFileError(f"stream {entry.name!r} is truncated")
        return data

    def _mini_chain(self, start: int, size: int) -> bytes:
        if self._mini_stream is None or self._mini_fat is None:
            root = self.entries[0]
            # The mini stream and mini FAT are read once; neither can be larger than the file.
            self._mini_stream = self._chain(root.start, min(root.size, len(self.data)))
            self._mini_fat = self._chain(self._first_mini_fat, len(self.data))
        mini_fat = self._mini_fat
        out = bytearray()
        current, seen = start, set()
        while current <= _MAX_REGULAR_SECTOR and current not in seen and len(out) < size:
            seen.add(current)
            offset = current * self.mini_sector_size
            block = self._mini_stream[offset:offset + self.mini_sector_size]
            if not block:
                break
            out += block
            current = struct.unpack_from("<I", mini_fat, current * 4)[0] if current * 4 + 4 <= len(mini_fat) \
                else _END_OF_CHAIN
        return bytes(out[:size])
