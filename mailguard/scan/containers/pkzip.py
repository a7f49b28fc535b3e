"""zip (and zip64) members, each inflated by us in bounded steps.

``zipfile`` reads the central directory (it knows zip64 and the many extra-field
quirks); it never decompresses anything here. We find each member's data behind its
local header and inflate it through ``bounded.decompress``, so neither a 42.zip nor a
single 1000:1 member can outrun the message budget (docs/pitfalls.md#limits-bombs-and-missing-decoders).
Entries whose data
overlap are the non-recursive bomb of Fifield (bamsoftware.com/hacks/zipbomb): refused
as LIMIT before anything is inflated. Encrypted members (ZipCrypto and WinZip AES both
set bit 0 of the flags, APPNOTE 4.4.4) are reported ENCRYPTED, never clean
(docs/pitfalls.md#encrypted-archives).
"""

from __future__ import annotations

import io
import lzma
import struct
import zipfile
from typing import NamedTuple

from mailguard.scan.containers import bounded
from mailguard.scan.limits import Budget, ScanIncomplete
from mailguard.scan.verdict import Reason

MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a first local header, or an empty archive

# What zipfile raises on a hostile central directory (found by fuzzing, e.g. a version
# number it refuses with NotImplementedError).
ZIPFILE_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, NotImplementedError,
                  struct.error, KeyError, IndexError, OverflowError)
# APPNOTE 4.4.4 general purpose flags: bit 0 encrypted, bit 3 sizes in a data descriptor
# after the data (the local header has zeros), bit 11 UTF-8 names.
_FLAG_ENCRYPTED = 0x1
_FLAG_DATA_DESCRIPTOR = 0x8
_FLAG_UTF8 = 0x800
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
# A central directory entry is at least 46 bytes; bound how many zipfile would build (memory).
_MIN_CENTRAL_ENTRY = 46
# zip method numbers (APPNOTE 4.4.5)
STORED, DEFLATED, DEFLATE64, BZIP2, LZMA, AES = 0, 8, 9, 12, 14, 99
# LZMA dictionaries are allocated up front; never ask for more than a member may unpack to.
_MIN_LZMA_DICT = 4096
_DEFLATE64_INPUT_STEP = 1024


def recognise(data: bytes) -> bool:
    return data[:4] in MAGIC


def unpack(members: bounded.Members, data: bytes, budget: Budget) -> None:
    check_central_directory_size(data)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except ZIPFILE_ERRORS as exc:
        # No readable central directory: what the local headers hold is still scanned.
        _unpack_orphans(members, data, budget, known=[])
        raise ScanIncomplete(Reason.CORRUPT, f"not a readable zip: {exc}") from None
    if len(infos) > bounded.MAX_MEMBERS:
        raise ScanIncomplete(Reason.LIMIT, f"more than {bounded.MAX_MEMBERS} members")
    spans = [(info, _local_header(data, info.header_offset)) for info in infos]
    _refuse_overlaps(spans)
    for info, local in spans:
        members.count()
        if info.filename.endswith("/"):
            continue  # a directory entry
        if local is None:
            members.skip(info.filename, Reason.CORRUPT, "local header missing or damaged")
            continue
        if info.flag_bits & _FLAG_ENCRYPTED or info.compress_type == AES:
            members.skip(info.filename, Reason.ENCRYPTED, "password-protected zip member")
            continue
        raw = memoryview(data)[local.data_start:local.data_start + info.compress_size]
        if len(raw) < info.compress_size:
            members.skip(info.filename, Reason.CORRUPT, "member data runs past the end of the archive")
            continue
        # The local header may name the member differently from the central directory (a
        # trick against name filters): keep both names for the heuristics.
        names = (info.filename,) if local.name in ("", info.filename) else (info.filename, local.name)
        members.unpack(info.filename, lambda raw=raw, method=info.compress_type: _inflate(method, raw, budget),
                       names=names)
    known = [(info.header_offset, local.data_start + info.compress_size) for info, local in spans if local]
    _unpack_orphans(members, data, budget, known)


def _add_orphan(members: bounded.Members, local: "_Local", raw: memoryview, budget: Budget) -> None:
    try:
        content = _inflate(local.method, raw, budget)
    except ScanIncomplete as exc:
        if exc.reason in (Reason.LIMIT, Reason.TIMEOUT):
            raise
        return  # bytes that only look like a local header: nothing a reader could extract
    members.add(local.name, content)


class _Local(NamedTuple):
    name: str
    flags: int
    method: int
    compressed_size: int
    data_start: int


def _local_header(data: bytes, offset: int) -> _Local | None:
    if offset < 0 or offset + _LOCAL_HEADER.size > len(data):
        return None
    fields = _LOCAL_HEADER.unpack_from(data, offset)
    if fields[0] != b"PK\x03\x04":
        return None
    flags, method, compressed_size, name_length, extra_length = fields[2], fields[3], fields[7], fields[9], fields[10]
    raw_name = data[offset + _LOCAL_HEADER.size:offset + _LOCAL_HEADER.size + name_length]
    # APPNOTE 4.4.4 bit 11: the name is UTF-8, else code page 437 (as zipfile decodes it).
    name = raw_name.decode("utf-8" if flags & _FLAG_UTF8 else "cp437", "replace")
    return _Local(name, flags, method, compressed_size, offset + _LOCAL_HEADER.size + name_length + extra_length)


def _unpack_orphans(members: bounded.Members, data: bytes, budget: Budget, known: list[tuple[int, int]]) -> None:
    """Members that only a streaming reader sees: local headers the central directory omits.

    Java's ZipInputStream and other streaming readers walk local headers and never read the
    central directory, so a file listed only there is real to them. We scan that view too
    (union of interpretations, docs/pitfalls.md#boundary-tricks); headers inside known member data are
    skipped.
    """
    position = data.find(b"PK\x03\x04")
    while position >= 0:
        inside = next((end for start, end in known if start <= position < end), None)
        if inside is not None:
            position = data.find(b"PK\x03\x04", inside)
            continue
        local = _local_header(data, position)
        next_search = position + 4
        if local is not None and local.name and not local.name.endswith("/"):
            members.count()
            size_known = not local.flags & _FLAG_DATA_DESCRIPTOR
            end = local.data_start + local.compressed_size if size_known else len(data)
            if local.flags & _FLAG_ENCRYPTED:
                members.skip(local.name, Reason.ENCRYPTED, "password-protected zip member (local header only)")
            elif size_known or local.method != STORED:
                _add_orphan(members, local, memoryview(data)[local.data_start:end], budget)
            if size_known:
                next_search = max(next_search, end)
        position = data.find(b"PK\x03\x04", next_search)


def check_central_directory_size(data: bytes) -> None:
    """Refuse, before zipfile parses it, a central directory listing more entries than we allow."""
    eocd = data.rfind(b"PK\x05\x06", max(0, len(data) - 65_557))
    if eocd < 0 or eocd + 22 > len(data):
        return  # zipfile will report the archive as unreadable
    (size,) = struct.unpack_from("<I", data, eocd + 12)
    if size == 0xFFFFFFFF:  # zip64: the real size is in the zip64 end record, bounded by the data anyway
        size = len(data)
    if size // _MIN_CENTRAL_ENTRY > bounded.MAX_MEMBERS * 4:
        raise ScanIncomplete(Reason.LIMIT, "central directory is too large")


def _refuse_overlaps(spans: list[tuple[zipfile.ZipInfo, _Local | None]]) -> None:
    """Members whose [local header, end of data) ranges overlap are a bomb (or a forgery)."""
    ranges = sorted((info.header_offset, local.data_start + info.compress_size) for info, local in spans if local)
    for (_, previous_end), (next_start, _) in zip(ranges, ranges[1:]):
        if next_start < previous_end:
            raise ScanIncomplete(Reason.LIMIT, "zip entries overlap (a non-recursive zip bomb)")


def _inflate(method: int, raw: memoryview, budget: Budget) -> bytes:
    if method == STORED:
        return bounded.stored(raw, budget)
    if method == DEFLATED:
        return bounded.decompress(lambda: bounded.ZlibDecompressor(-15), raw, budget)
    if method == BZIP2:
        return bounded.decompress(bounded.bz2_decompressor, raw, budget)
    if method == LZMA:
        return _inflate_lzma(raw, budget)
    if method == DEFLATE64:
        return _inflate_deflate64(raw, budget)
    raise ScanIncomplete(Reason.UNSUPPORTED, f"zip compression method {method}")


def _inflate_lzma(raw: memoryview, budget: Budget) -> bytes:
    """APPNOTE 5.8.8: 2 bytes version, 2 bytes properties size, properties, then a raw LZMA1 stream."""
    if len(raw) < 9:
        raise ScanIncomplete(Reason.CORRUPT, "short LZMA header")
    (props_size,) = struct.unpack_from("<H", raw, 2)
    props = bytes(raw[4:4 + props_size])
    if props_size != 5 or len(props) != 5:
        raise ScanIncomplete(Reason.CORRUPT, "bad LZMA properties")
    lc_lp_pb, dict_size = props[0], struct.unpack_from("<I", props, 1)[0]
    if lc_lp_pb >= 9 * 5 * 5:
        raise ScanIncomplete(Reason.CORRUPT, "bad LZMA properties")
    # A dictionary larger than what we may unpack is never needed: clamp it (bounded memory).
    dict_size = max(_MIN_LZMA_DICT, min(dict_size, bounded.member_cap(budget)))
    lzma_filter = {"id": lzma.FILTER_LZMA1, "lc": lc_lp_pb % 9, "lp": (lc_lp_pb // 9) % 5,
                   "pb": lc_lp_pb // 45, "dict_size": dict_size}
    body = raw[4 + props_size:]
    return bounded.decompress(lambda: lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[lzma_filter]), body, budget)


def _inflate_deflate64(raw: memoryview, budget: Budget) -> bytes:
    """Deflate64 (Windows' "compressed folders" for members over 2 GB) through the inflate64 package."""
    try:
        import inflate64
    except ImportError:
        raise ScanIncomplete(Reason.UNSUPPORTED, "Deflate64 needs the 'archives' extra") from None

    class _Deflate64:
        def __init__(self) -> None:
            self._d = inflate64.Inflater()
            self.unused_data = b""

        @property
        def eof(self) -> bool:
            return self._d.eof

        @property
        def needs_input(self) -> bool:
            return True

        def decompress(self, data: bytes, max_length: int = -1) -> bytes:
            return self._d.inflate(data)

    # inflate64 has no max_length, so feed it small slices: Deflate64 expands at most about
    # 1000:1, so one 1 KiB slice yields at most about 1 MiB before the budget is checked again.
    return bounded.decompress(_Deflate64, raw, budget, input_step=_DEFLATE64_INPUT_STEP)
