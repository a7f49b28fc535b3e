"""Single compressed streams: gzip (RFC 1952), bzip2, xz, lzip and LZMA-alone, each giving one child.

A file may hold several streams back to back (``cat a.gz b.gz``); gunzip, bunzip2 and
unxz output them all, so the child is their concatenation. The child is named after
the gzip FNAME field when there is one, else after the parent's name without its
compression suffix (``report.tgz`` -> ``report.tar``), else ``data``.

Every one is recognised by its bytes, never by its name or declared type: a ``.lzma`` sent
as ``report.txt`` is still opened. LZMA-alone (the format of ``lzma`` and ``xz --format=lzma``)
has no magic number, so it is recognised by a header that liblzma's own format detection
would accept plus a trial decoding of its start (see ``is_lzma_alone``); its name counts only
to accept a header that detection would not (``unlzma`` opens a ``.lzma`` whatever it says).
Compressed formats we recognise but cannot open (zstd, lz4, lzop, Unix compress) are in
unsupported.py: unscanned, never clean (docs/pitfalls.md#limits-bombs-and-missing-decoders).
A file whose name says it is one compressed stream (``.lzma``, ``.gz``, ``.zst``, ``.Z``...) but that
no decoder here opens is unscanned too (``unpack_unopened``): damaged, or a variant liblzma cannot
decode (LZMA with lc + lp > 4, which the LZMA SDK and 7-Zip write), the program its name points
to would still open or try it, so it must not pass as a plain file we looked at.
"""

from __future__ import annotations

import lzma
import struct
from collections.abc import Callable

from mailguard.scan.containers import bounded
from mailguard.scan.detectors.base import ScanObject
from mailguard.scan.limits import Budget, ScanIncomplete
from mailguard.scan.verdict import Reason

GZIP_MAGIC = b"\x1f\x8b\x08"               # RFC 1952 §2.3.1: ID1 ID2 and CM=8 (deflate)
XZ_MAGIC = b"\xfd7zXZ\x00"
LZIP_MAGIC = b"LZIP\x01"                   # lzip format: "LZIP", version 1
_BZIP2_BLOCK_MAGICS = (b"\x31\x41\x59\x26\x53\x59", b"\x17\x72\x45\x38\x50\x90")  # block, end of stream

# RFC 1952 §2.3.1 FLG bits
_FEXTRA, _FNAME = 0x04, 0x08
_MAX_GZIP_NAME = 1024

_SUFFIXES = {
    ".tgz": ".tar", ".taz": ".tar", ".tbz": ".tar", ".tbz2": ".tar", ".txz": ".tar", ".tlz": ".tar",
    ".gz": "", ".z": "", ".bz2": "", ".bz": "", ".xz": "", ".lzma": "", ".lz": "",
}
# Names of single compressed streams, opened here or listed in unsupported.py (compared lower-cased,
# so ".z" is both pack's ``.z`` and compress's ``.Z``).
_COMPRESSED_SUFFIXES = (*_SUFFIXES, ".zst", ".tzst", ".lz4", ".lzo", ".tzo")

# LZMA-alone header (13 bytes): properties byte ((pb * 5 + lp) * 9 + lc, so below 225), dictionary
# size (uint32 LE), uncompressed size (uint64 LE, all ones when unknown and an end marker is used).
_LZMA_ALONE_HEADER = 13
_LZMA_MAX_PROPERTIES = 9 * 5 * 5
LZMA_FIRST_BYTES = bytes(range(_LZMA_MAX_PROPERTIES))  # its first byte is the properties byte
_LZMA_UNKNOWN_SIZE = 0xFFFF_FFFF_FFFF_FFFF
_LZMA_MAX_KNOWN_SIZE = 1 << 38   # liblzma's detection refuses larger sizes as "not LZMA" (256 GiB)
_LZMA_TRIAL_INPUT = 4096         # compressed bytes decoded to confirm a header is one
_LZMA_TRIAL_OUTPUT = 4096
_LZMA_TRIAL_DICTIONARY = 64 * 1024  # more than the trial's output
# lzip member: 6-byte header, LZMA data (lc=3, lp=0, pb=2) ending in an end marker, 20-byte trailer
# (CRC32, data size, member size).
_LZIP_HEADER, _LZIP_TRAILER = 6, 20


def is_gzip(data: bytes) -> bool:
    return data[:3] == GZIP_MAGIC


def is_bzip2(data: bytes) -> bool:
    return data[:3] == b"BZh" and data[3:4] in b"123456789" and len(data) >= 10 and data[4:10] in _BZIP2_BLOCK_MAGICS


def is_xz(data: bytes) -> bool:
    return data[:6] == XZ_MAGIC


def is_lzma_alone(data: bytes, *, any_dictionary: bool = False) -> bool:
    """A legacy ``.lzma`` stream: a header liblzma's format detection accepts, and a start that decodes.

    The header checks are the ones ``xz`` uses to tell an LZMA-alone file from other data: a
    dictionary size of 2^n or 2^n + 2^(n-1) (or all ones), an uncompressed size that is unknown
    or below 256 GiB; and the range coder's first byte is always 0. Without a magic number that
    still lets through a few binaries full of zeros, so the first kilobytes are decoded too: what
    liblzma cannot decode is no LZMA, and must not make a message unscanned as "corrupt".

    ``any_dictionary``: for a file named ``.lzma``, which ``unlzma`` and 7-Zip open whatever its
    dictionary size (the check that size passes is what keeps every ELF program out otherwise).
    """
    if data[:1] and data[0] >= _LZMA_MAX_PROPERTIES or not _lzma_alone_header(data, any_dictionary):
        return False
    dict_size = struct.unpack_from("<I", data, 1)[0]
    # The first kilobytes of output reach back no further than themselves, so the trial needs
    # no more dictionary than that: a header asking for gigabytes is tried all the same (the
    # real decoding, bounded.lzma_alone_decompressor, then names such a stream a LIMIT).
    header = data[:1] + struct.pack("<I", min(dict_size, _LZMA_TRIAL_DICTIONARY)) + data[5:_LZMA_ALONE_HEADER]
    trial = header + data[_LZMA_ALONE_HEADER:_LZMA_ALONE_HEADER + _LZMA_TRIAL_INPUT]
    try:
        lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(trial, _LZMA_TRIAL_OUTPUT)
    except lzma.LZMAError:
        return False
    return True


def _lzma_alone_header(data: bytes, any_dictionary: bool) -> bool:
    """The checks of ``is_lzma_alone`` on everything but the properties byte."""
    if len(data) <= _LZMA_ALONE_HEADER or data[_LZMA_ALONE_HEADER] != 0:
        return False
    dict_size, size = struct.unpack_from("<IQ", data, 1)
    if size != _LZMA_UNKNOWN_SIZE and size >= _LZMA_MAX_KNOWN_SIZE:
        return False
    if dict_size != 0xFFFF_FFFF and not any_dictionary:
        top = 1 << (dict_size.bit_length() - 1) if dict_size else 0
        if not top or dict_size not in (top, top | top >> 1):
            return False
    return True


def named_lzma(obj: ScanObject) -> bool:
    """Whether a file name of ``obj`` says LZMA-alone (``.lzma``, ``.tlz``)."""
    return any(name.lower().endswith((".lzma", ".tlz")) for name in obj.names)


def named_compressed(obj: ScanObject) -> bool:
    """Whether a file name of ``obj`` says it is one compressed stream (``.gz``, ``.lzma``, ``.zst``...)."""
    return any(name.lower().endswith(_COMPRESSED_SUFFIXES) for name in obj.names)


def unpack_unopened(members: bounded.Members, data: bytes, budget: Budget) -> None:
    """A file named as a compressed stream that no decoder recognised: unscanned, never clean."""
    name = next(name for name in members.parent.names if name.lower().endswith(_COMPRESSED_SUFFIXES))
    if named_lzma(members.parent) and data[:1] and data[0] < _LZMA_MAX_PROPERTIES and _lzma_alone_header(data, False):
        pb_lp, lc = divmod(data[0], 9)
        if lc + pb_lp % 5 > 4:  # liblzma's limit (LZMA_LCLP_MAX); the LZMA SDK allows lc up to 8
            raise ScanIncomplete(Reason.UNSUPPORTED, f"{name}: LZMA with lc + lp > 4 cannot be decoded by liblzma")
    raise ScanIncomplete(Reason.CORRUPT, f"{name}: named as a compressed file, but no stream we can decode")


def is_lzip(data: bytes) -> bool:
    return data[:5] == LZIP_MAGIC and len(data) > _LZIP_HEADER


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


def unpack_lzma_alone(members: bounded.Members, data: bytes, budget: Budget) -> None:
    # One stream per file: ``lzma -d`` stops at the end of the first (trailing bytes are still
    # scanned as part of the file itself).
    members.count()
    members.unpack(_stripped_name(members.parent), lambda: bounded.decompress(
        bounded.lzma_alone_decompressor(budget), data, budget))


def unpack_lzip(members: bounded.Members, data: bytes, budget: Budget) -> None:
    members.count()
    members.unpack(_stripped_name(members.parent), lambda: bounded.decompress(
        bounded.lzip_decompressor(budget), data, budget, next_stream=_next_lzip_member))


def _next_lzip_member(rest: bytes) -> bytes | None:
    # After a member's end marker: its trailer, then maybe another member (``cat a.lz b.lz``).
    following = rest[_LZIP_TRAILER:]
    return following if is_lzip(following) else None


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
