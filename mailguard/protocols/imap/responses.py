"""Server -> client: framing whole responses, sans I/O.

The reader is a full response parser, not a request/response pairing
(docs/pitfalls.md#responses-at-any-time):
tagged, untagged and continuation responses are recognised on their own, at any
time, with every literal they carry, so unsolicited FETCH/EXISTS/EXPUNGE between a
literal and a tagged OK are framed like any other response.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.imap.framing import PieceFramer, literal_at_end
from mailguard.protocols.imap.limits import DEFAULT_LIMITS, ImapLimits


class Kind(enum.Enum):
    TAGGED = "tagged"
    UNTAGGED = "untagged"
    CONTINUATION = "continuation"


STATUS_WORDS = frozenset({"OK", "NO", "BAD", "BYE", "PREAUTH"})

# "* 12 FETCH", "* OK", "a1 OK", "+ go ahead"
_HEAD = re.compile(rb"^(\*|\+|[^\s(){%*\"\\\]]+)(?: ([0-9]+))?(?: ?([A-Za-z][A-Za-z0-9.\-]*))?")


@dataclass(frozen=True)
class Response:
    """One complete response: its exact wire bytes and what its first words say."""

    raw: bytes
    kind: Kind
    tag: bytes | None
    #: the response name in upper case: OK/NO/BAD/BYE/PREAUTH, FETCH, EXISTS, CAPABILITY...
    word: str
    #: the message number of "* n EXISTS|EXPUNGE|FETCH|RECENT"
    number: int | None

    @property
    def is_status(self) -> bool:
        return self.word in STATUS_WORDS


def parse_head(first_line: bytes) -> tuple[Kind, bytes | None, str, int | None]:
    match = _HEAD.match(first_line)
    if match is None:
        raise RemoteProtocolError(f"malformed response line {first_line[:80]!r}")
    lead, number, word = match.group(1), match.group(2), match.group(3)
    if lead == b"+":
        return Kind.CONTINUATION, None, "", None
    kind = Kind.UNTAGGED if lead == b"*" else Kind.TAGGED
    if kind is Kind.TAGGED and number is not None:
        # a tagged response never carries a number; "a1 5 OK" is nonsense
        raise RemoteProtocolError(f"malformed tagged response {first_line[:80]!r}")
    name = word.decode("ascii").upper() if word else ""
    if kind is Kind.TAGGED and name not in ("OK", "NO", "BAD"):
        raise RemoteProtocolError(f"tagged response is not OK/NO/BAD: {first_line[:80]!r}")
    return kind, None if kind is Kind.UNTAGGED else lead, name, int(number) if number else None


class NeedData(enum.Enum):
    NEED_DATA = "need-data"


NEED_DATA = NeedData.NEED_DATA


class ResponseReader(PieceFramer):
    """Frames the byte stream from an IMAP server into ``Response`` events.

    ``receive_data(b"")`` signals EOF; after it ``next_event`` raises if a response
    was cut off, else returns NEED_DATA forever (the session sees the close itself).
    """

    _head: tuple[Kind, bytes | None, str, int | None] | None  # kind, tag, word, number

    def __init__(self, limits: ImapLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        super().__init__()

    def next_event(self) -> Response | NeedData:
        while True:
            if self._literal_left:
                chunk = self._buffer.take(self._literal_left)
                if not chunk:
                    return self._need_data()
                self._append(chunk)
                self._literal_left -= len(chunk)
                continue
            line = self._buffer.take_line(self.limits.max_response_line, "server response line")
            if line is None:
                return self._need_data()
            if self._head is None:
                self._head = parse_head(line)
            self._append(line)
            kind, _, word, _ = self._head
            # Status responses and continuation requests carry text, never a literal:
            # "* OK [ALERT] send {5}" must not make us wait for five octets.
            if kind is not Kind.CONTINUATION and word not in STATUS_WORDS:
                marker = literal_at_end(line)
                if marker is not None:
                    if marker.size > self.limits.max_response_literal:
                        raise RemoteProtocolError(
                            f"server announced a {marker.size}-byte literal, more than the "
                            f"{self.limits.max_response_literal}-byte cap"
                        )
                    # Servers never send a non-synchronising literal (RFC 7888 §3); the octet
                    # count is what frames it either way, so it is read the same.
                    self._literal_left = marker.size
                    continue
            return self._finish()

    def _append(self, piece: bytes) -> None:
        self._size += len(piece)
        if self._size > self.limits.max_response_size:
            raise RemoteProtocolError(f"server response larger than {self.limits.max_response_size} bytes")
        self._pieces.append(piece)

    def _need_data(self) -> NeedData:
        if self._eof and (self._size or len(self._buffer)):
            raise RemoteProtocolError("server closed the connection in the middle of a response")
        return NEED_DATA

    def _finish(self) -> Response:
        assert self._head is not None
        kind, tag, word, number = self._head
        raw = b"".join(self._pieces)
        self._reset()
        return Response(raw=raw, kind=kind, tag=tag, word=word, number=number)
