"""The harness both protocol machines' byte-script tests share: feed bytes from either side,
collect the events the machine gives out, take them by kind, answer its requests by hand."""

from __future__ import annotations

from typing import Any

from mailguard.protocols.events import NEED_DATA, Closed, SendToClient, SendToServer, Side


class MachineScript:
    def __init__(self, proxy: Any) -> None:
        self.proxy = proxy
        self.events: list[object] = []

    def _drain(self) -> None:
        while (event := self.proxy.next_event()) is not NEED_DATA:
            self.events.append(event)

    def client(self, data: bytes):  # noqa: ANN201 - the script itself, for chaining
        self.proxy.receive_data(Side.CLIENT, data)
        self._drain()
        return self

    def server(self, data: bytes):  # noqa: ANN201
        self.proxy.receive_data(Side.SERVER, data)
        self._drain()
        return self

    def send(self, reply: object):  # noqa: ANN201
        self.proxy.send(reply)
        self._drain()
        return self

    def take(self, kind: type) -> list[Any]:
        found = [e for e in self.events if isinstance(e, kind)]
        self.events = [e for e in self.events if not isinstance(e, kind)]
        return found

    def take_client(self) -> bytes:
        return b"".join(e.data for e in self.take(SendToClient))

    def take_server(self) -> bytes:
        return b"".join(e.data for e in self.take(SendToServer))

    @property
    def closed(self) -> Closed | None:
        found = [e for e in self.events if isinstance(e, Closed)]
        return found[-1] if found else None
