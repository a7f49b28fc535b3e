"""What a protocol machine asks of its driver, and what the driver tells it back: the events
every protocol shares (pop3_events.py and imap/events.py add their own).

Out of a machine's ``next_event()``: ``SendToClient``, ``SendToServer``, ``StartTls`` (answered
with ``TlsEstablished`` or ``TlsFailed``), ``SwitchToRelay``, ``Closed``, or ``NEED_DATA``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "NEED_DATA", "Closed", "NeedData", "PeerError", "SendToClient", "SendToServer", "Side", "StartTls",
    "SwitchToRelay", "TlsEstablished", "TlsFailed",
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
    """Inside a machine: ``side`` broke the protocol; the session ends with a clear error."""

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
class StartTls:
    """Switch ``side`` to TLS now. Write ``preface`` to that side first, in the same step, with
    no await in between, so no byte from the peer can be read as plaintext after it."""

    side: Side
    preface: bytes = b""


@dataclass(frozen=True, slots=True)
class SwitchToRelay:
    """From here on the session is a byte relay (STARTTLS / STLS with TLS interception off).
    ``client_early`` and ``server_early``: bytes the machine had read and not passed on, which
    the relay sends first."""

    client_early: bytes = b""
    server_early: bytes = b""


@dataclass(frozen=True, slots=True)
class Closed:
    """Close both legs (after writing what was sent before). ``error`` is False for a normal end."""

    reason: str
    error: bool


@dataclass(frozen=True, slots=True)
class TlsEstablished:
    side: Side


@dataclass(frozen=True, slots=True)
class TlsFailed:
    side: Side
    reason: str
