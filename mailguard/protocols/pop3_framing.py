"""POP3 framing: lines, multi-line responses and byte-stuffing (RFC 1939 §3), with caps.

Everything here works on whole buffers with C-backed ``bytes`` operations (``find``, ``replace``,
``count``): a 100 MB message is framed, de-stuffed and re-stuffed in a few passes at memory speed,
never a Python loop per line.
"""

from __future__ import annotations

import re

from mailguard.errors import RemoteProtocolError

__all__ = [
    "LineTooLong", "ReceiveBuffer", "StreamGuard", "cut_top", "normalise_line_endings", "read_message", "stuff",
    "unstuff",
]

CRLF = b"\r\n"
# A multi-line response ends with a line holding a single dot (RFC 1939 §3).
_TERMINATOR = b"\r\n.\r\n"
_EMPTY_BODY_TERMINATOR = b".\r\n"
# A line starting with a dot: a stuffed line or the terminator.
_DOT_LINE = b"\r\n."
# The same two searches as compiled patterns: in mail text (a dot ends most lines) CPython's
# ``bytes.find`` for these short needles runs at ~1.3 GB/s, while ``re`` jumps from CR to CR with
# memchr, about twice as fast (bench/pop3.py: the search was ~11% of the engine's time).
_FIND_DOT_LINE = re.compile(re.escape(_DOT_LINE)).search
_FIND_TERMINATOR = re.compile(re.escape(_TERMINATOR)).search


class LineTooLong(RemoteProtocolError):
    """A peer sent a line (or a multi-line block) longer than the cap for it."""


class ReceiveBuffer:
    """Bytes received from one peer and not yet framed.

    The only operations are the ones POP3 needs: take one line, take one multi-line block, and
    drop everything (at a STLS switch). Searches resume where the previous one stopped, so a
    block arriving in many small reads is scanned once in total (O(n), a DoS defence as in h11).
    """

    def __init__(self) -> None:
        self._data = bytearray()
        self._searched = 0  # bytes already known to hold no line end / terminator
        #: Whether the last block from ``take_block`` may hold stuffed lines (False: it is
        #: its own de-stuffed form, and ``unstuff`` can be skipped).
        self.block_stuffed = True
        self._dot_seen = False  # a dot-line that is not the terminator is in the pending block

    def __len__(self) -> int:
        return len(self._data)

    def feed(self, data: bytes) -> None:
        self._data += data

    def clear(self) -> int:
        """Discard everything; return how many bytes were thrown away."""
        dropped = len(self._data)
        self._data.clear()
        self._searched = 0
        self._dot_seen = False
        return dropped

    def _cut(self, end: int, drop: int) -> bytes:
        # Copy through a memoryview: slicing the bytearray first would copy twice (bench/pop3.py).
        # The views are released before the bytearray is resized.
        with memoryview(self._data) as view:
            out = bytes(view[:end])
        del self._data[:drop]
        self._searched = 0
        return out

    def take_line(self, max_length: int) -> bytes | None:
        """One line without its line end, or None until it is complete.

        CRLF ends a line; a bare LF is accepted too (with a CR before it stripped), because
        being strict here only turns a sloppy peer into a hang. ``max_length`` counts the line
        end; a longer line raises ``LineTooLong``.
        """
        end = self._data.find(b"\n", self._searched)
        if end < 0:
            if len(self._data) > max_length:
                raise LineTooLong(f"line longer than {max_length} bytes")
            self._searched = len(self._data)
            return None
        if end + 1 > max_length:
            raise LineTooLong(f"line longer than {max_length} bytes")
        line = self._cut(end, end + 1)
        return line[:-1] if line.endswith(b"\r") else line

    def take_block(self, max_length: int) -> bytes | None:
        """The wire bytes of a multi-line body (still stuffed), up to and including the CRLF
        before the terminating dot; the terminator itself is consumed. None until complete.

        ``max_length`` caps the block; a longer one raises ``LineTooLong``.
        """
        data = self._data
        if data[:3] == _EMPTY_BODY_TERMINATOR:
            del data[:3]
            self._searched = 0
            self._dot_seen = False
            self.block_stuffed = False
            return b""
        # One search finds both the terminator and whether any line was stuffed: the first
        # CRLF "." is either the terminator or a dot-line. After a dot-line the rest is searched
        # for the terminator alone, so a hostile server cannot make this loop per line.
        start = max(0, self._searched - 4)
        if self._dot_seen:
            end = _find(_FIND_TERMINATOR, data, start)
        else:
            end = _find(_FIND_DOT_LINE, data, start)
            if end >= 0 and data[end + 3:end + 5] != CRLF:
                if len(data) < end + 5 and CRLF.startswith(bytes(data[end + 3:end + 5])):
                    self._searched = end  # cannot tell yet: look here again with more bytes
                    if len(data) > max_length:
                        raise LineTooLong(f"multi-line response longer than {max_length} bytes")
                    return None
                self._dot_seen = True
                end = _find(_FIND_TERMINATOR, data, end)
        if end < 0:
            if len(data) > max_length:
                raise LineTooLong(f"multi-line response longer than {max_length} bytes")
            self._searched = len(data)
            return None
        if end + 2 > max_length:
            raise LineTooLong(f"multi-line response longer than {max_length} bytes")
        self.block_stuffed = self._dot_seen or data[:1] == b"."
        self._dot_seen = False
        return self._cut(end + 2, end + 5)

    def take_stream_chunk(self) -> tuple[bytes, bool]:
        """For a block too large to hold: hand out what can be passed on now.

        Returns ``(wire_bytes, finished)``. The last four bytes are held back until more arrive,
        since they may be the start of the terminator. On ``finished`` the chunk includes the
        terminator ``CRLF.CRLF`` itself, ready to forward.
        """
        data = self._data
        end = _find(_FIND_TERMINATOR, data, max(0, self._searched - 4))
        if end >= 0:
            return self._cut(end + 5, end + 5), True
        keep = min(len(data), 4)
        return self._cut(len(data) - keep, len(data) - keep), False


def _find(search, data: bytearray, start: int) -> int:  # noqa: ANN001 - a compiled pattern's search
    """Like ``data.find(needle, start)`` with ``search`` the needle's compiled pattern."""
    found = search(data, start)
    return -1 if found is None else found.start()


def unstuff(block: bytes) -> bytes:
    """Wire block (from ``take_block``) -> the message: remove the dot added to lines that start
    with one (RFC 1939 §3)."""
    body = block.replace(b"\r\n..", b"\r\n.")
    if body[:2] == b"..":
        body = body[1:]
    return body


_find_bare_cr = re.compile(rb"\r(?!\n)").search
_find_bare_lf = re.compile(rb"\n(?<!\r\n)").search
# A line starting with a dot that is not stuffed (the terminator is not part of a block).
_find_unstuffed_dot = re.compile(rb"\r\n\.(?!\.)").search


def read_message(block: bytes, stuffed: bool = True) -> tuple[bytes, bool]:
    """The message a multi-line block (from ``take_block``) holds, and whether the block is
    exactly that message's wire form.

    Why (RFC 1939 §3; docs/pitfalls.md#pop3-line-ends-and-dot-stuffing): the proxy frames the
    server's answer on CRLF "." CRLF, but readers do not all split lines alike. poplib splits on
    LF alone, strips a CR that starts a line, and ends the answer at a line that is then ".": a
    bare-LF ``\n.\r\n`` ends the message for it, and what follows becomes the answer to its next
    command. Other readers (Python's email package among them) also end lines at a bare CR, so a
    header line can appear to them inside what the scanner read as one line. And a dot line that
    is not stuffed is ``.x`` to poplib but ``x`` to a reader that follows the RFC. So a block with
    a bare CR or LF, or with such a dot line, is not passed on: it is read once, here (every CR,
    LF or CRLF one line end; ".." loses one dot; ``.x`` and a lone "." stay as they are), that
    reading is what is scanned, and it goes out re-stuffed with CRLF line ends, which every reader
    reads alike (``False``: re-encode). Normalised rather than refused: servers that keep mail
    with bare LFs are sloppy, not hostile, and a refused message could never be fetched through
    the proxy. The common, correct block is its own message's wire form and is forwarded byte
    for byte (``True``). ``stuffed`` False (``ReceiveBuffer.block_stuffed``) says that no line of
    the block starts with a dot.
    """
    # No CR without an LF after it, no LF without a CR before it: two searches that stop at each
    # CR or LF in C (bench/pop3.py: cheaper than counting CRs, LFs and CRLF pairs).
    if _find_bare_cr(block) is None and _find_bare_lf(block) is None:
        if not stuffed:
            return block, True
        if _find_unstuffed_dot(block) is None and (block[:1] != b"." or block[:2] == b".."):
            return unstuff(block), True
    text = block.replace(CRLF, b"\n").replace(b"\r", b"\n").replace(b"\n..", b"\n.")
    if text[:2] == b"..":
        text = text[1:]
    return text.replace(b"\n", CRLF), False


# In a multi-line answer passed on in pieces: a bare CR, a bare LF, or a line that starts with a
# dot not followed by another (an unstuffed line, or a lone "." that is no terminator yet).
_AMBIGUOUS = re.compile(rb"\r(?!\n)|(?<!\r)\n|\r\n\.(?![.\r])")


class StreamGuard:
    """Checks a multi-line answer too large to hold, piece by piece as it is passed on, for what
    ``read_message`` would have to rewrite: anything a client could frame otherwise than the
    proxy. Such an answer cannot be re-encoded once part of it is out, so the driver ends the
    session instead (the client has part of the answer and no terminator: incomplete, never a
    second answer smuggled into the first).

    The pieces are consecutive (``take_stream_chunk``); the last bytes of each are kept so a
    sequence cut between two pieces is seen whole.
    """

    def __init__(self) -> None:
        # The answer starts a line (after its status line): as if CRLF came just before.
        self._tail = b" \r\n"

    def passes(self, piece: bytes) -> bool:
        window = self._tail + piece
        found = _AMBIGUOUS.search(window, 1)
        # A CR or a line-start dot at the very end cannot be judged before the next byte.
        if found is not None and not (found.end() == len(window) and found.group() != b"\n"):
            return False
        self._tail = window[-4:]
        return True


def normalise_line_endings(message: bytes) -> bytes:
    """Every line end as CRLF, and the message ending with one (RFC 1939 §3, §11).

    A message that is already right is returned as the same object (the common case costs two
    ``count`` passes).
    """
    crlf = message.count(CRLF)
    if crlf == message.count(b"\n") == message.count(b"\r") and (not message or message.endswith(CRLF)):
        return message
    fixed = message.replace(CRLF, b"\n").replace(b"\r", b"\n").replace(b"\n", CRLF)
    if fixed and not fixed.endswith(CRLF):
        fixed += CRLF
    return fixed


def stuff(message: bytes) -> bytes:
    """A message -> its multi-line wire form, terminator included (RFC 1939 §3)."""
    message = normalise_line_endings(message)
    wire = message.replace(b"\r\n.", b"\r\n..")
    if wire[:1] == b".":
        wire = b"." + wire
    return wire + _EMPTY_BODY_TERMINATOR


def cut_top(message: bytes, lines: int) -> bytes:
    """What ``TOP msg n`` returns for this message: the header, the blank line and the first
    ``lines`` lines of the body, or the whole message when it has fewer (RFC 1939 §7)."""
    message = normalise_line_endings(message)
    if message.startswith(CRLF):
        body_start = 2
    else:
        head_end = message.find(b"\r\n\r\n")
        if head_end < 0:
            return message  # no body at all: the whole message is header
        body_start = head_end + 4
    end = body_start
    for _ in range(lines):
        nxt = message.find(CRLF, end)
        if nxt < 0:
            return message
        end = nxt + 2
    return message[:end]
