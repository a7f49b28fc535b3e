"""The server name (SNI) in a TLS ClientHello, read from the first bytes a client sent (sans-I/O).

Transparent mode only knows the original destination's IP address; the name the client means is
in its ClientHello (RFC 6066 §3 ``server_name``). ``parse_client_hello`` takes the bytes peeked
so far and says whether they are a complete ClientHello yet, whether they are TLS at all, and the
host name asked for. Layers: TLS records (RFC 8446 §5.1, content type 22, possibly several
records for one message) -> handshake message (type 1, 24-bit length) -> ClientHello body
(version, random, session id, cipher suites, compression methods) -> extensions -> server_name
(name type 0, host_name).

Only a plausible DNS host name is returned: IP literals (RFC 6066 forbids them in SNI), empty or
non-ASCII names, and names with characters outside letters, digits, ``-``, ``_`` and ``.`` give
``server_name=None``. Nothing here raises on bad input.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = ["INCOMPLETE", "INVALID", "MAX_CLIENT_HELLO", "Hello", "parse_client_hello"]

# A ClientHello with post-quantum key shares is ~2 KB; 16 KiB of handshake (one full record) is
# far beyond any real one and bounds what we peek at.
MAX_CLIENT_HELLO = 16384
_RECORD_HANDSHAKE = 22
_HANDSHAKE_CLIENT_HELLO = 1
_EXT_SERVER_NAME = 0
_HOST_NAME = 0
_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")


@dataclass(frozen=True)
class Hello:
    #: Enough bytes were seen to decide (a full ClientHello, or proof this is not one).
    complete: bool
    #: The bytes are (the start of) a well-formed TLS ClientHello.
    valid: bool = True
    server_name: str | None = None


INCOMPLETE = Hello(complete=False)
INVALID = Hello(complete=True, valid=False)


def parse_client_hello(data: bytes) -> Hello:
    """What ``data`` (the first bytes from the client) says about its ClientHello."""
    handshake = bytearray()
    offset = 0
    needed: int | None = None
    while needed is None or len(handshake) < needed:
        if len(data) < offset + 5:
            return _incomplete_if_plausible(data, offset)
        content_type, major, length = data[offset], data[offset + 1], int.from_bytes(data[offset + 3:offset + 5], "big")
        if content_type != _RECORD_HANDSHAKE or major != 3 or length == 0 or length > 16384 + 256:
            return INVALID
        fragment = data[offset + 5:offset + 5 + length]
        handshake += fragment
        if needed is None and len(handshake) >= 4:
            if handshake[0] != _HANDSHAKE_CLIENT_HELLO:
                return INVALID
            needed = 4 + int.from_bytes(handshake[1:4], "big")
            if needed > MAX_CLIENT_HELLO:
                return INVALID
        if len(fragment) < length:
            if needed is not None and len(handshake) >= needed:
                break
            return INCOMPLETE
        offset += 5 + length
    return _parse_body(bytes(handshake[4:needed]))


def _incomplete_if_plausible(data: bytes, offset: int) -> Hello:
    head = data[offset:offset + 2]
    if head and (head[0] != _RECORD_HANDSHAKE or (len(head) > 1 and head[1] != 3)):
        return INVALID
    return INCOMPLETE


def _parse_body(body: bytes) -> Hello:
    try:
        pos = 2 + 32                                        # legacy_version, random
        pos += 1 + body[pos]                                # legacy_session_id
        pos += 2 + int.from_bytes(body[pos:pos + 2], "big")  # cipher_suites
        pos += 1 + body[pos]                                # legacy_compression_methods
    except IndexError:
        return INVALID
    if pos > len(body):
        return INVALID
    if pos == len(body):
        return Hello(complete=True)                         # no extensions at all
    if pos + 2 > len(body):
        return INVALID
    end = pos + 2 + int.from_bytes(body[pos:pos + 2], "big")
    if end > len(body):
        return INVALID
    pos += 2
    while pos + 4 <= end:
        kind, size = int.from_bytes(body[pos:pos + 2], "big"), int.from_bytes(body[pos + 2:pos + 4], "big")
        pos += 4
        if pos + size > end:
            return INVALID
        if kind == _EXT_SERVER_NAME:
            return Hello(complete=True, server_name=_server_name(body[pos:pos + size]))
        pos += size
    return Hello(complete=True)


def _server_name(ext: bytes) -> str | None:
    if len(ext) < 2:
        return None
    end = min(len(ext), 2 + int.from_bytes(ext[:2], "big"))
    pos = 2
    while pos + 3 <= end:
        name_type, size = ext[pos], int.from_bytes(ext[pos + 1:pos + 3], "big")
        pos += 3
        if pos + size > end:
            return None
        if name_type == _HOST_NAME:
            return _plausible_host(ext[pos:pos + size])
        pos += size
    return None


def _plausible_host(raw: bytes) -> str | None:
    try:
        name = raw.decode("ascii").lower().rstrip(".")
    except UnicodeDecodeError:
        return None
    if not name or len(name) > 253 or not _NAME.fullmatch(name):
        return None
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name
    return None
