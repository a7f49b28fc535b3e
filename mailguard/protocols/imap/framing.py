"""Byte-level IMAP framing shared by both directions: lines, and literals counted by octets.

An IMAP command or response is one or more lines; a line that ends with a literal
announcement (``{n}``, ``{n+}``, ``~{n}``; RFC 9051 §4.3, RFC 7888 §3) is followed by
exactly ``n`` octets, and the command or response continues on the bytes after them.
"A literal is not delimited by CRLF": octets are counted, never lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mailguard.errors import RemoteProtocolError

# RFC 7888 §3: the receiver "MUST check the end of every received line" for
# "{" number ["+"] "}" CRLF; RFC 3516 adds literal8 ("~" before the brace). Every digit is
# taken, however many: imaplib's ".*{(?P<size>\d+)}$" reads "{000…0005}" as five octets, so
# a reader that stopped at 20 digits would frame that line differently from it.
_LITERAL_AT_END = re.compile(rb"(~?)\{([0-9]+)(\+?)\}\r?\n\Z")

# number64 has at most 19 digits (RFC 9051 §9); a longer count (leading zeros aside) is
# bigger than any cap, and is not handed to int(), which refuses more than 4300 digits.
_MAX_DIGITS = 20
TOO_BIG = 10**_MAX_DIGITS

# IMAP data up to a literal announcement (RFC 9051 §9): SP and parentheses, quoted strings
# with their escapes, bracketed sections (which may hold quoted strings), and atoms. Every
# alternative starts with its own byte and every quantifier is possessive, so matching a
# hostile 4 MiB line is one pass with no backtracking.
_QUOTED = rb'"(?:[^"\\\r\n]|\\[^\r\n])*+"'
_SECTION = rb"\[(?:[^\]\"\r\n]|" + _QUOTED + rb")*+\]"
_DATA = re.compile(rb"(?:[ ()]|" + _QUOTED + rb"|" + _SECTION + rb"|[^ ()\"\[\r\n]++)*+")
#: a bracketed section, the quoted strings inside it included ("BODY[HEADER.FIELDS (\"]\")]")
SECTION = re.compile(_SECTION)


@dataclass(frozen=True)
class LiteralMarker:
    size: int
    #: a synchronizing literal: the sender waits for a "+" continuation first
    sync: bool
    #: literal8 (``~{n}``): may carry NUL octets (RFC 3516)
    binary: bool
    #: where the announcement (its "~" or "{") starts in the line
    at: int = field(default=0, compare=False)


def literal_at_end(line: bytes) -> LiteralMarker | None:
    """The literal a line announces at its end, or None; wherever it stands (see ``starts_a_string``)."""
    if not line.endswith(b"}\r\n") and not line.endswith(b"}\n"):
        return None
    match = _LITERAL_AT_END.search(line)
    if match is None:
        return None
    digits = match.group(2).lstrip(b"0") or b"0"
    size = int(digits) if len(digits) <= _MAX_DIGITS else TOO_BIG
    return LiteralMarker(size=size, sync=not match.group(3), binary=bool(match.group(1)), at=match.start())


def starts_a_string(line: bytes, marker: LiteralMarker) -> bool:
    """Whether the announcement at the end of ``line`` stands where a string may start
    (RFC 9051 §9: after SP or "(", outside any quoted string or section).

    "x{5}", an open quoted string ending in "{5}", or "{5}" inside "BODY[HEADER.FIELDS (" is no
    literal to a reader that follows the grammar, but imaplib and RFC 7888 §3's "check the end
    of every line" read one; a line that readers can frame two ways is refused. (The grammar
    allows a literal as a header field name inside a section; no server sends one, so that
    too is refused rather than framed.)
    """
    prefix = line[: marker.at]
    if prefix[-1:] not in (b" ", b"("):
        return False
    if b'"' not in prefix:
        # Without quoted strings a section is open at the end exactly when a "[" follows the
        # last "]"; the common FETCH line is decided with two searches instead of the pattern.
        return prefix.rfind(b"[") < prefix.rfind(b"]") or b"[" not in prefix
    return _DATA.fullmatch(prefix) is not None


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

    def line_end(self, start: int) -> int:
        """Where the line starting at ``start`` ends (after its LF), or -1."""
        end = self._data.find(b"\n", start)
        return -1 if end < 0 else end + 1

    def peek(self, start: int, end: int) -> bytes:
        with memoryview(self._data) as view:
            return bytes(view[start:end])


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
