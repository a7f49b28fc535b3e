"""SZDD files: what Microsoft's ``compress.exe`` makes (``SETUP.EX_``, ``FILE.DL_``).

Header: ``SZDD\\x88\\xf0\\x27\\x33``, the mode ``A``, the last character of the original name
(the ``_`` replaces it), and the uncompressed size. Then LZSS: a flag byte whose bits,
lowest first, say literal (1) or match (0); a match is two bytes holding a 12-bit window
position and a 4-bit length minus 3, in a 4096-byte window filled with spaces whose
write position starts at 4096 - 16. The output is capped (member cap) as it grows.
"""

from __future__ import annotations

import struct

from mailguard.scan.containers import bounded
from mailguard.scan.limits import Budget, ScanIncomplete
from mailguard.scan.verdict import Reason

MAGIC = b"SZDD\x88\xf0\x27\x33"
_HEADER = 14
_WINDOW = 4096
_GROUPS_PER_TIME_CHECK = 8192  # a group (flag byte and up to 8 tokens) yields at most 144 bytes


def recognise(data: bytes) -> bool:
    return data[:8] == MAGIC and data[8:9] == b"A" and len(data) >= _HEADER


def unpack(members: bounded.Members, data: bytes, budget: Budget) -> None:
    missing = data[9:10].decode("latin-1")
    (size,) = struct.unpack_from("<I", data, 10)
    members.count()
    members.unpack(_original_name(members, missing), lambda: _expand(data[_HEADER:], size, budget))


def _original_name(members: bounded.Members, missing: str) -> str:
    for name in members.parent.names:
        base = name.replace("\\", "/").rsplit("/", 1)[-1]
        if base.endswith("_") and missing.isprintable() and missing not in ("\x00", ""):
            return base[:-1] + missing
    return "data"


def _expand(packed: bytes, size: int, budget: Budget) -> bytes:
    cap = bounded.member_cap(budget)
    if size > cap:
        raise ScanIncomplete(Reason.LIMIT, f"member unpacks to more than {cap} bytes")
    window = bytearray(b" " * _WINDOW)
    write = _WINDOW - 16
    out = bytearray()
    pos = groups = 0
    while pos < len(packed) and len(out) < size:
        groups += 1
        if groups % _GROUPS_PER_TIME_CHECK == 0:
            budget.check_time()
        flags = packed[pos]
        pos += 1
        for bit in range(8):
            if pos >= len(packed) or len(out) >= size:
                break
            if flags & (1 << bit):
                byte = packed[pos]
                pos += 1
                out.append(byte)
                window[write] = byte
                write = (write + 1) % _WINDOW
            else:
                if pos + 2 > len(packed):
                    break
                low, high = packed[pos], packed[pos + 1]
                pos += 2
                source = low | (high & 0xF0) << 4
                for k in range((high & 0x0F) + 3):
                    byte = window[(source + k) % _WINDOW]
                    out.append(byte)
                    window[write] = byte
                    write = (write + 1) % _WINDOW
    if len(out) < size:
        raise ScanIncomplete(Reason.CORRUPT, "SZDD data ends before the size its header gives")
    budget.charge(size)
    return bytes(out[:size])
