"""Writing IMAP strings: quoted when safe, a literal otherwise, ``NIL`` for nothing."""

from __future__ import annotations

_QUOTABLE_MAX = 1024


def literal(data: bytes, binary: bool = False) -> bytes:
    """A server literal; ``binary`` makes it literal8 (RFC 3516), which may hold NUL."""
    return (b"~{" if binary else b"{") + str(len(data)).encode() + b"}\r\n" + data


def nstring(value: bytes | None) -> bytes:
    if value is None:
        return b"NIL"
    return string(value)


def string(value: bytes) -> bytes:
    """A quoted string when the bytes allow it (RFC 9051 §4.3: no CR, LF, NUL or 8-bit), else a literal."""
    if len(value) <= _QUOTABLE_MAX and all(0x20 <= b < 0x7F for b in value):
        return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return literal(value)
