"""Content-transfer decoders, lenient the way mail clients are lenient.

Every decoder returns *every* plausible decoding of its input (usually exactly one), because a
scanner that picks one interpretation where a client picks another lets content through unscanned
(docs/pitfalls.md#broken-base64, "union scanning"). All hot loops are in C: ``bytes.translate``,
``bytes.split``, ``binascii``.

Text bodies can also carry files in pre-MIME encodings (uuencode, yEnc, BinHex 4.0), which clients
still extract (docs/pitfalls.md#files-inside-text-bodies), and HTML carries files in ``data:`` URIs
(RFC 2397), which a click saves: ``inline_blocks`` finds and decodes them. A text file that arrives
as an attachment (a ``.uu``, ``.hqx``, ``.b64`` or ``.html`` file) is decoded the same way by the
program that opens it: ``encoded_files``.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# RFC 2045 §6.8: "Any characters outside of the base64 alphabet are to be ignored".
_NOT_B64 = bytes(b for b in range(256) if b not in _B64_ALPHABET)
_NOT_B64_OR_PAD = bytes(b for b in range(256) if b not in _B64_ALPHABET + b"=")


try:
    # SIMD base64 (the optional "fast" extra): about 7x binascii, which otherwise dominates
    # the cost of scanning mail with attachments (bench/scan.py).
    from pybase64 import b64decode as _simd_b64decode
except ImportError:  # pragma: no cover - depends on the installed extras
    _simd_b64decode = None


def _b64_quanta(clean: bytes) -> bytes:
    """Decode alphabet-only base64 of any length (a dangling sixth bit group is dropped)."""
    extra = len(clean) % 4
    if extra == 1:  # one lone character carries no full byte
        clean = clean[:-1]
    elif extra:
        clean += b"=" * (4 - extra)
    if _simd_b64decode is not None:
        return _simd_b64decode(clean, validate=True)
    return binascii.a2b_base64(clean)


def base64_decodings(data: bytes | memoryview, start: int = 0, end: int | None = None) -> list[bytes]:
    """Every decoding of base64 ``data[start:end]`` a client might produce, the common one first.

    Garbage bytes are ignored (RFC 2045 §6.8). When ``=`` appears before the end of the
    data, clients disagree (docs/pitfalls.md#broken-base64): some stop at the first padding, some
    continue after it as one stream, some restart a new stream after each padding,
    and Thunderbird/Safari read a mid-stream ``=`` as ``A``. Each distinct result is
    returned so the caller scans all of them. The range lets a caller decode a part
    inside the raw message without copying it out first.
    """
    if isinstance(data, memoryview):
        data = bytes(data)
    end = len(data) if end is None else end
    view = memoryview(data)[start:end]
    if _simd_b64decode is not None:
        # Padding only at the end (the common case) means one reading, and pybase64's
        # lenient mode skips line breaks and garbage itself, from the view, with no copy.
        first_pad = data.find(b"=", start, end)
        if first_pad == -1 or not data[first_pad:end].translate(None, _NOT_B64):
            try:
                return [_simd_b64decode(view)]
            except (binascii.Error, ValueError):  # a truncated last quantum: the careful path below
                pass
    stream = bytes(view).translate(None, _NOT_B64_OR_PAD)
    first_pad = stream.find(b"=")
    if first_pad == -1 or not stream[first_pad:].strip(b"="):
        return [_b64_quanta(stream[:first_pad] if first_pad != -1 else stream)]
    views = [
        _b64_quanta(stream[:first_pad]),                       # stop at the first padding
        _b64_quanta(stream.replace(b"=", b"")),                # ignore padding, one stream
        b"".join(_b64_quanta(seg) for seg in stream.split(b"=") if seg),  # restart per segment
        _b64_quanta(stream.rstrip(b"=").replace(b"=", b"A")),  # '=' read as 'A'
        # what follows the first padding, as a file of its own (mime-is-broken "junk_after_eq")
        _b64_quanta(stream[first_pad:].replace(b"=", b"")),
    ]
    return _distinct(views)


def quoted_printable_decoding(data: bytes | memoryview) -> bytes:
    """RFC 2045 §6.7, leniently: malformed ``=XY`` escapes are kept literally, as clients do."""
    return binascii.a2b_qp(bytes(data))


def decodings_for(encoding: str, data: bytes | memoryview, start: int = 0, end: int | None = None) -> list[bytes]:
    """The decodings of ``data[start:end]`` under one Content-Transfer-Encoding (lower-case token).

    7bit, 8bit, binary and any unknown token leave the bytes as they are: an unknown
    encoding is shown raw by clients, so the raw bytes are what must be scanned.
    """
    if encoding == "base64":
        return base64_decodings(data, start, end)
    body = memoryview(data)[start:end]
    if encoding == "quoted-printable":
        return [quoted_printable_decoding(body)]
    return [bytes(body)]


def _distinct(items: list[bytes]) -> list[bytes]:
    seen: set[bytes] = set()
    out = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


# ---------------------------------------------------------------- files inside text bodies

MAX_INLINE_BLOCKS = 64  # per text body; more is abuse and the rest stays undecoded


@dataclass(frozen=True, slots=True)
class InlineBlock:
    """A file found inside a text body, decoded."""

    encoding: str    # "uuencode", "base64" (begin-base64 or a bare base64 file), "yenc", "binhex" or "data-uri"
    name: str        # the name its header line gives ("" when none)
    data: bytes


_UU_BEGIN = re.compile(rb"^begin(-base64)?[ \t]+[0-7]{1,4}[ \t]+([^\r\n]*?)[ \t]*\r?$", re.M)
# ``b"begin" in text`` runs at ~1.7 GB/s on English text (CPython's search for a short needle
# ending in a common letter); the compiled pattern memchr's from "b" to "b", about twice as fast.
_BEGIN = re.compile(rb"begin").search
_UU_END = re.compile(rb"^(?:end|====)[ \t]*\r?$", re.M)
_YENC_BEGIN = re.compile(rb"^=ybegin (?:[^\r\n]*? )?name=([^\r\n]*?)[ \t]*\r?$", re.M)
_YENC_END = re.compile(rb"^=yend\b", re.M)
_YENC_PART = re.compile(rb"=ypart [^\r\n]*\r?\n")
_BINHEX_TAG = b"(This file must be converted with BinHex"
# BinHex 4.0 six-bit alphabet (RFC 1741 appendix), mapped onto base64's so binascii decodes it.
_BINHEX_ALPHABET = b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr"
_HQX_TO_B64 = bytes.maketrans(_BINHEX_ALPHABET, _B64_ALPHABET)
_NOT_HQX = bytes(b for b in range(256) if b not in _BINHEX_ALPHABET)
_YENC_SHIFT = bytes((b - 42) % 256 for b in range(256))


def inline_blocks(text: bytes, max_output: int) -> list[InlineBlock]:
    """Every uuencoded, yEnc or BinHex 4.0 block and every ``data:`` URI in ``text``, decoded.

    ``max_output`` caps the bytes any one block may decode to (BinHex run-length coding
    expands); a block over it is cut there, and the caller's size limit applies.
    The cheap ``bytes.find`` checks keep plain text bodies on the fast path.
    """
    blocks: list[InlineBlock] = []
    if _BEGIN(text):  # also the test for "=ybegin": one pass over plain text, not two
        blocks.extend(_uu_blocks(text))
        if b"=ybegin" in text:
            blocks.extend(_yenc_blocks(text))
    if b"(" in text and _BINHEX_TAG in text:  # a memchr first: most text has no "(" at all
        blocks.extend(_binhex_blocks(text, max_output))
    if b":" in text:  # a memchr: "data:" in any letter case has one
        blocks.extend(_data_uri_blocks(text, max_output))
    return blocks[:MAX_INLINE_BLOCKS]


# A text attachment is looked into when its first bytes hold no NUL: text (ASCII, UTF-8,
# Latin-1, yEnc) has none, while executables, images, office files and archives have one
# within their first header (a random kilobyte lacks one 1.8% of the time, then only
# costs the ``bytes.find`` passes of ``inline_blocks``).
TEXT_PROBE = 1024
_BARE_B64_MIN_LINE = 16  # a shorter first line says too little to call a file base64


def looks_textual(data: bytes) -> bool:
    """True when ``data`` may be a text file (its first ``TEXT_PROBE`` bytes hold no NUL)."""
    return bool(data) and data.find(b"\0", 0, TEXT_PROBE) == -1


def encoded_files(text: bytes, max_output: int) -> list[InlineBlock]:
    """The files an encoded text file holds, decoded: what its ``inline_blocks`` are, or,
    when it has none and is nothing but base64 (``base64 file > file.b64``), its decoding."""
    blocks = inline_blocks(text, max_output)
    if blocks or not _is_bare_base64(text):
        return blocks
    return [InlineBlock("base64", "", data[:max_output]) for data in base64_decodings(text)]


def _is_bare_base64(text: bytes) -> bool:
    """A first line of base64 quanta, and nothing but base64 and line breaks after it."""
    start = len(text) - len(text.lstrip(b"\r\n"))
    nl = text.find(b"\n", start)
    first = text[start: len(text) if nl == -1 else nl].rstrip(b"\r")
    if len(first) < _BARE_B64_MIN_LINE or first.translate(None, _B64_ALPHABET + b"="):
        return False
    return not text.translate(None, _B64_ALPHABET + b"=\r\n \t")


# RFC 2397: data:[<mediatype>][;base64],<data>. Browsers take the scheme in any letter case
# and drop tabs and line breaks inside a URL (WHATWG URL), so a payload may span lines; it
# ends at a quote, a space, "<", ">" or ")" (an HTML attribute, a tag, CSS url()).
# Possessive and colon-free, so a failed match costs at most 256 steps, no backtracking.
_DATA_URI = re.compile(rb"([^,:\"'<>\s]{0,256}+),([^\"'<> \x0b\x0c)]*+)")
_SCHEME_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789+.-")
_MAX_DATA_URI_TRIES = 4 * MAX_INLINE_BLOCKS  # "data:" without a URI after it; more is abuse
_COLON_PROBES = 16  # colons looked at one by one before lower-casing the text to search it


def _data_uri_blocks(text: bytes, max_output: int) -> list[InlineBlock]:
    found: list[InlineBlock] = []
    for tries, hit in enumerate(_data_schemes(text)):
        if tries >= _MAX_DATA_URI_TRIES or len(found) >= MAX_INLINE_BLOCKS:
            break
        if hit and text[hit - 1] | 0x20 in _SCHEME_CHARS:  # "metadata:" is no data: URI
            continue
        uri = _DATA_URI.match(text, hit + 5)
        if uri is None or not uri.group(2).strip():
            continue
        params, payload = uri.group(1), uri.group(2).translate(None, b"\t\r\n")
        if b"%" in payload:
            payload = unquote_to_bytes(payload)
        data = base64_decodings(payload)[0] if params.lower().endswith(b";base64") else payload
        found.append(InlineBlock("data-uri", "", data[:max_output]))
    return found


def _data_schemes(text: bytes) -> Iterator[int]:
    """Offsets of "data:" in any letter case, in order.

    Most text has a few colons, and a memchr per colon beats any case-blind search; text
    full of colons (CSS) is lower-cased once (same offsets) and searched for "data:".
    """
    pos = 0
    for _ in range(_COLON_PROBES):
        colon = text.find(b":", pos)
        if colon == -1:
            return
        if colon >= 4 and text[colon - 4:colon].lower() == b"data":
            yield colon - 4
        pos = colon + 1
    lowered = text.lower()
    pos = max(0, pos - 4)  # a "data" whose colon is after the last one probed
    while (hit := lowered.find(b"data:", pos)) != -1:
        yield hit
        pos = hit + 5


def _uu_blocks(text: bytes) -> list[InlineBlock]:
    found = []
    for begin in _UU_BEGIN.finditer(text):
        if len(found) >= MAX_INLINE_BLOCKS:
            break
        end = _UU_END.search(text, begin.end())
        body = text[begin.end(): end.start() if end else len(text)]
        name = begin.group(2).decode("utf-8", "replace")
        if begin.group(1):  # "begin-base64" (POSIX uuencode -m)
            found.append(InlineBlock("base64", name, base64_decodings(body)[0]))
        else:
            found.append(InlineBlock("uuencode", name, _uu_decode(body)))
    return found


def _uu_decode(body: bytes) -> bytes:
    """Line by line, tolerating the trailing garbage and short lines encoders leave."""
    out = []
    for line in body.splitlines():
        line = line.rstrip(b" \t")
        if not line:
            continue
        if line[0] in b"` ":  # a zero-length line ends the data, whatever follows
            break
        try:
            out.append(binascii.a2b_uu(line))
        except binascii.Error:
            # The length byte says how many bytes the line holds; decode just those characters.
            count = (line[0] - 32) & 0x3F
            try:
                out.append(binascii.a2b_uu(line[: 1 + (count + 2) // 3 * 4]))
            except binascii.Error:
                continue
    return b"".join(out)


def _yenc_blocks(text: bytes) -> list[InlineBlock]:
    found = []
    for begin in _YENC_BEGIN.finditer(text):
        if len(found) >= MAX_INLINE_BLOCKS:
            break
        end = _YENC_END.search(text, begin.end())
        body = text[begin.end(): end.start() if end else len(text)]
        body = _YENC_PART.sub(b"", body, count=1)
        name = begin.group(1).decode("utf-8", "replace")
        found.append(InlineBlock("yenc", name, _yenc_decode(body)))
    return found


def _yenc_decode(body: bytes) -> bytes:
    """yEnc: every byte is stored +42; ``=`` escapes a critical byte, stored +64 more."""
    body = body.translate(None, b"\r\n")
    pieces = body.split(b"=")
    out = [pieces[0]]
    for piece in pieces[1:]:
        if piece:
            out.append(bytes(((piece[0] - 64) % 256,)) + piece[1:])
    return b"".join(out).translate(_YENC_SHIFT)


def _binhex_blocks(text: bytes, max_output: int) -> list[InlineBlock]:
    found = []
    pos = 0
    while len(found) < MAX_INLINE_BLOCKS and (tag := text.find(_BINHEX_TAG, pos)) != -1:
        start = text.find(b":", text.find(b"\n", tag) + 1)
        if start == -1:
            break
        stop = text.find(b":", start + 1)
        stop = len(text) if stop == -1 else stop
        pos = stop
        found.extend(_binhex_decode(text[start + 1: stop], max_output))
    return found


def _binhex_decode(encoded: bytes, max_output: int) -> list[InlineBlock]:
    """BinHex 4.0 (RFC 1741): 6-bit text, then 0x90 run-length coding, then the forks.

    The data fork and the resource fork are separate files on a Mac, so they are separate
    blocks here (a hash signature of the data fork must match it alone).
    """
    packed = _b64_quanta(encoded.translate(None, _NOT_HQX).translate(_HQX_TO_B64))
    data = _binhex_unrle(packed, max_output)
    if not data:
        return []
    name_len = data[0]
    header_end = 1 + name_len + 1 + 4 + 4 + 2 + 4 + 4 + 2  # name, version, type, creator, flags, lengths, CRC
    if len(data) < header_end:
        return [InlineBlock("binhex", "", data)]
    name = data[1: 1 + name_len].decode("mac_roman", "replace")
    lengths = 1 + name_len + 1 + 4 + 4 + 2
    data_len = int.from_bytes(data[lengths: lengths + 4], "big")
    rsrc_len = int.from_bytes(data[lengths + 4: lengths + 8], "big")
    data_fork = data[header_end: header_end + data_len]
    rsrc_start = header_end + data_len + 2
    rsrc_fork = data[rsrc_start: rsrc_start + rsrc_len]
    blocks = [InlineBlock("binhex", name, data_fork)]
    if rsrc_fork:
        blocks.append(InlineBlock("binhex", name + ".rsrc", rsrc_fork))
    return blocks


def _binhex_unrle(data: bytes, max_output: int) -> bytes:
    """``X 0x90 n`` repeats X n times in all; ``0x90 0x00`` is a literal 0x90."""
    if b"\x90" not in data:
        return data[:max_output]
    out = bytearray()
    pos = 0
    while pos < len(data) and len(out) < max_output:
        marker = data.find(b"\x90", pos)
        if marker == -1:
            out += data[pos:]
            break
        out += data[pos:marker]
        if marker + 1 >= len(data):
            break
        count = data[marker + 1]
        if count == 0:
            out.append(0x90)
        elif out:
            out += bytes((out[-1],)) * min(count - 1, max_output)
        pos = marker + 2
    return bytes(out[:max_output])
