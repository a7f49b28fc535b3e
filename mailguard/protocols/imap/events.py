"""What the IMAP proxy machine asks of its driver beyond the shared events (protocols/events.py),
and what the driver tells it back.

Requests carry an ``ident``; the driver answers each with the reply of the same ``ident``
through ``ImapProxy.send``, in any order (scans run side by side):

- ``ScanFetched`` -> ``Scanned``: scan a message fetched from the server (the driver accounts
  for it: counters, log lines, quarantine), and, when ``cache_uid`` is set, read what the rewrite
  cache says the client was served before (``served_before``, proxy/imap_cache.py);
- ``CacheLookup`` -> ``CacheEntry``: the rewrite cache's record and bytes for a message.

Told, not asked: ``CacheWrite``, ``CacheRestamp`` (the cache's file I/O) and ``Notice`` (a log
line, maybe a counter).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from mailguard.protocols.events import (
    NEED_DATA, Closed, NeedData, SendToClient, SendToServer, Side, StartTls, SwitchToRelay, TlsEstablished,
    TlsFailed,
)

__all__ = [
    "NEED_DATA", "CacheEntry", "CacheLookup", "CacheRestamp", "CacheWrite", "Closed", "Event", "Identity",
    "Limit", "NeedData", "Notice", "Reply", "ScanFetched", "ScanOutcomeLike", "Scanned", "SendToClient", "SendToServer",
    "Side", "StartTls", "SwitchToRelay", "TlsEstablished", "TlsFailed",
]

class Limit(NamedTuple):
    """How long one side may stay silent (``ImapProxy.timer``); ``why`` goes back to
    ``ImapProxy.timed_out`` when it runs out."""

    seconds: float
    why: str
    side: Side


#: (server, user, mailbox, UIDVALIDITY): with a UID it names a message for good (RFC 9051 §2.3.1.1)
Identity = tuple[str, str, bytes, int]


class ScanOutcomeLike(Protocol):
    status: str
    detections: tuple[str, ...]
    reasons: tuple[str, ...]
    delivered: bytes | None
    error: str
    quarantine_failed: bool
    generation: str
    located: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class ScanFetched:
    ident: int
    uid: int
    message: bytes
    #: where the message is from, for the scan's log and quarantine ("imap://server/mailbox/uid")
    source: str
    #: the message's cache identity when the cache is to be asked what was served before
    cache: Identity | None = None


@dataclass(frozen=True, slots=True)
class Scanned:
    ident: int
    #: None: protection is off, the message was not scanned
    outcome: ScanOutcomeLike | None
    #: after a signature update, what the client was served before for these bytes (imap_cache.py)
    before: bytes | None = None
    #: response.on-scan-error now (the engine's current settings)
    on_scan_error: str = "pass"


@dataclass(frozen=True, slots=True)
class CacheLookup:
    ident: int
    cache: Identity
    uid: int


@dataclass(frozen=True, slots=True)
class CacheEntry:
    ident: int
    #: the record (current generation only), with ``.unchanged`` and ``.original_sha256``
    record: Any = None
    #: the served bytes when kept (a rewritten message's, or one still in the cache's memory)
    blob: bytes | None = None


@dataclass(frozen=True, slots=True)
class CacheWrite:
    cache: Identity
    uid: int
    original: bytes
    served: bytes
    outcome: ScanOutcomeLike


@dataclass(frozen=True, slots=True)
class CacheRestamp:
    cache: Identity
    uid: int
    generation: str


@dataclass(frozen=True, slots=True)
class Notice:
    """A log line at ``level`` ("info", "warning"); ``counter``: a status counter to add one to."""

    level: str
    text: str
    counter: str | None = None


Event = (SendToClient | SendToServer | StartTls | SwitchToRelay | Closed | ScanFetched | CacheLookup | CacheWrite
         | CacheRestamp | Notice)
Reply = Scanned | CacheEntry | TlsEstablished | TlsFailed
