"""A small harness for byte-script tests of the IMAP proxy machine: feed bytes, collect events,
answer its requests (scans, cache look-ups, TLS switches) by hand."""

from __future__ import annotations

from mailguard.protocols.imap.events import CacheEntry, CacheLookup, ScanFetched, Scanned
from mailguard.protocols.imap.machine import ImapOptions, ImapProxy
from mailguard.scanpool.job import ScanOutcome
from tests.protocols.machine_script import MachineScript

GREETING = b"* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n"


def Outcome(status: str = "clean", **fields: object) -> ScanOutcome:  # noqa: N802 - reads as the type it makes
    """A scan outcome as the pool gives it: clean and unchanged unless told otherwise."""
    return ScanOutcome(**{"status": status, "detections": (), "reasons": (), "delivered": None, **fields})  # type: ignore[arg-type]


class Script(MachineScript):
    def __init__(self, options: ImapOptions | None = None, greeting: bytes = GREETING) -> None:
        super().__init__(ImapProxy(options))
        if greeting:
            self.server(greeting)

    def scan(self, delivered: bytes | None = None, **fields: object) -> ScanFetched:
        """Answer the one scan asked for with an outcome (clean, unchanged by default)."""
        [request] = self.take(ScanFetched)
        self.send(Scanned(request.ident, Outcome(delivered=delivered, **fields)))  # type: ignore[arg-type]
        return request

    def no_cache(self) -> None:
        """Answer every cache look-up asked for with "nothing kept"."""
        for request in self.take(CacheLookup):
            self.send(CacheEntry(request.ident))

    def login_select(self, count: int = 1, uidvalidity: int = 7) -> "Script":
        self.take_client()
        self.client(b"a LOGIN alice secret\r\n").server(b"a OK done\r\n")
        self.client(b"b SELECT INBOX\r\n").server(
            b"* %d EXISTS\r\n* OK [UIDVALIDITY %d] ok\r\nb OK [READ-WRITE] done\r\n" % (count, uidvalidity))
        self.take_client()
        self.take_server()
        return self
