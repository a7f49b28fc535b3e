"""Client -> server: framing whole commands, sans I/O.

The proxy answers a client's synchronising literal itself (``+``) and collects the whole command
before anything goes upstream, as duesee/imap-proxy does (docs/pitfalls.md#imap-literals): a
FETCH is only understood once all of it is known, and our own caps replace the server's
``[TOOBIG]``. After ``IDLE`` or ``AUTHENTICATE`` the client's lines are continuation data, not
commands (RFC 2177 §3, RFC 9051 §6.2.2), so ``DONE`` is never mistaken for a tag. After
``STARTTLS`` the reader pauses: whatever the client sent behind it is injection (RFC 9051
§6.2.1) and the session must look at ``buffered``.

APPEND is the exception to collecting whole commands: its literal is the message being
uploaded, as large as ``max_append_literal``, and nothing in it changes what the command
means. It is handed out as it comes (``AppendPart`` up to each literal announcement, then
``LiteralChunk``s), so the session streams it to the server and memory stays at what is
buffered, not the message. The session, not the reader, answers a synchronising literal's
``+`` then: only once the server has said ``+`` to it (RFC 9051 §7.5).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.imap.framing import LiteralMarker, PieceFramer, literal_at_end, starts_a_string
from mailguard.protocols.imap.limits import DEFAULT_LIMITS, ImapLimits
from mailguard.protocols.events import NEED_DATA, NeedData

# tag = 1*<any ASTRING-CHAR except "+">; the command name is an atom; "UID" is a prefix.
_HEAD = re.compile(rb"^([^\s(){%*\"\\+]+) ([A-Za-z][A-Za-z0-9\-]*)(?: ([A-Za-z][A-Za-z0-9\-]*))?")


class ReaderState(enum.Enum):
    #: expecting a tagged command
    COMMAND = "command"
    #: inside IDLE or AUTHENTICATE: lines are continuation data for ``continuation_tag``
    CONTINUATION = "continuation"
    #: after STARTTLS, until ``resume()`` once TLS is up
    PAUSED = "paused"


@dataclass(frozen=True)
class Command:
    raw: bytes
    tag: bytes
    #: upper case, with the UID prefix kept: "FETCH", "UID FETCH", "LOGIN"
    name: str
    #: offset in ``raw`` just after the command name, where the arguments start
    args_at: int

    @property
    def args(self) -> bytes:
        """The arguments with the final line end removed."""
        return self.raw[self.args_at :].rstrip(b"\r\n").lstrip(b" ")


@dataclass(frozen=True)
class ContinuationData:
    """A line sent after a "+" of IDLE or AUTHENTICATE: ``DONE``, a SASL response, ``*``."""

    raw: bytes
    tag: bytes


@dataclass(frozen=True)
class Reply:
    """Bytes the reader answers locally: a "+" for a literal, or a rejection of an oversize one."""

    data: bytes
    #: the command this ends, or None for a "+"
    ends_tag: bytes | None = None


@dataclass(frozen=True)
class AppendPart:
    """Bytes of an APPEND, up to a literal announcement (``literal``) or to its end (None)."""

    tag: bytes
    data: bytes
    #: the literal announced at the end of ``data``: ``LiteralChunk``s of it follow
    literal: LiteralMarker | None
    #: the first part of this command
    first: bool


@dataclass(frozen=True)
class LiteralChunk:
    """Octets of an APPEND literal, as they arrived."""

    tag: bytes
    data: bytes


ClientEvent = Command | ContinuationData | Reply | AppendPart | LiteralChunk

_LITERAL_GO_AHEAD = b"+ Ready for literal data\r\n"


def check_command_line(line: bytes) -> None:
    """A client line outside literals holds no CR but the one before its LF, and no NUL
    (RFC 9051 §9). A server that ends lines at a bare CR would read two commands where the
    proxy judged one. (A bare LF ends a line for the proxy as it does for Dovecot.)"""
    body = line[:-2] if line.endswith(b"\r\n") else line[:-1]
    if b"\r" in body or b"\0" in body:
        raise RemoteProtocolError(f"bare CR or NUL in a command line {line[:80]!r}")


class CommandReader(PieceFramer):
    _head: tuple[bytes, str, int] | None  # tag, command name, where its arguments start

    def __init__(self, limits: ImapLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.state = ReaderState.COMMAND
        self.continuation_tag: bytes | None = None
        self._continuation_once = False
        super().__init__()

    def resume(self) -> None:
        """Back to reading commands after the STARTTLS switch."""
        if self.state is ReaderState.PAUSED:
            self.state = ReaderState.COMMAND

    def command_completed(self, tag: bytes) -> None:
        """The server ended ``tag``: an IDLE or AUTHENTICATE it belongs to is over."""
        if self.state is ReaderState.CONTINUATION and tag == self.continuation_tag:
            self.state = ReaderState.COMMAND
            self.continuation_tag = None

    def next_event(self) -> ClientEvent | NeedData:
        while True:
            if self.state is ReaderState.PAUSED:
                return NEED_DATA
            if self.state is ReaderState.CONTINUATION:
                line = self._buffer.take_line(self.limits.max_continuation_line, "continuation line")
                if line is None:
                    return self._need_data()
                check_command_line(line)
                assert self.continuation_tag is not None
                event = ContinuationData(raw=line, tag=self.continuation_tag)
                if self._continuation_once:
                    self.state, self.continuation_tag = ReaderState.COMMAND, None
                return event
            if self._literal_left:
                chunk = self._buffer.take(self._literal_left)
                if not chunk:
                    return self._need_data()
                self._literal_left -= len(chunk)
                if self._streaming:
                    assert self._head is not None
                    return LiteralChunk(self._head[0], chunk)
                if not self._discarding:
                    self._append(chunk)
                continue
            line = self._buffer.take_line(self.limits.max_command_line, "command line")
            if line is None:
                return self._need_data()
            check_command_line(line)
            if self._head is None:
                if not line.strip():
                    continue  # a stray empty line between commands is harmless
                match = _HEAD.match(line)
                if match is None:
                    raise RemoteProtocolError(f"malformed command {line[:80]!r}")
                tag, name = match.group(1), match.group(2).decode("ascii").upper()
                end = match.end(2)
                if name == "UID" and match.group(3):
                    name, end = "UID " + match.group(3).decode("ascii").upper(), match.end(3)
                self._head = (tag, name, end)
            if not self._discarding:
                self._append(line)
            marker = literal_at_end(line)
            if marker is None:
                if self._discarding:
                    return self._refuse(sync=False)
                if self._streaming:
                    return self._append_part(None)
                return self._finish()
            if not starts_a_string(line, marker):
                # The proxy and the server would frame the rest of the stream differently.
                raise RemoteProtocolError(f"a literal announced where no string can start: {line[:80]!r}")
            if self._head[1] == "APPEND" and not self._discarding:
                if marker.size <= self.limits.max_append_literal:
                    self._literal_left = marker.size
                    return self._append_part(marker)
                if self._streaming:
                    # Part of this APPEND is at the server already: no NO can take it back.
                    raise RemoteProtocolError(f"APPEND literal of {marker.size} bytes is over "
                                              f"{self.limits.max_append_literal}")
            cap = self._literal_cap()
            if marker.size > cap or (not self._discarding and self._size + marker.size > self.limits.max_command_size):
                if marker.sync:
                    # RFC 7888 §4 / RFC 9051 §4.3: refuse instead of sending "+"; the client
                    # then sends nothing more of this command.
                    return self._refuse(sync=True)
                self._discarding = True
            self._literal_left = marker.size
            if marker.sync and not self._discarding:
                return Reply(_LITERAL_GO_AHEAD)

    def _literal_cap(self) -> int:
        assert self._head is not None
        if self._head[1] == "APPEND":
            return self.limits.max_append_literal
        return self.limits.max_command_literal

    def _append_part(self, literal: LiteralMarker | None) -> AppendPart:
        assert self._head is not None
        tag = self._head[0]
        part = AppendPart(tag, b"".join(self._pieces), literal, first=not self._streaming)
        self._pieces, self._size = [], 0
        self._streaming = literal is not None
        if literal is None:
            self._reset()
        return part

    def literal_refused(self) -> None:
        """The server answered a streamed APPEND's synchronising literal with its tagged result
        instead of ``+``: the client sends no literal, and the command is over."""
        self._reset()

    def _append(self, piece: bytes) -> None:
        self._size += len(piece)
        self._pieces.append(piece)

    def _need_data(self) -> NeedData:
        if self._eof and (self._size or len(self._buffer) or self._head is not None):
            raise RemoteProtocolError("client closed the connection in the middle of a command")
        return NEED_DATA

    def _refuse(self, sync: bool) -> Reply:
        assert self._head is not None
        tag = self._head[0]
        self._reset()
        # A refused synchronising literal was never sent: NO. A non-synchronising one was
        # read and dropped: BAD, as RFC 7888 §5 asks of LITERAL- servers.
        status = b"NO" if sync else b"BAD"
        return Reply(tag + b" " + status + b" [TOOBIG] Literal too large for this proxy\r\n", ends_tag=tag)

    def _finish(self) -> Command:
        assert self._head is not None
        tag, name, args_at = self._head
        raw = b"".join(self._pieces)
        self._reset()
        if name == "IDLE" or name == "AUTHENTICATE":
            self.state, self.continuation_tag = ReaderState.CONTINUATION, tag
            self._continuation_once = name == "IDLE"
        elif name == "STARTTLS":
            self.state = ReaderState.PAUSED
        return Command(raw=raw, tag=tag, name=name, args_at=args_at)

    def _reset(self) -> None:
        super()._reset()
        #: the command is refused: its remaining bytes are read and dropped (RFC 7888 §4)
        self._discarding = False
        #: an APPEND being handed out as it comes (AppendPart, LiteralChunk)
        self._streaming = False
