"""Streaming mbox reader: one message at a time, in bounded memory, from any byte range.

The file is read in ``READ_SIZE`` blocks and never held whole (not even mapped: mapped pages
count in the process's resident set, and a 5 GB mbox must scan with the same peak memory
as a 50 MB one). A message larger than ``max_size`` is not kept: the reader walks past it,
keeping only its first ``HEAD_SIZE`` bytes so its Message-ID and Subject can be reported.

A message belongs to the byte range in which its ``From_`` line starts. So a file can be
cut into ranges at arbitrary offsets and each range read by a different process: the
messages of all ranges, in range order, are exactly the messages of the file, and their
``(offset, length)`` spans tile it. That is how ``--jobs`` scans one big mbox in parallel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Iterator

from mailguard.mailbox.fromline import MAX_FROM_LINE, is_from_line, unquote

READ_SIZE = 1 << 20        # bytes asked of the OS per read
HEAD_SIZE = 64 * 1024      # bytes kept of a message too big to scan, for its Message-ID and Subject

_SEPARATOR = b"\nFrom "


@dataclass(frozen=True)
class MboxMessage:
    offset: int             # byte offset of its From_ line
    length: int             # bytes from its From_ line to the next one (or the end): what a rewrite copies
    newlines: int           # line ends in those bytes, to number lines without a second pass
    from_line: bytes        # the separator line, with its line end
    content: bytes | None   # the message as delivered (unquoted, without the separating blank line);
                            # None when it is larger than max_size
    size: int               # stored size of the message (without From_ line and separator)
    head: bytes             # its first HEAD_SIZE bytes, unquoted
    problem: str = ""       # why it is damaged, e.g. truncated; "" when whole


class NotAnMbox(ValueError):
    """The range does not start with a From_ line where one is required."""


class _Window:
    """The bytes of ``[base, base + len(buf))`` of the stream, refilled in blocks."""

    def __init__(self, stream: BinaryIO, base: int) -> None:
        self.stream = stream
        self.base = base
        self.buf = bytearray()
        self.eof = False

    @property
    def end(self) -> int:
        return self.base + len(self.buf)

    def fill(self, keep_from: int) -> None:
        """Drop bytes before absolute offset ``keep_from`` and read one more block."""
        drop = keep_from - self.base
        if drop > 0:
            del self.buf[:drop]
            self.base = keep_from
        block = self.stream.read(READ_SIZE)
        if not block:
            self.eof = True
        self.buf += block

    def find(self, needle: bytes, start: int) -> int:
        """Absolute offset of ``needle`` at or after absolute ``start`` in the window, or -1."""
        found = self.buf.find(needle, max(0, start - self.base))
        return -1 if found < 0 else self.base + found

    def slice(self, start: int, stop: int) -> bytes:
        return bytes(self.buf[start - self.base:stop - self.base])

    def count_newlines(self, start: int, stop: int) -> int:
        return self.buf.count(b"\n", start - self.base, stop - self.base)


def read_mbox(stream: BinaryIO, *, max_size: int, start: int = 0, stop: int | None = None,
              ) -> Iterator[MboxMessage]:
    """The messages whose From_ line starts in ``[start, stop)`` of ``stream``.

    ``stream`` must be positioned at ``start - 1`` (or at 0 when ``start`` is 0) so the line
    end before a separator can be seen. With ``start == 0`` the data must begin with a
    From_ line (else ``NotAnMbox``); otherwise the range begins at its first separator.
    """
    window = _Window(stream, max(0, start - 1))
    window.fill(window.base)
    if start == 0:
        line_end = _line_end(window, 0)
        if line_end is None or not is_from_line(window.slice(0, line_end)):
            raise NotAnMbox("does not begin with an mbox From_ line")
        current: int | None = 0
    else:
        current = _next_separator(window, start - 1)
    while current is not None and (stop is None or current < stop):
        message, current = _read_one(window, current, max_size)
        yield message


def _line_end(window: _Window, line_start: int) -> int | None:
    """Offset just past the line end of the line at ``line_start`` (or the end of the data);
    None when that line is longer than a From_ line may be."""
    while True:
        newline = window.find(b"\n", line_start)
        if newline >= 0 and newline - line_start < MAX_FROM_LINE:
            return newline + 1
        if window.end - line_start >= MAX_FROM_LINE:
            return None
        if window.eof:
            return window.end
        window.fill(window.base)


def _next_separator(window: _Window, search_from: int) -> int | None:
    """Offset of the first From_ line after the line end at or after ``search_from``; None at the end."""
    while True:
        hit = window.find(_SEPARATOR, search_from)
        if hit < 0:
            if window.eof:
                return None
            # keep the tail: a separator may straddle the block boundary
            search_from = max(search_from, window.end - len(_SEPARATOR))
            window.fill(search_from)
            continue
        line_start = hit + 1
        line_end = _line_end(window, line_start)
        if line_end is not None and is_from_line(window.slice(line_start, line_end)):
            return line_start
        search_from = line_start


def _read_one(window: _Window, offset: int, max_size: int) -> tuple[MboxMessage, int | None]:
    """The message whose From_ line is at ``offset``, and the offset of the next one."""
    from_end = _line_end(window, offset)
    assert from_end is not None  # callers only pass offsets of validated From_ lines
    from_line = window.slice(offset, from_end)
    head = b""  # set once the message is known to be too big to keep
    newlines = 0
    kept_from: int | None = offset  # None once the message has proved too big to keep
    search_from = from_end - 1
    while True:
        hit = window.find(_SEPARATOR, search_from)
        if hit >= 0:
            line_start = hit + 1
            line_end = _line_end(window, line_start)
            if line_end is not None and is_from_line(window.slice(line_start, line_end)):
                following: int | None = line_start
                break
            search_from = line_start
            continue
        if window.eof:
            following = None
            break
        search_from = max(search_from, window.end - len(_SEPARATOR))
        if kept_from is not None and window.end - from_end > max(max_size, HEAD_SIZE) + len(_SEPARATOR):
            head = unquote(window.slice(from_end, from_end + HEAD_SIZE))
            kept_from = None
        if kept_from is None:
            # over-sized: count what leaves the window so line numbers stay right
            newlines += window.count_newlines(max(window.base, offset), search_from)
            window.fill(search_from)
        else:
            window.fill(kept_from)
    end = following if following is not None else window.end
    newlines += window.count_newlines(max(window.base, offset), end)
    content_end = end - _separator_length(window, max(window.base, from_end), end)
    if kept_from is not None and content_end - from_end > max_size:
        head = unquote(window.slice(from_end, min(content_end, from_end + HEAD_SIZE)))
        kept_from = None
    if kept_from is None:
        content = None
    else:
        content = unquote(window.slice(from_end, content_end))
        head = content[:HEAD_SIZE]
    problem = _damage(window, content, following is None, end)
    message = MboxMessage(offset=offset, length=end - offset, newlines=newlines, from_line=from_line,
                          content=content, size=content_end - from_end, head=head, problem=problem)
    return message, following


def _separator_length(window: _Window, start: int, end: int) -> int:
    """Length of the blank line that separates a message from the next From_ line (RFC 4155)."""
    tail = window.slice(max(start, end - 4), end)
    if tail.endswith(b"\r\n\r\n"):
        return 2
    if tail.endswith(b"\n\n"):
        return 1
    return 0


def _damage(window: _Window, content: bytes | None, is_last: bool, end: int) -> str:
    """Why the last message of a file looks cut off; "" when it looks whole.

    Only the last message can be told apart: a cut in the middle of a file leaves a
    shorter message followed by a valid separator.
    """
    if not is_last:
        return ""
    if window.slice(end - 1, end) != b"\n":
        return "truncated mbox: the last message ends in the middle of a line"
    if content is not None and content.strip() and b"\n\n" not in content and b"\n\r\n" not in content:
        return "truncated mbox: the last message ends inside its header"
    return ""
