"""What the POP3 proxy machine asks of its driver, and what the driver tells it back.

Out of ``Pop3Proxy.next_event()`` (the driver acts on them in order):
``SendToClient``, ``SendToServer``, ``ScanMessage`` (answer with ``ScanResult``), ``StartTls``
(answer with ``TlsEstablished`` or ``TlsFailed``), ``SwitchToRelay``, ``MessageUnscanned``
(for counters and logs), ``LinesDropped`` (for logs), ``Closed``, or ``NEED_DATA``.

Into ``Pop3Proxy.send()``: ``ScanResult``, ``TlsEstablished``, ``TlsFailed``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "NEED_DATA", "Closed", "Event", "LinesDropped", "MessageUnscanned", "NeedData", "ScanMessage", "ScanResult",
    "SendToClient", "SendToServer", "Side", "StartTls", "SwitchToRelay", "TlsEstablished", "TlsFailed",
]


class Side(str, enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class NeedData:
    """Nothing to do until more bytes (or a reply to a request) arrive."""

    _instance: "NeedData | None" = None

    def __new__(cls) -> "NeedData":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = NeedData()


class PeerError(Exception):
    """Inside the machine: ``side`` broke the protocol; the session ends with a clear error."""

    def __init__(self, side: Side, message: str) -> None:
        super().__init__(message)
        self.side = side


@dataclass(frozen=True, slots=True)
class SendToClient:
    data: bytes


@dataclass(frozen=True, slots=True)
class SendToServer:
    data: bytes


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
class StartTls:
    """Switch ``side`` to TLS now. Write ``preface`` to that side first, in the same step, with
    no await in between, so no byte from the peer can be read as plaintext after it."""

    side: Side
    preface: bytes = b""


@dataclass(frozen=True, slots=True)
class SwitchToRelay:
    """From here on the session is a byte relay (STLS with TLS interception off)."""


@dataclass(frozen=True, slots=True)
class Closed:
    """Close both legs (after writing what was sent before). ``error`` is False for QUIT."""

    reason: str
    error: bool


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What the client receives for the message of the last ``ScanMessage``: ``None`` means
    the original, unchanged (its wire bytes are forwarded as received). A ``refusal`` withholds
    the message: the client gets ``-ERR`` with it and may try again later."""

    message: bytes | None
    refusal: str = ""


@dataclass(frozen=True, slots=True)
class TlsEstablished:
    side: Side


@dataclass(frozen=True, slots=True)
class TlsFailed:
    side: Side
    reason: str


Event = (
    SendToClient | SendToServer | ScanMessage | MessageUnscanned | LinesDropped | StartTls | SwitchToRelay
    | Closed
)
