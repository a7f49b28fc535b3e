"""What a session holds and serves: scanned messages in memory, and FETCH answers from them.

A message is scanned once per session (Thunderbird's chunk loop re-asks the same message dozens of
times, docs/pitfalls.md#scan-before-release) and, with the rewrite cache, once for good
(docs/pitfalls.md#messages-never-change). A FETCH of a message held here, whose number and UID the
server told us (imap_view.py), is answered without asking the server anything (issue 7,
performance).
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.imap.commands import Command
from mailguard.protocols.imap.fetch import FetchAtt, FetchRequest
from mailguard.protocols.imap.fetch_response import DataItem, FetchData
from mailguard.protocols.imap.responses import Response
from mailguard.proxy.imap_cache import CacheRecord, cache_key
from mailguard.proxy.imap_render import Record, render
from mailguard.scanpool.pool import account
from mailguard.scan.rewrite import TLS_HEADER, add_header, tls_value
from mailguard.scan.verdict import Reason

if TYPE_CHECKING:
    from mailguard.proxy.imap import ImapSession, ScanOutcomeLike


#: how long we wait for the server's next response while one of our own commands (the body
#: fetch of an intercepted FETCH, a read-ahead, a STORE) is unanswered: a few minutes, enough for
#: a large literal on a slow link; then the client hears BYE rather than hanging
#: (docs/architecture.md#lose-nothing)
UPSTREAM_ANSWER_TIMEOUT = 5 * 60.0


class UpstreamSilent(RemoteProtocolError):
    """The server left one of our own commands unanswered for ``answer_timeout``."""

    def __init__(self) -> None:
        super().__init__("mailguard: the server stopped answering")


async def next_answer(queue: "asyncio.Queue[Response]", timeout: float) -> Response:
    """The next response diverted to us; ``UpstreamSilent`` when none comes within ``timeout``."""
    if not queue.empty():
        return queue.get_nowait()  # most of the time: no task and no timer for wait_for
    try:
        return await asyncio.wait_for(queue.get(), timeout)
    except asyncio.TimeoutError:
        raise UpstreamSilent() from None


#: messages a session keeps in memory after serving them (Thunderbird's chunk loop re-asks)
SESSION_MEMORY_BYTES = 64 * 1024 * 1024
#: what every session of the engine keeps in all, shared out equally among the open ones: one
#: session may keep SESSION_MEMORY_BYTES, a thousand may not keep that much each (they kept
#: 64 GB between them before; issue 12). Past its share a session keeps nothing more: a message
#: asked for again is fetched again (a rewritten one comes from the rewrite cache, a clean one
#: is checked against its recorded hash, neither is scanned again).
ENGINE_MEMORY_BYTES = 64 * 1024 * 1024
MemoryKey = tuple[bytes | None, int | None, int]


class SessionMemory:
    """What this session served lately, by (mailbox, UIDVALIDITY, UID): a chunk loop costs one scan.

    Each entry is (served bytes, unchanged, the server's RFC822.SIZE when it told us): with the
    size a FETCH of UID, RFC822.SIZE and body items is answered without asking the server."""

    #: the memories not closed yet: the engine's open IMAP sessions (one engine per process);
    #: weak, so a session dropped without closing gives its share back too
    live: "weakref.WeakSet[SessionMemory]" = weakref.WeakSet()

    def __init__(self, max_bytes: int = SESSION_MEMORY_BYTES,
                 generation: Callable[[], str | None] = lambda: None) -> None:
        self.cap = max_bytes
        self._items: OrderedDict[MemoryKey, tuple[bytes, bool, int | None]] = OrderedDict()
        self._bytes = 0
        # After a signature update what a session holds is forgotten, so a message fetched
        # again is judged by the rewrite cache's rules for rescans (imap_cache.py).
        self._generation = generation
        self._held_for = generation()
        SessionMemory.live.add(self)

    @property
    def max_bytes(self) -> int:
        """This session's cap: its own, or its share of ENGINE_MEMORY_BYTES if smaller."""
        return min(self.cap, ENGINE_MEMORY_BYTES // max(1, len(SessionMemory.live)))

    def close(self) -> None:
        """The session is over: forget everything, and give up its share."""
        self.clear()
        SessionMemory.live.discard(self)

    def _current(self) -> None:
        now = self._generation()
        if now != self._held_for:
            self.clear()
            self._held_for = now

    def get(self, key: MemoryKey) -> tuple[bytes, bool, int | None] | None:
        self._current()
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    def __contains__(self, key: MemoryKey) -> bool:
        self._current()
        return key in self._items

    def put(self, key: MemoryKey, served: bytes, unchanged: bool, server_size: int | None = None) -> None:
        if len(served) > self.max_bytes:
            return
        found = self._items.get(key)
        if found is not None:
            if found[2] is None and server_size is not None:
                self._items[key] = (found[0], found[1], server_size)
            return
        self._items[key] = (served, unchanged, server_size)
        self._bytes += len(served)
        cap = self.max_bytes
        while self._bytes > cap:
            _, (dropped, _, _) = self._items.popitem(last=False)
            self._bytes -= len(dropped)


#: items a FETCH may ask for and still be answered from what we hold, without the server
def _local_att(att: FetchAtt) -> bool:
    return att.name in ("UID", "RFC822.SIZE") or (att.carries_content and not att.sets_seen)


async def answer_locally(session: "ImapSession", command: Command, request: FetchRequest) -> tuple[int, int] | None:
    """Answer a FETCH of one known message from what this session holds (served before, read
    ahead, or in the rewrite cache), with no round trip to the server; None when we cannot.

    Only forms that change nothing on the server qualify (no \\Seen to set, no modifiers), and
    only a message whose number and UID the server told us in this selection (imap_view.py):
    the FETCH response is then byte for byte what the interception would have sent (the
    completion's text is ours, not the server's)."""
    if request.modifiers or not request.sequence_set.isdigit() or not all(_local_att(a) for a in request.atts):
        return None
    mailbox, validity = session.mailbox, session.uidvalidity
    if mailbox is None or validity is None:
        return None
    view = session.view
    wanted = int(request.sequence_set)
    uid = wanted if request.uid else view.uid_of(wanted)
    if uid is None or view.number_of(uid) is None:
        return None
    key = (mailbox, validity, uid)
    found = await session.readahead.held(key)
    if found is None:
        found = _from_rewrite_cache(session, uid)
    if found is None:
        return None
    served, unchanged, server_size = found
    if unchanged and server_size is None and any(att.name == "RFC822.SIZE" for att in request.atts):
        return None  # the server's figure is what the client saw for it before (RFC 9051 §2.3.1.1)
    # The view may have moved while we waited (an EXPUNGE relayed meanwhile): look again.
    number = view.number_of(uid)
    if number is None or (not request.uid and number != wanted) or session.mailbox != mailbox:
        return None
    items = [DataItem("UID", b"UID", b"%d" % uid, b"%d" % uid, False)]
    if server_size is not None:
        items.append(DataItem("RFC822.SIZE", b"RFC822.SIZE", b"%d" % server_size, b"%d" % server_size, False))
    record = Record(data=FetchData(number, tuple(items)), uid=uid, size=server_size or len(served),
                    served=served, unchanged=unchanged, resolved=True)
    verb = b"UID FETCH" if request.uid else b"FETCH"
    session.send_client(render(record, request, command.tag + b" OK " + verb + b" completed\r\n"))
    stats = session.context.stats
    stats["local_answers"] = stats.get("local_answers", 0) + 1
    return number, uid


def _from_rewrite_cache(session: "ImapSession", uid: int) -> tuple[bytes, bool, int | None] | None:
    """What the rewrite cache served for ``uid`` before (into this session's memory too)."""
    cache = session.context.cache
    identity = session.cache_identity
    if cache is None or identity is None:
        return None
    key = cache_key(*identity, uid)
    cached = cache.record(key)
    blob = None if cached is None else cache.blob(key, cached)
    if cached is None or blob is None:
        return None
    blob, unchanged = tls_tagged(session, blob, cached.unchanged)
    session.memory.put((session.mailbox, session.uidvalidity, uid), blob, unchanged)
    stats = session.context.stats
    stats["cache_hits"] = stats.get("cache_hits", 0) + 1
    return blob, unchanged, None


def tls_tagged(session: "ImapSession", served: bytes, unchanged: bool) -> tuple[bytes, bool]:
    """``served`` as this connection delivers it: with an ``X-MailGuard-TLS`` header when policy
    let the server's bad certificate through (issue 5), else as it is.

    Applied where a message enters the session's memory (from a scan or the rewrite cache), so
    sizes and structures are computed from the tagged bytes; the rewrite cache itself keeps the
    untagged form, since the next connection's certificate may be fine."""
    problems = session.upstream.conn.certificate_problems
    if not problems:
        return served, unchanged
    return add_header(served, TLS_HEADER, tls_value(problems)), False


class Withheld(Exception):
    """The original could not be kept in quarantine: the rewrite is not served (lose nothing);
    or, with on-scan-error = block, a scan after a signature update could not complete: what
    was served before is not served unconfirmed. The client's FETCH is answered NO and the
    message stays on the server for a later try; ``client_text`` says why, in the NO."""

    def __init__(self, detail: str, client_text: str = "could not keep the original in quarantine, try later") -> None:
        super().__init__(detail)
        self.client_text = client_text


#: why a scan may come out differently next time: such an outcome is not written to the cache
TEMPORARY_REASONS = frozenset({Reason.TIMEOUT.value, Reason.ENGINE_ERROR.value})


def _temporary(outcome: "ScanOutcomeLike") -> bool:
    return outcome.status == "unscanned" and not TEMPORARY_REASONS.isdisjoint(outcome.reasons)


def _on_scan_error(session: "ImapSession") -> str:
    """``response.on-scan-error`` now (the engine's current settings; the session's in tests)."""
    policy = getattr(getattr(session.context.host, "config", None), "policy", None)
    return policy.on_scan_error if policy is not None else session.context.on_oversize


async def scan_message(session: "ImapSession", uid: int, raw: bytes, server_size: int | None) -> tuple[bytes, bool]:
    """Scan ``raw`` (or know it from the cache), remember what is served, write the cache entry.

    Raises ``Withheld`` when the original could not be quarantined, or a rescan after an update
    did not complete under on-scan-error = block: nothing is served or kept."""
    identity = session.cache_identity
    cache = session.context.cache
    key = cache_key(*identity, uid) if identity is not None and cache is not None else None
    cached = cache.record(key) if key is not None and cache is not None else None
    if cached is not None and cached.unchanged and hashlib.sha256(raw).hexdigest() == cached.original_sha256:
        # Served unchanged before, and it is the same message: no rescan
        # (docs/pitfalls.md#messages-never-change).
        served, unchanged = raw, True
    else:
        host = session.context.host
        if host is not None and not host.config.scanning:
            # Protection is off (the current settings: disable/enable reach open sessions):
            # relayed unscanned, and neither held nor cached, so it is scanned once it is back on.
            host.count("unscanned")
            return tls_tagged(session, raw, True)
        source = f"imap://{session.context.server_id}/{(session.mailbox or b'').decode('utf-8', 'replace')}/{uid}"
        outcome = await session.context.scanner.scan(raw, source)
        if host is not None:
            account(host, session.log, outcome, f"message UID {uid}", len(raw))
        if outcome.quarantine_failed:
            raise Withheld(outcome.error or "quarantine failed")
        served = outcome.delivered if outcome.delivered is not None else raw
        unchanged = outcome.delivered is None
        stats = session.context.stats
        stats["scanned"] = stats.get("scanned", 0) + 1
        # Scanned again after a signature update: nothing new found means what was served before
        # (imap_cache.py, "Repeat scan after update"). Only a scan that completed says so: one
        # that could not is no confirmation, and the record keeps its old generation.
        before = None
        if key is not None and cache is not None:
            before = cache.served_before(key, raw, outcome.located)
            if before is not None and outcome.status == "unscanned":
                if not _temporary(outcome):
                    # It can no longer be judged (a limit): the new verdict's form, per
                    # on-scan-error, and recorded so; nothing unscanned passes as scanned.
                    before = None
                elif _on_scan_error(session) == "block":
                    # clamd down, a time-out: not served now (FETCH NO; the message stays on the
                    # server), rather than a notice today and the earlier bytes tomorrow.
                    raise Withheld(f"scan after a signature update did not complete: {', '.join(outcome.reasons)}",
                                   "could not scan the message again after a signature update, try later")
                else:
                    # on-scan-error = pass: what it was served before (scanned by the earlier
                    # signatures), not held in this session's memory: the next fetch tries again.
                    return tls_tagged(session, before, before is raw)
        if before is not None:
            served, unchanged = before, before is raw
            cache.restamp(key, outcome.generation)  # type: ignore[arg-type, union-attr]
        elif key is not None and cache is not None and not _temporary(outcome):
            # On the loop: a record is a SHA-256 of the message (~60 µs for 100 KB) and one
            # appended line, plus a file for a rewritten message; handing it to a thread cost
            # more than that (bench/imap.py). A time-out or engine error is not kept: a later
            # fetch scans again.
            try:
                cache.put(key, CacheRecord.build(outcome.status, list(outcome.detections),
                                                 list(outcome.reasons), raw, served, outcome.generation,
                                                 outcome.located), served)
            except OSError as exc:
                # Served all the same: without the record a later fetch scans the message again
                # (same engine, same rewrite), which is slower, not less safe.
                session.log.warning("rewrite cache not written: %s", exc)
                if host is not None:
                    host.count("errors")
    served, unchanged = tls_tagged(session, served, unchanged)
    session.memory.put((session.mailbox, session.uidvalidity, uid), served, unchanged, server_size)
    return served, unchanged
