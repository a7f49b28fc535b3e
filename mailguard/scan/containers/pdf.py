"""PDF streams: decoded, so signatures see embedded files, JavaScript and page content.

PDF (ISO 32000-1 §7.3.8) keeps almost everything of interest in streams, most of them
compressed (/FlateDecode) or text-encoded (/ASCIIHexDecode, /ASCII85Decode), often several
filters in a row. Every stream is decoded through its filter chain and becomes a child:
named after the file it is when a file specification points at it (/EF << /F 12 0 R >>
with /F (invoice.exe)), else ``stream-OBJ``. A stream we cannot decode (image codecs, LZW)
or that is stored plain is already visible to the detectors in the PDF's own bytes, so it
is a child only when it is an embedded file (its name and start matter to the heuristics).

Readers are lenient, so are we: a stream ends at ``endstream`` whatever /Length says, and
the header may sit anywhere in the first 1024 bytes (Acrobat's rule). Flate runs through
``bounded.decompress``, so a PDF bomb stops at the budget. An encrypted PDF (/Encrypt in
its trailer) cannot be read without its key: its streams are unscanned, ENCRYPTED.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import NamedTuple

from mailguard.scan.containers import bounded
from mailguard.scan.limits import Budget, ScanIncomplete
from mailguard.scan.verdict import Reason

_HEADER = re.compile(rb"%PDF-\d")
_HEADER_WINDOW = 1024
_OBJECT = re.compile(rb"(\d+)\s+(\d+)\s+obj\b")
_OBJ_WORD = re.compile(rb"obj").search  # what every _OBJECT match holds
_STREAM = re.compile(rb"stream\r?\n")
_FILTER = re.compile(rb"/Filter\s*(?:/([A-Za-z0-9]+)|\[([^\]]*)\])")
_NAME = re.compile(rb"/([A-Za-z0-9]+)")
_EMBEDDED_FILE = re.compile(rb"/EF\s*<<[^>]*?/(?:UF|F)\s+(\d+)\s+\d+\s+R", re.DOTALL)
_FILE_NAME = re.compile(rb"/(?:UF|F)\s*\(((?:\\.|[^\\)])*)\)", re.DOTALL)
# /Encrypt in the trailer dictionary, or in a cross-reference stream's (PDF 1.5, §7.5.8):
# not the word in a page's text or in mail that talks about PDFs.
_ENCRYPT = re.compile(rb"trailer\s*<<[^%]{0,4096}?/Encrypt\b|/Type\s*/XRef\b[^%]{0,4096}?/Encrypt\b"
                      rb"|/Encrypt\b[^%]{0,4096}?/Type\s*/XRef\b", re.DOTALL)
# Bytes of an object's dictionary we look at for its filters and names.
_MAX_DICTIONARY = 64 * 1024
_FILTER_NAMES = {b"Fl": b"FlateDecode", b"AHx": b"ASCIIHexDecode", b"A85": b"ASCII85Decode",
                 b"RL": b"RunLengthDecode"}
_DECODED = frozenset(_FILTER_NAMES.values())


def recognise(data: bytes) -> bool:
    # Every object of every message is asked, and most have no "%" in their first KiB at
    # all (text): a memchr-speed find() says so in a fraction of the regex search's time.
    start = data.find(b"%", 0, _HEADER_WINDOW)
    return start >= 0 and _HEADER.search(data, start, _HEADER_WINDOW) is not None


class _Object(NamedTuple):
    number: int
    dictionary: bytes           # what precedes ``stream`` (or the whole object, up to a cap)
    stream: memoryview | None


def unpack(members: bounded.Members, data: bytes, budget: Budget) -> None:
    # The walk over the objects costs about 200 us on 16 KB and finds nothing in a file with
    # no indirect object (every object, stream or /Encrypt it could report needs an
    # ``N G obj``) or with neither a ``stream`` keyword nor /Encrypt. Those literal searches
    # say so first; they spare files that merely carry a %PDF- header, and PDFs with no
    # streams. "obj" goes first: absent, it settles the question in one pass (a precompiled
    # regex scans for a literal's first byte faster than ``in`` does on binary data).
    if _OBJ_WORD(data) is not None and (b"stream" in data or b"/Encrypt" in data):
        _unpack_objects(members, data, budget)


def _unpack_objects(members: bounded.Members, data: bytes, budget: Budget) -> None:
    objects = list(_objects(data))
    if objects and b"/Encrypt" in data and _ENCRYPT.search(data):
        raise ScanIncomplete(Reason.ENCRYPTED, "encrypted PDF")
    file_names = _embedded_file_names(objects)
    for obj in objects:
        if obj.stream is None:
            continue
        members.count()
        filters = _filters(obj.dictionary)
        if obj.number not in file_names and (not filters or filters[0] not in _DECODED):
            continue  # stored as is (an image, say): the PDF's own bytes already show it to the detectors
        name = file_names.get(obj.number) or f"stream-{obj.number}"
        members.unpack(name, lambda raw=obj.stream, filters=filters: _decode(raw, filters, budget),
                       names=(name,) if obj.number in file_names else ())


def _objects(data: bytes) -> Iterator[_Object]:
    """The indirect objects, in file order. A stream's bytes are skipped as a whole (they are
    opaque, ISO 32000-1 §7.3.8), so object-like text inside one is not taken for an object."""
    position = 0
    while True:
        found = _OBJECT.search(data, position)
        if found is None:
            return
        head = data[found.end():found.end() + _MAX_DICTIONARY]
        keyword = _STREAM.search(head)
        object_end = head.find(b"endobj")
        if keyword is None or 0 <= object_end < keyword.start():
            yield _Object(int(found[1]), head[:object_end] if object_end >= 0 else head, None)
            position = found.end()
            continue
        start = found.end() + keyword.end()
        end = data.find(b"endstream", start)
        end = len(data) if end < 0 else end
        stop = end - 2 if data[end - 2:end] == b"\r\n" else end - 1 if data[end - 1:end] in (b"\n", b"\r") else end
        yield _Object(int(found[1]), head[:keyword.start()], memoryview(data)[start:max(start, stop)])
        position = end + len(b"endstream")


def _filters(dictionary: bytes) -> list[bytes]:
    found = _FILTER.search(dictionary)
    if not found:
        return []
    names = [found[1]] if found[1] else _NAME.findall(found[2])
    return [_FILTER_NAMES.get(name, name) for name in names]


def _decode(raw: memoryview, filters: list[bytes], budget: Budget) -> bytes:
    # The stored bytes are part of the PDF, already within max-object-size: only what the
    # filters produce is charged as unpacked.
    data = bytes(raw)
    for name in filters:
        if name == b"FlateDecode":
            data = _inflate(data, budget)
        elif name == b"ASCIIHexDecode":
            digits = re.sub(rb"[^0-9A-Fa-f]", b"", data.split(b">", 1)[0])
            data = bytes.fromhex((digits + b"0" * (len(digits) % 2)).decode())
        elif name == b"ASCII85Decode":
            body = data.strip()
            body = body[2:] if body.startswith(b"<~") else body
            body = body.split(b"~>", 1)[0]
            try:
                data = base64.a85decode(re.sub(rb"\s", b"", body))
            except ValueError as exc:
                raise ScanIncomplete(Reason.CORRUPT, f"bad ASCII85 stream: {exc}") from None
        elif name == b"RunLengthDecode":
            data = _run_length(data, budget)
        else:
            break  # an image codec or LZW: scan the bytes as they are stored
    return data


def _inflate(data: bytes, budget: Budget) -> bytes:
    try:
        return bounded.decompress(lambda: bounded.ZlibDecompressor(15), data, budget)
    except ScanIncomplete as exc:
        if exc.reason is not Reason.CORRUPT:
            raise
    # Some writers omit the zlib header, and readers accept it: try raw deflate.
    return bounded.decompress(lambda: bounded.ZlibDecompressor(-15), data, budget)


def _run_length(data: bytes, budget: Budget) -> bytes:
    """ISO 32000-1 §7.4.5: length byte n < 128 copies n+1 bytes, n > 128 repeats one byte 257-n times."""
    cap = bounded.member_cap(budget)
    out = bytearray()
    pos = runs = 0
    while pos < len(data) and data[pos] != 128:
        n = data[pos]
        if n < 128:
            out += data[pos + 1:pos + 2 + n]
            pos += 2 + n
        else:
            out += data[pos + 1:pos + 2] * (257 - n)
            pos += 2
        runs += 1
        if len(out) > cap:
            raise ScanIncomplete(Reason.LIMIT, f"stream decodes to more than {cap} bytes")
        if runs % 65536 == 0:
            budget.check_time()
    budget.charge(len(out))
    return bytes(out)


def _embedded_file_names(objects: list[_Object]) -> dict[int, str]:
    """Object number of an embedded file's stream -> the file name its specification gives."""
    names: dict[int, str] = {}
    for obj in objects:
        reference = _EMBEDDED_FILE.search(obj.dictionary)
        file_name = _FILE_NAME.search(obj.dictionary)
        if reference and file_name:
            raw = re.sub(rb"\\(.)", rb"\1", file_name[1])
            text = raw[2:].decode("utf-16-be", "replace") if raw.startswith(b"\xfe\xff") else raw.decode("latin-1")
            names[int(reference[1])] = text.replace("\\", "/").rsplit("/", 1)[-1]
    return names
