"""Server -> client: framing whole responses, sans I/O.

The reader is a full response parser, not a request/response pairing
(docs/pitfalls.md#responses-at-any-time):
tagged, untagged and continuation responses are recognised on their own, at any
time, with every literal they carry, so unsolicited FETCH/EXISTS/EXPUNGE between a
literal and a tagged OK are framed like any other response.

Every client must end each response where the proxy does, or bytes the proxy passed as
one thing reach the client as another (``* OK {K}`` ahead of a FETCH: imaplib reads a
literal where the grammar has text, and hands the FETCH inside it to its caller). So a
literal is framed only where the grammar of RFC 9051 §9 lets a string start, in a
response that may carry one, announced as imaplib and RFC 7888 §3 both read it
(``{n}`` or ``~{n}`` after SP or "(", outside quoted strings and sections, at the end
of a CRLF line). Every other line that ends in a literal announcement, and every line
with a bare CR, LF or NUL outside a literal, is refused: the session ends
(bench/fuzz_imap.py checks this against imaplib's own reading).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import NamedTuple

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.events import NEED_DATA, NeedData
from mailguard.protocols.imap.framing import LiteralMarker, PieceFramer, literal_at_end, starts_a_string
from mailguard.protocols.imap.limits import DEFAULT_LIMITS, ImapLimits


class ResponseKind(enum.Enum):
    TAGGED = "tagged"
    UNTAGGED = "untagged"
    CONTINUATION = "continuation"


STATUS_WORDS = frozenset({"OK", "NO", "BAD", "BYE", "PREAUTH"})

# Responses whose grammar holds no string, so no literal (RFC 9051 §9: resp-text is text and
# response codes, continue-req is resp-text or base64, capability-data and enable-data are
# atoms, the rest numbers and flags). A line of theirs that ends in "{n}" is one line to a
# reader that follows the grammar and a literal to imaplib (its _get_response checks the end
# of every untagged line): it cannot be framed so that both agree, and ends the session.
TEXT_ONLY_WORDS = STATUS_WORDS | {"CAPABILITY", "ENABLED", "EXISTS", "RECENT", "EXPUNGE", "SEARCH", "SORT", "FLAGS"}

# message-data and the counts of mailbox-data carry a message number; "* FETCH (...)" without
# one is nothing a client can use, and a status response never has one.
_NUMBERED = frozenset({"FETCH", "EXPUNGE", "EXISTS", "RECENT"})
_NONZERO = frozenset({"FETCH", "EXPUNGE"})  # nz-number

# "* 12 FETCH ", "* OK", "a1 OK ". The response name is an atom followed by SP or the line end
# (RFC 9051 §9), of letters and "-" as every response name is: imaplib reads "[A-Z-]+" of it
# and would name "* 1 FETCH.X" a FETCH. A status word may also be followed by "[": clients
# accept "* OK[CAPABILITY ...]" (docs/pitfalls.md#recognising-the-protocol-from-the-greeting),
# and servers that leave that space out do so in tagged replies too ("a1 OK[READ-WRITE] done";
# a tagged response is only ever OK, NO or BAD). Such a line is one line to every reader: imaplib
# refuses it (its tagged pattern wants a space after the name), lenient clients read text.
# A message number is an nz-number (at most ten digits: a number that does not fit 32 bits is
# refused here, before anything converts it). A tag is 1*<ASTRING-CHAR except "+">.
_UNTAGGED = re.compile(rb"\* (?:([0-9]{1,10}) )?([A-Za-z][A-Za-z\-]*)(?= |\r\n|(\[))")
_TAGGED = re.compile(rb"([\x21\x23\x24\x26\x27\x2c-\x5b\x5d-\x7a\x7c-\x7e]+) ([A-Za-z]+)(?= |\r\n|\[)")


class Head(NamedTuple):  # a tuple: one is built per response, and cheaply
    kind: ResponseKind
    tag: bytes | None
    word: str
    number: int | None
    #: the grammar lets this response carry literals, and every reader sees where they start
    literals: bool


@dataclass(frozen=True)
class Response:
    """One complete response: its exact wire bytes and what its first words say."""

    raw: bytes
    kind: ResponseKind
    tag: bytes | None
    #: the response name in upper case: OK/NO/BAD/BYE/PREAUTH, FETCH, EXISTS, CAPABILITY...
    word: str
    #: the message number of "* n EXISTS|EXPUNGE|FETCH|RECENT"
    number: int | None
    #: where each literal's octets lie in ``raw``: (start, end)
    literals: tuple[tuple[int, int], ...] = ()

    @property
    def is_status(self) -> bool:
        return self.word in STATUS_WORDS


def _name(name: bytes) -> tuple[str, bool, str | None]:
    """What a response name says: the word, whether literals may follow, and its number:
    "" none needed, "n" a number, "nz" a non-zero one, None no number allowed."""
    word = name.decode("ascii").upper()
    # imaplib's Untagged_response and Untagged_status take "[A-Z-]+" of the name, up to a
    # space: "* Ok-x {5}" is "O" to it, and no literal; so only upper-case names carry literals
    literals = name.isupper() and word not in TEXT_ONLY_WORDS
    numbered = "nz" if word in _NONZERO else "n" if word in _NUMBERED else None if word in STATUS_WORDS else ""
    known = (word, literals, numbered)
    if len(_NAMES) < 256:  # the names servers send are few; a hostile one's are not kept
        _NAMES[name] = known
    return known


_NAMES: dict[bytes, tuple[str, bool, str | None]] = {}

_CONTINUATION = Head(ResponseKind.CONTINUATION, None, "", None, False)


def parse_head(first_line: bytes) -> tuple[ResponseKind, bytes | None, str, int | None]:
    """Kind, tag, word and number of a response's first line."""
    head = read_head(first_line)
    return head.kind, head.tag, head.word, head.number


def read_head(first_line: bytes) -> Head:
    if first_line[:1] == b"+":
        # continue-req; imaplib takes any line that starts with "+" as one
        return _CONTINUATION
    if first_line[:1] == b"*":
        match = _UNTAGGED.match(first_line)
        if match is None:
            raise RemoteProtocolError(f"malformed untagged response {first_line[:80]!r}")
        digits, name, bracket = match.group(1, 2, 3)
        known = _NAMES.get(name)
        if known is None:
            known = _name(name)
        word, literals, numbered = known
        if bracket and word not in STATUS_WORDS:
            # "* 1 FETCH[..." is a FETCH without data to imaplib, with items to a lenient reader
            raise RemoteProtocolError(f"malformed untagged response {first_line[:80]!r}")
        if digits is None:
            if numbered:
                raise RemoteProtocolError(f"{word} response without a message number: {first_line[:80]!r}")
            return Head(ResponseKind.UNTAGGED, None, word, None, literals)
        number = int(digits)
        if numbered is None or (number == 0 and numbered == "nz"):
            raise RemoteProtocolError(f"{word} response with a number of {number}: {first_line[:80]!r}")
        return Head(ResponseKind.UNTAGGED, None, word, number, literals)
    match = _TAGGED.match(first_line)
    if match is None:
        raise RemoteProtocolError(f"malformed response line {first_line[:80]!r}")
    word = match.group(2).decode("ascii").upper()
    if word not in ("OK", "NO", "BAD"):
        raise RemoteProtocolError(f"tagged response is not OK/NO/BAD: {first_line[:80]!r}")
    return Head(ResponseKind.TAGGED, match.group(1), word, None, False)


def check_response_line(line: bytes) -> None:
    """A response line outside literals: CRLF at its end and nowhere else, no NUL (RFC 9051 §9:
    TEXT-CHAR, ATOM-CHAR and quoted strings exclude CR, LF and NUL). imaplib refuses a line
    without CRLF, but another client may end a line at a bare LF or CR, or a C string at NUL,
    where the proxy would not: such a line can be framed two ways."""
    if not line.endswith(b"\r\n") or line.count(b"\r") != 1 or b"\0" in line:
        raise RemoteProtocolError(f"bare CR, bare LF or NUL in a response line {line[:80]!r}")



#: reads at least this large that land inside a literal are kept as they came (ResponseReader)
KEEP_READS_FROM = 16 * 1024


class ResponseReader(PieceFramer):
    """Frames the byte stream from an IMAP server into ``Response`` events.

    ``receive_data(b"")`` signals EOF; after it ``next_event`` raises if a response
    was cut off, else returns NEED_DATA forever (the session sees the close itself).
    A response that cannot be framed the way every client would frame it raises
    ``RemoteProtocolError``: the session ends rather than pass on bytes clients may read
    differently from the proxy.
    """

    _head: Head | None

    def __init__(self, limits: ImapLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        super().__init__()

    # A response is framed where it lies in the buffer: lines and literals are looked at in
    # place (``_at``: how far), and the whole response is cut out in one copy at its end. A
    # read that lands inside a literal, with nothing else waiting, is kept as it came (a piece)
    # rather than appended to the buffer: a message arriving in many reads is then copied once,
    # by the join at its end. Taking every piece out of the buffer and joining them copied it
    # three times (bench/live.py).

    def receive_data(self, data: bytes) -> None:
        left = self._literal_left
        if left and len(data) >= KEEP_READS_FROM and len(self._buffer) == self._at:
            if self._at:
                self._keep(self._buffer.take(self._at))
                self._at = self._searched = 0
            inside = data if len(data) <= left else data[:left]
            self._keep(inside)
            self._literal_left = left - len(inside)
            data = data[len(inside):]
            if not data:
                return
        super().receive_data(data)

    def _keep(self, piece: bytes) -> None:
        self._pieces.append(piece)
        self._size += len(piece)

    @property
    def unframed(self) -> int:
        return len(self._buffer) - self._at

    def next_event(self) -> Response | NeedData:
        buffer, limits = self._buffer, self.limits
        self._advance(0)  # reads kept as pieces count too
        while True:
            if self._literal_left:
                step = min(len(buffer) - self._at, self._literal_left)
                if step <= 0:
                    return self._need_data()
                self._advance(step)
                self._literal_left -= step
                continue
            start = self._at
            end = buffer.line_end(max(start, self._searched))
            if end < 0:
                if len(buffer) - start > limits.max_response_line:
                    raise RemoteProtocolError(f"server response line longer than {limits.max_response_line} bytes")
                self._searched = len(buffer)
                return self._need_data()
            if end - start > limits.max_response_line:
                raise RemoteProtocolError(f"server response line longer than {limits.max_response_line} bytes")
            line = buffer.peek(start, end)
            check_response_line(line)
            if self._head is None:
                self._head = read_head(line)
            self._advance(end - start)
            marker = literal_at_end(line)
            if marker is None:
                return self._finish()
            self._check_literal(line, marker)
            self._literal_left = marker.size
            offset = self._size + self._at
            self._literals.append((offset, offset + marker.size))

    def _advance(self, count: int) -> None:
        self._at += count
        if self._size + self._at > self.limits.max_response_size:
            raise RemoteProtocolError(f"server response larger than {self.limits.max_response_size} bytes")

    def _check_literal(self, line: bytes, marker: LiteralMarker) -> None:
        assert self._head is not None
        if not self._head.literals:
            raise RemoteProtocolError(
                f"a literal announced where the grammar allows none (RFC 9051 §9): {line[:80]!r}"
            )
        if not marker.sync:
            # RFC 7888 §3: only clients send non-synchronising literals; imaplib reads "{n+}" as
            # text, a lenient reader as a literal.
            raise RemoteProtocolError(f"a non-synchronising literal from the server: {line[:80]!r}")
        if not starts_a_string(line, marker):
            raise RemoteProtocolError(f"a literal announced where no string can start: {line[:80]!r}")
        if marker.size > self.limits.max_response_literal:
            raise RemoteProtocolError(
                f"server announced a {marker.size}-byte literal, more than the "
                f"{self.limits.max_response_literal}-byte cap"
            )

    def _need_data(self) -> NeedData:
        if self._eof and (self._size or len(self._buffer)):
            raise RemoteProtocolError("server closed the connection in the middle of a response")
        return NEED_DATA

    def _finish(self) -> Response:
        head = self._head
        assert head is not None
        raw = self._buffer.take(self._at)
        if self._pieces:
            self._pieces.append(raw)
            raw = b"".join(self._pieces)
        literals = tuple(self._literals) if self._literals else ()
        self._reset()
        return Response(raw=raw, kind=head.kind, tag=head.tag, word=head.word, number=head.number,
                        literals=literals)

    def _reset(self) -> None:
        super()._reset()
        self._literals: list[tuple[int, int]] = []
        #: bytes of the response being framed, at the front of the buffer
        self._at = 0
        #: where the search for the current line's end goes on from
        self._searched = 0
