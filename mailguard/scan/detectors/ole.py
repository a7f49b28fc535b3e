"""The names in an OLE2 compound file's directory ([MS-CFB]), enough to see VBA macros.

Word and Excel 97-2003 files keep macros in a ``VBA`` storage (with ``_VBA_PROJECT`` and
``dir`` streams inside ``Macros`` or ``_VBA_PROJECT_CUR``). We only need the directory:
the header gives the sector size and where the FAT lives (109 entries in the header, the
rest in the DIFAT chain, §2.2-2.5); the directory is a FAT chain of 128-byte entries whose
first 64 bytes are the UTF-16LE name (§2.6). Every chain is followed with a visited set
and a length cap, so a file whose chains loop or point outside it just stops early.
"""

from __future__ import annotations

import struct

MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_HEADER_SIZE = 512
_HEADER_DIFAT_ENTRIES = 109
_END_OF_CHAIN = 0xFFFFFFFE
_MAX_REGULAR_SECTOR = 0xFFFFFFFA
_DIRECTORY_ENTRY = 128
# Directory entries we read at most; real documents have tens.
MAX_DIRECTORY_ENTRIES = 100_000


def is_ole(data: bytes) -> bool:
    return data[:8] == MAGIC and len(data) >= _HEADER_SIZE


def directory_names(data: bytes) -> list[str]:
    """Names of every storage and stream; [] when the file is not a readable OLE2 file."""
    if not is_ole(data):
        return []
    sector_shift = struct.unpack_from("<H", data, 0x1E)[0]
    if sector_shift not in (9, 12):
        return []
    sector_size = 1 << sector_shift
    first_directory, = struct.unpack_from("<I", data, 0x30)
    first_difat, difat_count = struct.unpack_from("<II", data, 0x44)
    sectors_in_file = max(0, (len(data) - sector_size) // sector_size + 1)

    def sector(n: int) -> bytes:
        offset = (n + 1) * sector_size
        return data[offset:offset + sector_size] if n < sectors_in_file else b""

    fat_sectors = list(struct.unpack_from(f"<{_HEADER_DIFAT_ENTRIES}I", data, 0x4C))
    per_difat = sector_size // 4 - 1
    next_difat, seen = first_difat, set()
    for _ in range(min(difat_count, sectors_in_file)):
        if next_difat > _MAX_REGULAR_SECTOR or next_difat in seen:
            break
        seen.add(next_difat)
        block = sector(next_difat)
        if len(block) < sector_size:
            break
        entries = struct.unpack_from(f"<{per_difat + 1}I", block)
        fat_sectors += entries[:per_difat]
        next_difat = entries[per_difat]
    per_fat_sector = sector_size // 4

    def next_sector(n: int) -> int:
        # Look entries up in place: a 100 MB file has millions of FAT entries we never need.
        index, slot = divmod(n, per_fat_sector)
        if index >= len(fat_sectors) or fat_sectors[index] > _MAX_REGULAR_SECTOR:
            return _END_OF_CHAIN
        block = sector(fat_sectors[index])
        return struct.unpack_from("<I", block, slot * 4)[0] if len(block) == sector_size else _END_OF_CHAIN

    names: list[str] = []
    current, visited = first_directory, set()
    while current <= _MAX_REGULAR_SECTOR and current not in visited:
        visited.add(current)
        block = sector(current)
        for offset in range(0, len(block) - _DIRECTORY_ENTRY + 1, _DIRECTORY_ENTRY):
            length = struct.unpack_from("<H", block, offset + 64)[0]
            if 2 <= length <= 64 and block[offset + 66] in (1, 2, 5):  # storage, stream, root
                names.append(block[offset:offset + length - 2].decode("utf-16-le", "replace"))
            if len(names) >= MAX_DIRECTORY_ENTRIES:
                return names
        current = next_sector(current)
    return names
