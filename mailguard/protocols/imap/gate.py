"""The default-deny gate of one IMAP session, both directions, sans I/O.

Client to server: a command goes on only when it is on the allow-list of a state the session may
be in (allowlist.py), with a SASL mechanism we offer and, for FETCH, only items and modifiers we
know. Server to client: an untagged response goes on only when it is of a kind that some command
on the allow-list asks for (allowlist.RESPONSES, whatever is in flight: RFC 9051 §7 lets a server
send most of them at any time), framed as every client frames it, and FETCH data only with the
items a client may be handed (fetch_filter.py).
The session's driver (proxy/imap.py) feeds it commands and responses and sends what it says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.imap.allowlist import (
    SessionStates, fetch_refusal, mechanism_refusal, refusal, unknown_response,
)
from mailguard.protocols.imap.commands import Command, ContinuationData
from mailguard.protocols.imap.fetch import FetchRequest
from mailguard.protocols.imap.fetch_filter import AskedItems, filter_fetch
from mailguard.protocols.imap.fetch_response import FetchData, parse_fetch_response
from mailguard.protocols.imap.framing import literal_at_end
from mailguard.protocols.imap.responses import STATUS_WORDS, ResponseKind, Response

#: RFC 4978: after COMPRESS every byte would be deflated past our parser
COMPRESS_REFUSAL = b"NO COMPRESS is not available through this proxy\r\n"

#: what a client may send after a continuation request: IDLE's DONE (RFC 2177 §3), a SASL
#: response in base64 or "*" to cancel (RFC 9051 §6.2.2); anything else could be a command
#: slipped past the allow-list to a lenient server
_CONTINUATIONS = {
    "IDLE": re.compile(rb"(?i:DONE)\r?\n\Z"),
    "AUTHENTICATE": re.compile(rb"(?:[A-Za-z0-9+/]*={0,2}|\*)\r?\n\Z"),
}


def check_framing(response: Response) -> None:
    """Raise RemoteProtocolError unless every client frames the untagged ``response`` as the proxy
    did, literal for literal (docs/pitfalls.md#responses-at-any-time).

    A status response (the greeting too) carries text, never a literal, yet imaplib reads one
    after any untagged line ending in "{n}": the bytes the proxy passed as text would reach the
    application as data. A non-synchronising literal is never the server's to send (RFC 7888
    §3) and imaplib does not read one; literal8 belongs in BINARY FETCH data only (RFC 3516 §4.2).
    Either way the proxy and the client would disagree on where the next response starts."""
    raw, status = response.raw, response.word in STATUS_WORDS
    pos = 0
    while pos < len(raw):
        end = raw.find(b"\n", pos) + 1 or len(raw)
        line = raw[pos:end]
        marker = literal_at_end(line)  # any announcement a client reads: every digit, "{n+}" and "~{n}" too
        if marker is None:
            return
        if status or not marker.sync or marker.binary or not line.endswith(b"\r\n"):
            raise RemoteProtocolError(f"a literal clients would frame differently: {line[:80]!r}")
        pos = end + marker.size


@dataclass(frozen=True)
class Passed:
    """What the client gets of a response (``raw``, maybe empty), what was dropped from it, and
    the FETCH data it held (for the mailbox view), if any."""

    raw: bytes
    dropped: tuple[bytes, ...] = ()
    fetch: FetchData | None = None


class Gate:
    def __init__(self) -> None:
        self.states = SessionStates()
        self.asked = AskedItems()
        #: tag of an IDLE or AUTHENTICATE in progress -> its name
        self._continuing: dict[bytes, str] = {}

    # --- client -> server -------------------------------------------------------------------------

    def refusal(self, command: Command) -> bytes | None:
        """The answer (after the tag) that refuses ``command``, or None when it may go on."""
        if command.name == "COMPRESS":
            return COMPRESS_REFUSAL
        refused = refusal(command.name, self.states.possible())
        if refused is None and command.name == "AUTHENTICATE":
            refused = mechanism_refusal(command.args)
        return refused

    def fetch_refusal(self, request: FetchRequest) -> bytes | None:
        return fetch_refusal(request)

    def sent(self, command: Command) -> None:
        """``command`` went to the server as the client wrote it."""
        self.states.sent(command.tag, command.name)
        if command.name in _CONTINUATIONS:
            self._continuing[command.tag] = command.name

    def continuation_allowed(self, event: ContinuationData) -> bool:
        """Whether a line the client sent after a continuation request may go on."""
        name = self._continuing.get(event.tag)
        return name is not None and _CONTINUATIONS[name].match(event.raw) is not None

    def relayed_fetch(self, tag: bytes, request: FetchRequest) -> None:
        """A FETCH of metadata only went to the server as it is: its items may come back."""
        self.asked.add(tag, frozenset(att.name for att in request.atts))

    def preauthenticated(self) -> None:
        self.states.preauthenticated()

    # --- server -> client -------------------------------------------------------------------------

    def response(self, response: Response) -> Passed:
        """What of a server response, not part of a FETCH the proxy answers, reaches the client."""
        if response.kind is ResponseKind.TAGGED:
            assert response.tag is not None
            self.states.completed(response.tag, response.word == "OK")
            self.asked.done(response.tag)
            self._continuing.pop(response.tag, None)
            return Passed(response.raw)
        if response.kind is ResponseKind.CONTINUATION:
            return Passed(response.raw)
        if response.word == "BYE":
            # RFC 9051 §7.1.5: the server is closing the connection; nothing more may go to it
            self.states.bye()
        if unknown_response(response.word):
            return Passed(b"", (response.raw[:40],))
        if response.word != "FETCH":
            check_framing(response)
            return Passed(response.raw)
        data = parse_fetch_response(response)  # RemoteProtocolError without a message number
        filtered = filter_fetch(data, self.asked.names)
        return Passed(filtered.raw or b"", filtered.dropped, data if filtered.raw is not None else None)
