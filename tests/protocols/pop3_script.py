"""A tiny harness for byte-script tests of the POP3 proxy machine: feed bytes, collect events."""

from __future__ import annotations

from mailguard.protocols.pop3 import Pop3Options, Pop3Proxy
from mailguard.protocols.pop3_events import (
    NEED_DATA, Closed, ScanMessage, SendToClient, SendToServer, Side, StartTls, SwitchToRelay,
)


class Script:
    def __init__(self, options: Pop3Options | None = None, greeting: bytes = b"+OK ready\r\n") -> None:
        self.proxy = Pop3Proxy(options)
        self.events: list[object] = []
        if greeting:
            self.server(greeting)
            assert self.take_client() == greeting

    def _drain(self) -> None:
        while (event := self.proxy.next_event()) is not NEED_DATA:
            self.events.append(event)

    def client(self, data: bytes) -> "Script":
        self.proxy.receive_data(Side.CLIENT, data)
        self._drain()
        return self

    def server(self, data: bytes) -> "Script":
        self.proxy.receive_data(Side.SERVER, data)
        self._drain()
        return self

    def send(self, event: object) -> "Script":
        self.proxy.send(event)  # type: ignore[arg-type]
        self._drain()
        return self

    def _take(self, kind: type) -> bytes:
        out = b"".join(e.data for e in self.events if isinstance(e, kind))  # type: ignore[attr-defined]
        self.events = [e for e in self.events if not isinstance(e, kind)]
        return out

    def take_client(self) -> bytes:
        return self._take(SendToClient)

    def take_server(self) -> bytes:
        return self._take(SendToServer)

    def take(self, kind: type) -> list[object]:
        found = [e for e in self.events if isinstance(e, kind)]
        self.events = [e for e in self.events if not isinstance(e, kind)]
        return found

    @property
    def closed(self) -> Closed | None:
        found = [e for e in self.events if isinstance(e, Closed)]
        return found[-1] if found else None


__all__ = ["Script", "ScanMessage", "StartTls", "SwitchToRelay", "Closed", "Side"]
