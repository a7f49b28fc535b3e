"""Which mail protocol a connection speaks, told from the server's greeting (sans-I/O).

This decides only on ports in no protocol's port list (proxy/session.py): on the configured
POP3/IMAP ports the protocol is known, and the greeting there is checked by the protocol's own
handler, never used to decide whether to scan
(docs/pitfalls.md#recognising-the-protocol-from-the-greeting).

POP3 and IMAP servers speak first. The greeting is recognised as leniently as any client accepts
it, because a session recognised too readily only meets a handler that refuses what it cannot
follow, while one not recognised may end up relayed unscanned: every line starting with "+" is
POP3 (poplib takes any "+" greeting, RFC 1939 §4 says "+OK"), and every line starting with "*",
optional blanks and OK, PREAUTH or BYE in any case is IMAP (RFC 9051 §7.1; imaplib reads
``* OK[CAPABILITY ...]`` as OK). Anything else is ``Greeting.OPAQUE``, and ``reason`` says why:
``"greeting"`` (the server's first line is something else, or longer than ``MAX_GREETING_LINE``),
``"client"`` (the client spoke before a whole first line), ``"closed"`` (the server closed
first) or ``"timeout"`` (nothing within ``GREETING_TIMEOUT``).

The sniffer only looks; it keeps every byte it was given (``buffered``) so the chosen handler can
be fed the greeting unchanged.
"""

from __future__ import annotations

import enum

__all__ = ["GREETING_TIMEOUT", "MAX_GREETING_LINE", "Greeting", "GreetingSniffer", "classify_greeting"]

# RFC 2449 §4 caps a POP3 response line at 512 octets and IMAP greetings with a capability list
# stay well below 4 KiB in practice; a longer first line is not a mail greeting we can follow.
MAX_GREETING_LINE = 4096
# How long the driver waits for the first server line before it gives up recognising the protocol
# (seconds). Servers greet at once; LOGIN-DELAY style throttling happens later.
GREETING_TIMEOUT = 30.0


class Greeting(str, enum.Enum):
    """The mail protocol a server's greeting shows, if any."""

    POP3 = "pop3"
    IMAP = "imap"
    #: Not a mail protocol we follow (protocol-filtering.unrecognized decides what happens).
    OPAQUE = "opaque"


_IMAP_WORDS = (b"OK", b"PREAUTH", b"BYE")


def classify_greeting(line: bytes) -> Greeting:
    """The protocol a complete first server line (with or without its line end) belongs to."""
    if line[:1] == b"+":
        return Greeting.POP3
    if line[:1] == b"*":
        word = line[1:].lstrip(b" \t").upper()
        if word.startswith(_IMAP_WORDS):
            return Greeting.IMAP
    return Greeting.OPAQUE


def _could_become_greeting(prefix: bytes) -> bool:
    """Whether more bytes could still turn ``prefix`` (no line end yet) into a greeting."""
    if prefix[:1] in (b"", b"+"):
        return True
    if prefix[:1] != b"*":
        return False
    word = prefix[1:].lstrip(b" \t").upper()
    return any(w.startswith(word) or word.startswith(w) for w in _IMAP_WORDS)


class GreetingSniffer:
    """Feed it server bytes until it names a ``Greeting``; tell it when the client speaks first."""

    def __init__(self, max_line: int = MAX_GREETING_LINE) -> None:
        self.max_line = max_line
        self._buffer = bytearray()
        self.result: Greeting | None = None
        #: Why the verdict is ``Greeting.OPAQUE``: "greeting", "client", "closed" or "timeout".
        self.reason: str | None = None

    @property
    def buffered(self) -> bytes:
        """Every server byte received so far, to be replayed to the chosen handler."""
        return bytes(self._buffer)

    def receive_server(self, data: bytes) -> Greeting | None:
        """Server bytes in (``b""`` = the server closed); the verdict once there is one."""
        if self.result is not None:
            self._buffer += data
            return self.result
        if not data:
            return self._decide(Greeting.OPAQUE, "closed")
        self._buffer += data
        end = self._buffer.find(b"\n")
        if end >= 0:
            return self._decide(classify_greeting(bytes(self._buffer[: end + 1])), "greeting")
        if len(self._buffer) > self.max_line or not _could_become_greeting(bytes(self._buffer[:64])):
            return self._decide(Greeting.OPAQUE, "greeting")
        return None

    def client_spoke(self) -> Greeting:
        """The client sent bytes before the greeting was recognised: not POP3 or IMAP."""
        return self.result if self.result is not None else self._decide(Greeting.OPAQUE, "client")

    def timed_out(self) -> Greeting:
        """No recognisable greeting within ``GREETING_TIMEOUT``."""
        return self.result if self.result is not None else self._decide(Greeting.OPAQUE, "timeout")

    def _decide(self, kind: Greeting, reason: str) -> Greeting:
        self.result = kind
        self.reason = reason if kind is Greeting.OPAQUE else None
        return kind
