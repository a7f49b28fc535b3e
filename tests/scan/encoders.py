"""Independent encoders for the test corpus: what mail programs write, built from the specs.

They are deliberately written without mailguard's decoders so a decoder bug cannot cancel
itself out in a round trip.
"""

from __future__ import annotations

import base64
import binascii

_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_HQX = b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr"


def b64_lines(data: bytes, width: int = 76, nl: bytes = b"\r\n") -> bytes:
    text = base64.b64encode(data)
    return b"".join(text[i:i + width] + nl for i in range(0, len(text), width))


def uuencode(data: bytes, name: str, nl: bytes = b"\n") -> bytes:
    """POSIX uuencode: ``begin 644 name``, 45-byte lines, a zero-length line, ``end``."""
    lines = [f"begin 644 {name}".encode()]
    lines += [binascii.b2a_uu(data[i:i + 45], backtick=True).rstrip(b"\n") for i in range(0, len(data), 45)]
    lines += [b"`", b"end"]
    return nl.join(lines) + nl


def yenc(data: bytes, name: str, nl: bytes = b"\r\n", line: int = 128) -> bytes:
    """yEnc 1.3: +42, with NUL, LF, CR and ``=`` escaped as ``=`` and +64."""
    out = bytearray()
    for byte in data:
        shifted = (byte + 42) % 256
        if shifted in (0x00, 0x0A, 0x0D, 0x3D):
            out += bytes((0x3D, (shifted + 64) % 256))
        else:
            out.append(shifted)
    body = nl.join(bytes(out[i:i + line]) for i in range(0, len(out), line))
    return (f"=ybegin line={line} size={len(data)} name={name}".encode() + nl + body + nl
            + f"=yend size={len(data)}".encode() + nl)


def _crc_binhex(data: bytes) -> bytes:
    """CRC-16/XMODEM as BinHex 4.0 uses it (RFC 1741)."""
    return binascii.crc_hqx(data + b"\0\0", 0).to_bytes(2, "big")


def binhex(data: bytes, name: str, nl: bytes = b"\r\n") -> bytes:
    """BinHex 4.0 (RFC 1741) with an empty resource fork; 0x90 is run-length escaped."""
    raw_name = name.encode("mac_roman", "replace")
    header = (bytes((len(raw_name),)) + raw_name + b"\0" + b"BINA" + b"mgrd" + b"\0\0"
              + len(data).to_bytes(4, "big") + (0).to_bytes(4, "big"))
    stream = header + _crc_binhex(header) + data + _crc_binhex(data) + _crc_binhex(b"")
    stream = stream.replace(b"\x90", b"\x90\x00")
    text = base64.b64encode(stream).rstrip(b"=").translate(bytes.maketrans(_B64, _HQX))
    text = b":" + text + b":"
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    return b"(This file must be converted with BinHex 4.0)" + nl + nl.join(lines) + nl
