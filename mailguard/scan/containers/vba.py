"""VBA macro source out of an Office document's module streams ([MS-OVBA]).

Each module stream in a ``VBA`` storage holds compiled p-code, then the module's source
text in a "compressed container" (§2.4.1): a 0x01 signature byte, then chunks of up to
4096 decompressed bytes, each a 2-byte header and either raw bytes or flag bytes followed
by literal bytes and copy tokens. Signatures and YARA rules for macro malware are written
against that source text ("Shell(", "AutoOpen"), so it becomes a child of its stream.

Where the source starts is recorded in the ``dir`` stream (MODULEOFFSET); rather than
parse that, we look for the container directly: the source always begins with
``Attribute VB_`` (§2.3.4.3), so a candidate whose first chunk decodes to that is it.
This also finds source that a tampered ``dir`` points away from.
"""

from __future__ import annotations

import struct

from mailguard.scan.limits import ScanIncomplete
from mailguard.scan.verdict import Reason

_SOURCE_START = b"Attribute VB_"
_CHUNK = 4096
# Macro sources are kilobytes; this caps what a crafted container can make us produce.
MAX_SOURCE = 8 * 1024 * 1024
# Candidate container starts tried per stream before giving up.
_MAX_CANDIDATES = 64


def module_source(stream: bytes, cap: int = MAX_SOURCE) -> bytes | None:
    """The decompressed source text in a module stream, or None when there is none.

    Raises ScanIncomplete(LIMIT) for a source larger than ``cap`` (never a silent cut).
    """
    cap = min(cap, MAX_SOURCE)
    position = stream.find(b"\x01")
    tried = 0
    while 0 <= position and tried < _MAX_CANDIDATES:
        if position + 3 <= len(stream) and struct.unpack_from("<H", stream, position + 1)[0] & 0x7000 == 0x3000:
            tried += 1
            try:
                head, _ = decompress(stream[position:], len(_SOURCE_START))
            except ValueError:
                head = b""
            if head.startswith(_SOURCE_START):
                try:
                    source, complete = decompress(stream[position:], cap)
                except ValueError:
                    return None
                if not complete:
                    raise ScanIncomplete(Reason.LIMIT, f"VBA source larger than {cap} bytes")
                return source
        position = stream.find(b"\x01", position + 1)
    return None


def decompress(container: bytes, cap: int) -> tuple[bytes, bool]:
    """[MS-OVBA] 2.4.1.3.1: (at most ``cap`` decompressed bytes, whether that was all of them).

    Raises ValueError on a malformed container.
    """
    if not container or container[0] != 0x01:
        raise ValueError("not a compressed container")
    out = bytearray()
    pos = 1
    while pos + 2 <= len(container) and len(out) <= cap:
        (header,) = struct.unpack_from("<H", container, pos)
        if header & 0x7000 != 0x3000:
            raise ValueError("bad chunk signature")
        chunk_end = min(pos + (header & 0x0FFF) + 3, len(container))
        pos += 2
        chunk_start = len(out)
        if not header & 0x8000:  # a raw chunk: 4096 bytes as they are
            out += container[pos:pos + _CHUNK]
            pos += _CHUNK
            continue
        while pos < chunk_end and len(out) <= cap:
            flags = container[pos]
            pos += 1
            for bit in range(8):
                if pos >= chunk_end:
                    break
                if not flags & (1 << bit):
                    out.append(container[pos])
                    pos += 1
                    continue
                if pos + 2 > chunk_end:
                    raise ValueError("truncated copy token")
                (token,) = struct.unpack_from("<H", container, pos)
                pos += 2
                # §2.4.1.3.19.1: the offset takes as many bits as the chunk so far needs, at least 4.
                bit_count = max(4, (len(out) - chunk_start - 1).bit_length())
                length = (token & (0xFFFF >> bit_count)) + 3
                offset = (token >> (16 - bit_count)) + 1
                source = len(out) - offset
                if source < chunk_start:
                    raise ValueError("copy token reaches before its chunk")
                for i in range(length):
                    out.append(out[source + i])
        if len(out) - chunk_start > _CHUNK:
            raise ValueError("chunk decompresses to more than 4096 bytes")
    return bytes(out[:cap]), len(out) <= cap and pos >= len(container)
