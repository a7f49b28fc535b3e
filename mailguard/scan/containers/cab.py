"""Microsoft Cabinet (.cab) files ([MS-CAB]): stored and MSZIP folders.

A cabinet holds folders (compressed streams made of CFDATA blocks) and files (slices of a
folder's uncompressed stream). MSZIP blocks are "CK" and a raw deflate stream of at most
32 KiB output, each using the previous block's output as its dictionary (§2.3 of
[MS-MCI]), which zlib takes as ``zdict``. Quantum and LZX folders, and files continued
from or into another cabinet of a set, are UNSUPPORTED: reported unscanned, never clean.
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

from mailguard.scan.containers import bounded
from mailguard.scan.limits import Budget, ScanIncomplete
from mailguard.scan.verdict import Reason

MAGIC = b"MSCF\x00\x00\x00\x00"
_HEADER = struct.Struct("<4sIIIIIBBHHHHH")
_FOLDER = struct.Struct("<IHH")
_FILE = struct.Struct("<IIHHHH")
_DATA = struct.Struct("<IHH")
_RESERVE_PRESENT, _PREVIOUS_CABINET, _NEXT_CABINET = 0x4, 0x1, 0x2
_STORED, _MSZIP = 0, 1
_CONTINUED = 0xFFFD  # iFolder values at and above this continue across cabinets
_MSZIP_BLOCK = 32768
_MAX_STRING = 256


class _Folder(NamedTuple):
    data_offset: int
    blocks: int
    method: int


def recognise(data: bytes) -> bool:
    return data[:8] == MAGIC and len(data) >= _HEADER.size


def unpack(members: bounded.Members, data: bytes, budget: Budget) -> None:
    try:
        folders, files, data_reserve = _directory(data)
    except (struct.error, ValueError) as exc:
        raise ScanIncomplete(Reason.CORRUPT, f"damaged cabinet: {exc}") from None
    streams: dict[int, bytes | ScanIncomplete] = {}
    for name, size, offset, folder in files:
        members.count()
        if folder >= _CONTINUED or folder >= len(folders):
            members.skip(name, Reason.UNSUPPORTED, "file continued in another cabinet of a set")
            continue
        if folder not in streams:
            try:
                streams[folder] = _folder_stream(data, folders[folder], data_reserve, budget)
            except ScanIncomplete as exc:
                if exc.reason in (Reason.LIMIT, Reason.TIMEOUT):
                    raise
                streams[folder] = exc
        stream = streams[folder]
        if isinstance(stream, ScanIncomplete):
            members.skip(name, stream.reason, stream.detail)
        elif offset + size > len(stream):
            members.skip(name, Reason.CORRUPT, "file runs past the end of its folder")
        else:
            members.add(name, stream[offset:offset + size])


def _directory(data: bytes) -> tuple[list[_Folder], list[tuple[str, int, int, int]], int]:
    fields = _HEADER.unpack_from(data, 0)
    files_offset, folder_count, file_count, flags = fields[4], fields[8], fields[9], fields[10]
    position = _HEADER.size
    header_reserve = folder_reserve = data_reserve = 0
    if flags & _RESERVE_PRESENT:
        header_reserve, folder_reserve, data_reserve = struct.unpack_from("<HBB", data, position)
        position += 4 + header_reserve
    for flag in (_PREVIOUS_CABINET, _NEXT_CABINET):
        if flags & flag:  # two names: the other cabinet and its disk
            for _ in range(2):
                position = data.index(b"\x00", position, position + _MAX_STRING) + 1
    if folder_count > bounded.MAX_MEMBERS or file_count > bounded.MAX_MEMBERS:
        raise ScanIncomplete(Reason.LIMIT, f"more than {bounded.MAX_MEMBERS} folders or files")
    folders = []
    for _ in range(folder_count):
        offset, blocks, method = _FOLDER.unpack_from(data, position)
        folders.append(_Folder(offset, blocks, method & 0x000F))
        position += _FOLDER.size + folder_reserve
    files = []
    position = files_offset
    for _ in range(file_count):
        size, offset, folder, _date, _time, attributes = _FILE.unpack_from(data, position)
        end = data.index(b"\x00", position + _FILE.size, position + _FILE.size + _MAX_STRING)
        # attribute 0x80 (_A_NAME_IS_UTF): the name is UTF-8, else the system code page
        name = data[position + _FILE.size:end].decode("utf-8" if attributes & 0x80 else "cp1252", "replace")
        files.append((name.replace("\\", "/"), size, offset, folder))
        position = end + 1
    return folders, files, data_reserve


def _folder_stream(data: bytes, folder: _Folder, data_reserve: int, budget: Budget) -> bytes:
    if folder.method not in (_STORED, _MSZIP):
        names = {2: "Quantum", 3: "LZX"}
        raise ScanIncomplete(Reason.UNSUPPORTED, f"{names.get(folder.method, folder.method)} compressed cabinet")
    cap = bounded.member_cap(budget)
    out = bytearray()
    position = folder.data_offset
    for _ in range(folder.blocks):
        budget.check_time()
        try:
            _checksum, packed, _unpacked = _DATA.unpack_from(data, position)
        except struct.error:
            raise ScanIncomplete(Reason.CORRUPT, "cabinet data block header is truncated") from None
        start = position + _DATA.size + data_reserve
        block = data[start:start + packed]
        if len(block) < packed:
            raise ScanIncomplete(Reason.CORRUPT, "cabinet data block is truncated")
        if folder.method == _STORED:
            produced = block
        else:
            produced = _mszip_block(block, bytes(out[-_MSZIP_BLOCK:]))
        if len(out) + len(produced) > cap:
            raise ScanIncomplete(Reason.LIMIT, f"cabinet folder unpacks to more than {cap} bytes")
        budget.charge(len(produced))
        out += produced
        position = start + packed
    return bytes(out)


def _mszip_block(block: bytes, dictionary: bytes) -> bytes:
    if block[:2] != b"CK":
        raise ScanIncomplete(Reason.CORRUPT, "MSZIP block without its CK signature")
    try:
        inflater = zlib.decompressobj(-15, zdict=dictionary) if dictionary else zlib.decompressobj(-15)
        # One block is at most 32 KiB of output by definition; ask for one byte more to see a liar.
        produced = inflater.decompress(block[2:], _MSZIP_BLOCK + 1)
    except zlib.error as exc:
        raise ScanIncomplete(Reason.CORRUPT, f"bad MSZIP block: {exc}") from None
    if len(produced) > _MSZIP_BLOCK:
        raise ScanIncomplete(Reason.CORRUPT, "MSZIP block larger than 32 KiB")
    return produced
