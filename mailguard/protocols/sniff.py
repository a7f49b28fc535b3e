"""Which mail protocol a connection speaks, told from the server's greeting (sans-I/O).

POP3 and IMAP servers speak first: a POP3 greeting is ``+OK`` (RFC 1939 §4), an IMAP one is
``* OK``, ``* PREAUTH`` or ``* BYE`` (RFC 9051 §7.1). That lets the engine recognise the protocol
on any port. Anything else (a client that speaks first, SMTP's ``220``, TLS, garbage, a greeting
longer than ``MAX_GREETING_LINE`` or none within ``GREETING_TIMEOUT``) is ``Kind.OPAQUE``, and
``reason`` says which: ``"greeting"`` (the server's first line is something else), ``"client"``
(the client spoke first), ``"closed"`` (the server closed first) or ``"timeout"``.

What the engine does with it (proxy/session.py): a time-out is refused, never relayed (a mail
server greets at once; a silent one must not turn a configured mail port into an unscanned
tunnel), and so is anything but POP3/IMAP on a connection whose TLS we already terminated with our
own leaf. Only a plain (not intercepted) connection whose server greets with something else or
whose client speaks first is relayed byte for byte, unscanned.

The sniffer only looks; it keeps every byte it was given (``buffered``) so the chosen handler can
be fed the greeting unchanged.
"""

from __future__ import annotations

import enum

__all__ = ["GREETING_TIMEOUT", "MAX_GREETING_LINE", "GreetingSniffer", "Kind", "classify_greeting"]

# RFC 2449 §4 caps a POP3 response line at 512 octets and IMAP greetings with a capability list
# stay well below 4 KiB in practice; a longer first line is not a mail greeting we can follow.
MAX_GREETING_LINE = 4096
# How long the driver waits for the first server line before it gives up recognising the protocol
# (seconds). Servers greet at once; LOGIN-DELAY style throttling happens later.
GREETING_TIMEOUT = 30.0


class Kind(str, enum.Enum):
    POP3 = "pop3"
    IMAP = "imap"
    #: Not a mail protocol we follow: relayed byte for byte.
    OPAQUE = "opaque"


_IMAP_PREFIXES = (b"* OK", b"* PREAUTH", b"* BYE")


def classify_greeting(line: bytes) -> Kind:
    """The protocol a complete first server line (with or without its CRLF) belongs to."""
    head = line.rstrip(b"\r\n")
    if head[:3] == b"+OK" and (len(head) == 3 or head[3:4] == b" "):
        return Kind.POP3
    upper = head.upper()
    for prefix in _IMAP_PREFIXES:
        # IMAP atoms are case-insensitive (RFC 9051 §9); the status word ends at SP or line end.
        if upper.startswith(prefix) and (len(upper) == len(prefix) or upper[len(prefix)] == 0x20):
            return Kind.IMAP
    return Kind.OPAQUE


def _could_become_greeting(prefix: bytes) -> bool:
    """Whether more bytes could still turn ``prefix`` into a greeting we recognise."""
    upper = prefix.upper()
    return any(p.startswith(upper[: len(p)]) for p in (b"+OK", *_IMAP_PREFIXES))


class GreetingSniffer:
    """Feed it server bytes until it names a ``Kind``; tell it when the client speaks first."""

    def __init__(self, max_line: int = MAX_GREETING_LINE) -> None:
        self.max_line = max_line
        self._buffer = bytearray()
        self.result: Kind | None = None
        #: Why the verdict is ``Kind.OPAQUE``: "greeting", "client", "closed" or "timeout".
        self.reason: str | None = None

    @property
    def buffered(self) -> bytes:
        """Every server byte received so far, to be replayed to the chosen handler."""
        return bytes(self._buffer)

    def receive_server(self, data: bytes) -> Kind | None:
        """Server bytes in (``b""`` = the server closed); the verdict once there is one."""
        if self.result is not None:
            self._buffer += data
            return self.result
        if not data:
            return self._decide(Kind.OPAQUE, "closed")
        self._buffer += data
        end = self._buffer.find(b"\n")
        if end >= 0:
            return self._decide(classify_greeting(bytes(self._buffer[: end + 1])), "greeting")
        if len(self._buffer) > self.max_line or not _could_become_greeting(bytes(self._buffer[:16])):
            return self._decide(Kind.OPAQUE, "greeting")
        return None

    def client_spoke(self) -> Kind:
        """The client sent bytes before the greeting was recognised: not POP3 or IMAP."""
        return self.result if self.result is not None else self._decide(Kind.OPAQUE, "client")

    def timed_out(self) -> Kind:
        """No recognisable greeting within ``GREETING_TIMEOUT``."""
        return self.result if self.result is not None else self._decide(Kind.OPAQUE, "timeout")

    def _decide(self, kind: Kind, reason: str) -> Kind:
        self.result = kind
        self.reason = reason if kind is Kind.OPAQUE else None
        return kind
