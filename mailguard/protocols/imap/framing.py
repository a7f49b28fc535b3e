"""Byte-level IMAP framing shared by both directions: lines, and literals counted by octets.

An IMAP command or response is one or more lines; a line that ends with a literal
announcement (``{n}``, ``{n+}``, ``~{n}``; RFC 9051 §4.3, RFC 7888 §3) is followed by
exactly ``n`` octets, and the command or response continues on the bytes after them.
"A literal is not delimited by CRLF": octets are counted, never lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailguard.errors import RemoteProtocolError

# RFC 7888 §3: the receiver "MUST check the end of every received line" for
# "{" number ["+"] "}" CRLF; RFC 9051 adds literal8 ("~" before the brace). number64
# has at most 19 digits; 20 digits are read so an absurd size is refused by the cap,
# not misread as text.
_LITERAL_AT_END = re.compile(rb"(~?)\{([0-9]{1,20})(\+?)\}\r?\n\Z")


@dataclass(frozen=True)
class LiteralMarker:
    size: int
    #: a synchronizing literal: the sender waits for a "+" continuation first
    sync: bool
    #: literal8 (``~{n}``): may carry NUL octets (RFC 3516)
    binary: bool


def literal_at_end(line: bytes) -> LiteralMarker | None:
    """The literal a line announces at its end, or None."""
    if not line.endswith(b"}\r\n") and not line.endswith(b"}\n"):
        return None
    match = _LITERAL_AT_END.search(line)
    if match is None:
        return None
    return LiteralMarker(size=int(match.group(2)), sync=not match.group(3), binary=bool(match.group(1)))


class ReceiveBuffer:
    """Bytes received and not yet framed; finding a line end is O(n) over the whole stream."""

    def __init__(self) -> None:
        self._data = bytearray()
        # Where the search for the next LF resumes, so a line that trickles in one byte at a
        # time is not rescanned from its start on every call (h11's _receivebuffer idea).
        self._searched = 0

    def __len__(self) -> int:
        return len(self._data)

    def feed(self, data: bytes) -> None:
        self._data += data

    def take_line(self, cap: int, what: str) -> bytes | None:
        """The next line including its line end, or None when it is not complete yet."""
        end = self._data.find(b"\n", self._searched)
        if end < 0:
            self._searched = len(self._data)
            if len(self._data) > cap:
                raise RemoteProtocolError(f"{what} longer than {cap} bytes")
            return None
        if end + 1 > cap:
            raise RemoteProtocolError(f"{what} longer than {cap} bytes")
        with memoryview(self._data) as view:  # one copy, not a bytearray slice and then bytes
            line = bytes(view[: end + 1])
        del self._data[: end + 1]
        self._searched = 0
        return line

    def take(self, count: int) -> bytes:
        """Up to ``count`` bytes from the front."""
        with memoryview(self._data) as view:
            chunk = bytes(view[:count])
        del self._data[:count]
        self._searched = 0
        return chunk

    def take_all(self) -> bytes:
        return self.take(len(self._data))


class PieceFramer:
    """What the command and the response reader share: the bytes received and not yet framed,
    the pieces of the item being framed (lines and literals), and dropping all of it at a
    STARTTLS switch (RFC 9051 §6.2.1: nothing read before the switch may be used after it)."""

    def __init__(self) -> None:
        self._buffer = ReceiveBuffer()
        self._eof = False
        self._reset()

    def receive_data(self, data: bytes) -> None:
        """``b""`` signals EOF."""
        if not data:
            self._eof = True
        self._buffer.feed(data)

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned, including a partial item."""
        return len(self._buffer) + self._size

    @property
    def unframed(self) -> int:
        """Bytes received and not looked at yet (for backpressure)."""
        return len(self._buffer)

    def discard_buffered(self) -> bytes:
        """Drop everything not yet returned (the STARTTLS switch)."""
        dropped = b"".join(self._pieces) + self._buffer.take_all()
        self._reset()
        return dropped

    def _reset(self) -> None:
        self._pieces: list[bytes] = []
        self._size = 0
        self._head = None
        self._literal_left = 0
