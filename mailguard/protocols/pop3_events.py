"""What the POP3 proxy machine asks of its driver, and what the driver tells it back.

Out of ``Pop3Proxy.next_event()`` (the driver acts on them in order):
``SendToClient``, ``SendToServer``, ``ScanMessage`` (answer with ``ScanResult``), ``StartTls``
(answer with ``TlsEstablished`` or ``TlsFailed``), ``SwitchToRelay``, ``MessageUnscanned``
(for counters and logs), ``LinesDropped`` (for logs), ``Closed``, or ``NEED_DATA``.

Into ``Pop3Proxy.send()``: ``ScanResult``, ``TlsEstablished``, ``TlsFailed``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailguard.protocols.events import (
    NEED_DATA, Closed, NeedData, PeerError, SendToClient, SendToServer, Side, StartTls, SwitchToRelay,
    TlsEstablished, TlsFailed,
)

__all__ = [
    "NEED_DATA", "Closed", "Event", "LinesDropped", "MessageUnscanned", "NeedData", "PeerError", "ScanMessage",
    "ScanResult", "SendToClient", "SendToServer", "Side", "StartTls", "SwitchToRelay", "TlsEstablished", "TlsFailed",
]


@dataclass(frozen=True, slots=True)
class ScanMessage:
    """A whole message (de-stuffed) to scan before any of it reaches the client."""

    number: int
    message: bytes
    command: str  # "RETR" or "TOP"


@dataclass(frozen=True, slots=True)
class MessageUnscanned:
    """A message went to the client without a scan (or was blocked for that reason)."""

    number: int
    reason: str
    blocked: bool


@dataclass(frozen=True, slots=True)
class LinesDropped:
    """Lines of a listing answer that were not what they should be were left out (pop3_listing)."""

    command: str
    count: int


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What the client receives for the message of the last ``ScanMessage``: ``None`` means
    the original, unchanged (its wire bytes are forwarded as received). A ``refusal`` withholds
    the message: the client gets ``-ERR`` with it and may try again later."""

    message: bytes | None
    refusal: str = ""


Event = (
    SendToClient | SendToServer | ScanMessage | MessageUnscanned | LinesDropped | StartTls | SwitchToRelay
    | Closed
)
