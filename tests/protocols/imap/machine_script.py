"""A small harness for byte-script tests of the IMAP proxy machine: feed bytes, collect events,
answer its requests (scans, cache look-ups, TLS switches) by hand."""

from __future__ import annotations

from dataclasses import dataclass

from mailguard.protocols.events import NEED_DATA, Closed, SendToClient, SendToServer, Side
from mailguard.protocols.imap.events import CacheEntry, CacheLookup, ScanFetched, Scanned
from mailguard.protocols.imap.machine import ImapOptions, ImapProxy

GREETING = b"* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n"


@dataclass
class Outcome:
    """A scan outcome as the pool gives it (the fields the machine reads)."""

    status: str = "clean"
    detections: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    delivered: bytes | None = None
    error: str = ""
    quarantine_failed: bool = False
    generation: str = ""
    located: tuple[tuple[str, str], ...] = ()


class Script:
    def __init__(self, options: ImapOptions | None = None, greeting: bytes = GREETING) -> None:
        self.proxy = ImapProxy(options)
        self.events: list[object] = []
        if greeting:
            self.server(greeting)

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

    def send(self, reply: object) -> "Script":
        self.proxy.send(reply)  # type: ignore[arg-type]
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

    def take(self, kind: type) -> list:  # type: ignore[type-arg]
        found = [e for e in self.events if isinstance(e, kind)]
        self.events = [e for e in self.events if not isinstance(e, kind)]
        return found

    def scan(self, delivered: bytes | None = None, **fields: object) -> ScanFetched:
        """Answer the one scan asked for with an outcome (clean, unchanged by default)."""
        [request] = self.take(ScanFetched)
        self.send(Scanned(request.ident, Outcome(delivered=delivered, **fields)))  # type: ignore[arg-type]
        return request

    def no_cache(self) -> None:
        """Answer every cache look-up asked for with "nothing kept"."""
        for request in self.take(CacheLookup):
            self.send(CacheEntry(request.ident))

    @property
    def closed(self) -> Closed | None:
        found = [e for e in self.events if isinstance(e, Closed)]
        return found[-1] if found else None

    def login_select(self, count: int = 1, uidvalidity: int = 7) -> "Script":
        self.take_client()
        self.client(b"a LOGIN alice secret\r\n").server(b"a OK done\r\n")
        self.client(b"b SELECT INBOX\r\n").server(
            b"* %d EXISTS\r\n* OK [UIDVALIDITY %d] ok\r\nb OK [READ-WRITE] done\r\n" % (count, uidvalidity))
        self.take_client()
        self.take_server()
        return self
