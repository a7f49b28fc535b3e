"""Single compressed streams: gzip (RFC 1952), bzip2 and xz, each giving one child.

A file may hold several streams back to back (``cat a.gz b.gz``); gunzip, bunzip2 and
unxz output them all, so the child is their concatenation. The child is named after
the gzip FNAME field when there is one, else after the parent's name without its
compression suffix (``report.tgz`` -> ``report.tar``), else ``data``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from mailguard.scan.containers import bounded
from mailguard.scan.detectors.base import ScanObject
from mailguard.scan.limits import Budget

GZIP_MAGIC = b"\x1f\x8b\x08"               # RFC 1952 §2.3.1: ID1 ID2 and CM=8 (deflate)
XZ_MAGIC = b"\xfd7zXZ\x00"
_BZIP2_BLOCK_MAGICS = (b"\x31\x41\x59\x26\x53\x59", b"\x17\x72\x45\x38\x50\x90")  # block, end of stream

# RFC 1952 §2.3.1 FLG bits
_FEXTRA, _FNAME = 0x04, 0x08
_MAX_GZIP_NAME = 1024

_SUFFIXES = {
    ".tgz": ".tar", ".taz": ".tar", ".tbz": ".tar", ".tbz2": ".tar", ".txz": ".tar",
    ".gz": "", ".z": "", ".bz2": "", ".bz": "", ".xz": "",
}


def is_gzip(data: bytes) -> bool:
    return data[:3] == GZIP_MAGIC


def is_bzip2(data: bytes) -> bool:
    return data[:3] == b"BZh" and data[3:4] in b"123456789" and len(data) >= 10 and data[4:10] in _BZIP2_BLOCK_MAGICS


def is_xz(data: bytes) -> bool:
    return data[:6] == XZ_MAGIC


def unpack_gzip(members: bounded.Members, data: bytes, budget: Budget) -> None:
    name = _gzip_name(data) or _stripped_name(members.parent)
    members.count()
    members.unpack(name, lambda: bounded.decompress(
        lambda: bounded.ZlibDecompressor(31), data, budget, next_stream=_starting(is_gzip)))


def unpack_bzip2(members: bounded.Members, data: bytes, budget: Budget) -> None:
    members.count()
    members.unpack(_stripped_name(members.parent), lambda: bounded.decompress(
        bounded.bz2_decompressor, data, budget, next_stream=_starting(is_bzip2)))


def unpack_xz(members: bounded.Members, data: bytes, budget: Budget) -> None:
    members.count()
    members.unpack(_stripped_name(members.parent), lambda: bounded.decompress(
        bounded.xz_decompressor(budget), data, budget, next_stream=_xz_after_padding))


def _starting(is_stream: Callable[[bytes], bool]) -> Callable[[bytes], bytes | None]:
    return lambda rest: rest if is_stream(rest) else None


def _xz_after_padding(rest: bytes) -> bytes | None:
    # xz streams may be separated by stream padding (null bytes, xz file format §2.2);
    # liblzma's single-stream decoder leaves them in unused_data.
    following = rest.lstrip(b"\x00")
    return following if is_xz(following) else None


def _gzip_name(data: bytes) -> str:
    """The original file name stored in the gzip header (RFC 1952 §2.3.1 FNAME), if any."""
    if len(data) < 10 or not data[3] & _FNAME:
        return ""
    pos = 10
    if data[3] & _FEXTRA:
        if len(data) < 12:
            return ""
        (extra_length,) = struct.unpack_from("<H", data, 10)
        pos = 12 + extra_length
    end = data.find(b"\x00", pos, pos + _MAX_GZIP_NAME)
    if end < 0:
        return ""
    # RFC 1952: the name is ISO 8859-1; keep only its last path component.
    return data[pos:end].decode("latin-1").replace("\\", "/").rsplit("/", 1)[-1]


def _stripped_name(parent: ScanObject) -> str:
    for name in parent.names:
        base = name.replace("\\", "/").rsplit("/", 1)[-1]
        stem, dot, suffix = base.rpartition(".")
        if dot and stem and "." + suffix.lower() in _SUFFIXES:
            return stem + _SUFFIXES["." + suffix.lower()]
    return "data"
