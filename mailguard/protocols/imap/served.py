"""What a session serves: a message scanned (or known from the rewrite cache), and FETCH answers
from what it holds.

A message is scanned once per session (session memory, memory.py) and, with the rewrite cache,
once for good (docs/pitfalls.md#messages-never-change; the cache's rules for rescans after a
signature update are in proxy/imap_cache.py). A FETCH of a message held here, whose number and
UID the server told us (view.py), is answered without asking the server anything (issue 7,
performance).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from mailguard.protocols.imap.commands import Command
from mailguard.protocols.imap.events import CacheEntry, CacheLookup, CacheRestamp, CacheWrite, ScanFetched, Scanned
from mailguard.protocols.imap.fetch import FetchAtt, FetchRequest
from mailguard.protocols.imap.fetch_response import DataItem, FetchData
from mailguard.protocols.imap.flows import Ask, Step
from mailguard.protocols.imap.memory import MemoryKey
from mailguard.protocols.imap.render import Record, render

if TYPE_CHECKING:
    from mailguard.protocols.imap.events import ScanOutcomeLike
    from mailguard.protocols.imap.core import SessionCore

__all__ = ["TEMPORARY_REASONS", "Withheld", "answer_locally", "cache_lookup", "from_rewrite_cache", "scan_message"]


class Withheld(Exception):
    """The original could not be kept in quarantine: the rewrite is not served (lose nothing);
    or, with on-scan-error = block, a scan after a signature update could not complete: what
    was served before is not served unconfirmed. The client's FETCH is answered NO and the
    message stays on the server for a later try; ``client_text`` says why, in the NO."""

    def __init__(self, detail: str, client_text: str = "could not keep the original in quarantine, try later") -> None:
        super().__init__(detail)
        self.client_text = client_text


#: why a scan may come out differently next time: such an outcome is not written to the cache
#: (the values of scan/verdict.py's Reason.TIMEOUT and Reason.ENGINE_ERROR)
TEMPORARY_REASONS = frozenset({"timeout", "engine-error"})


def _temporary(outcome: "ScanOutcomeLike") -> bool:
    return outcome.status == "unscanned" and not TEMPORARY_REASONS.isdisjoint(outcome.reasons)


def cache_lookup(machine: "SessionCore", uid: int) -> Step:
    """The rewrite cache's entry for ``uid`` (one read: the caller keeps it), or None."""
    identity = machine.cache_identity
    if identity is None:
        return None
    entry: CacheEntry = yield Ask(CacheLookup(machine.new_ident(), identity, uid))
    return entry if entry.record is not None else None


def from_rewrite_cache(machine: "SessionCore", uid: int, entry: CacheEntry | None | bool = False,
                       server_size: int | None = None) -> Step:
    """What the rewrite cache served for ``uid`` before, as (served, unchanged), into this
    session's memory too; None when it keeps no bytes for it. ``entry``: the cache's entry
    when read already (False: not read)."""
    if entry is False:
        entry = yield from cache_lookup(machine, uid)
    if not isinstance(entry, CacheEntry) or entry.blob is None:
        return None
    served, unchanged = machine.tls_tagged(entry.blob, entry.record.unchanged)
    machine.memory.put((machine.mailbox, machine.uidvalidity, uid), served, unchanged, server_size)
    machine.count("cache_hits")
    return served, unchanged


def scan_message(machine: "SessionCore", uid: int, raw: bytes, server_size: int | None,
                 entry: CacheEntry | None | bool = False,
                 kept: dict[MemoryKey, tuple[bytes, bool, int | None]] | None = None) -> Step:
    """Scan ``raw`` (or know it from the cache), remember what is served, have the cache entry
    written; ``entry``: the cache's entry when the caller read it already (False: not read);
    ``kept``: where to put, too, what the session's memory was given to hold (it may not).

    Raises ``Withheld`` when the original could not be quarantined, or a rescan after an update
    did not complete under on-scan-error = block: nothing is served or kept."""
    identity = machine.cache_identity
    # Kept under the mailbox it was asked for, even if the client SELECTs another before the
    # scan ends.
    key = (machine.mailbox, machine.uidvalidity, uid)
    read_now = entry is False
    if entry is False:
        entry = yield from cache_lookup(machine, uid)
    record = entry.record if isinstance(entry, CacheEntry) else None
    # Hashed only against a record served unchanged: a message the cache does not know is not
    # hashed here (the cache's record hashes it once, CacheRecord.build); one SHA-256 of the
    # message is a few percent of its first fetch (bench/imap.py).
    digest = hashlib.sha256(raw).hexdigest() if record is not None and record.unchanged else None
    if not read_now and digest is not None and digest == record.original_sha256:
        # Not scanning is decided on the record as it is now: one read before the body was
        # fetched may predate a signature update, after which the message is scanned again.
        entry = yield from cache_lookup(machine, uid)
        record = entry.record if isinstance(entry, CacheEntry) else None
    if record is not None and record.unchanged and digest == record.original_sha256:
        # Served unchanged before, and it is the same message: no rescan
        # (docs/pitfalls.md#messages-never-change).
        served, unchanged = raw, True
    else:
        mailbox = (machine.mailbox or b"").decode("utf-8", "replace")
        reply: Scanned = yield Ask(ScanFetched(machine.new_ident(), uid, raw,
                                               f"imap://{machine.options.server_id}/{mailbox}/{uid}", identity))
        outcome = reply.outcome
        if outcome is None:
            # Protection is off (the current settings: disable/enable reach open sessions):
            # relayed unscanned, and neither held nor cached, so it is scanned once it is back on.
            return machine.tls_tagged(raw, True)
        if outcome.quarantine_failed:
            raise Withheld(outcome.error or "quarantine failed")
        served = outcome.delivered if outcome.delivered is not None else raw
        unchanged = outcome.delivered is None
        machine.count("scanned")
        # Scanned again after a signature update: nothing new found means what was served before
        # (proxy/imap_cache.py, "Repeat scan after update"). Only a scan that completed says so:
        # one that could not is no confirmation, and the record keeps its old generation.
        before = reply.before
        if before is not None and outcome.status == "unscanned":
            if not _temporary(outcome):
                # It can no longer be judged (a limit): the new verdict's form, per
                # on-scan-error, and recorded so; nothing unscanned passes as scanned.
                before = None
            elif reply.on_scan_error == "block":
                # clamd down, a time-out: not served now (FETCH NO; the message stays on the
                # server), rather than a notice today and the earlier bytes tomorrow.
                raise Withheld(f"scan after a signature update did not complete: {', '.join(outcome.reasons)}",
                               "could not scan the message again after a signature update, try later")
            else:
                # on-scan-error = pass: what it was served before (scanned by the earlier
                # signatures), not held in this session's memory: the next fetch tries again.
                return machine.tls_tagged(before, before is raw)
        if before is not None and identity is not None:
            served, unchanged = before, before is raw
            machine.tell(CacheRestamp(identity, uid, outcome.generation))
        elif identity is not None and not _temporary(outcome):
            # A time-out or engine error is not kept: a later fetch scans again.
            machine.tell(CacheWrite(identity, uid, raw, served, outcome))
    served, unchanged = machine.tls_tagged(served, unchanged)
    machine.memory.put(key, served, unchanged, server_size)
    if kept is not None:
        kept[key] = (served, unchanged, server_size)
    return served, unchanged


def _local_att(att: FetchAtt) -> bool:
    """Items a FETCH may ask for and still be answered from what we hold, without the server."""
    return att.name in ("UID", "RFC822.SIZE") or (att.carries_content and not att.sets_seen)


def answer_locally(machine: "SessionCore", command: Command, request: FetchRequest,
                   entries: dict[int, CacheEntry | None] | None = None) -> Step:
    """Answer a FETCH of one known message from what this session holds (served before, read
    ahead, or in the rewrite cache), with no round trip to the server; (number, UID) when
    answered, None when we cannot.

    Only forms that change nothing on the server qualify (no \\Seen to set, no modifiers), and
    only a message whose number and UID the server told us in this selection (view.py): the
    FETCH response is then byte for byte what the interception would have sent (the
    completion's text is ours, not the server's). ``entries`` gets the cache entries read, so
    a message's record is read once per FETCH."""
    if request.modifiers or not request.sequence_set.isdigit() or not all(_local_att(a) for a in request.atts):
        return None
    mailbox, validity = machine.mailbox, machine.uidvalidity
    if mailbox is None or validity is None:
        return None
    view = machine.view
    wanted = int(request.sequence_set)
    uid = wanted if request.uid else view.uid_of(wanted)
    if uid is None or view.number_of(uid) is None:
        return None
    found = yield from machine.prefetch.held((mailbox, validity, uid))
    if found is None:
        entry = yield from cache_lookup(machine, uid)
        if entries is not None:
            entries[uid] = entry  # the interception uses it, should we not answer here
        cached = yield from from_rewrite_cache(machine, uid, entry)
        found = None if cached is None else (*cached, None)
    if found is None:
        return None
    served, unchanged, server_size = found
    if unchanged and server_size is None and any(att.name == "RFC822.SIZE" for att in request.atts):
        return None  # the server's figure is what the client saw for it before (RFC 9051 §2.3.1.1)
    # The view may have moved while we waited (an EXPUNGE relayed meanwhile): look again.
    number = view.number_of(uid)
    if number is None or (not request.uid and number != wanted) or machine.mailbox != mailbox:
        return None
    items = [DataItem("UID", b"UID", b"%d" % uid, b"%d" % uid, False)]
    if server_size is not None:
        items.append(DataItem("RFC822.SIZE", b"RFC822.SIZE", b"%d" % server_size, b"%d" % server_size, False))
    record = Record(data=FetchData(number, tuple(items)), uid=uid, size=server_size or len(served),
                    served=served, unchanged=unchanged, resolved=True)
    verb = b"UID FETCH" if request.uid else b"FETCH"
    machine.to_client(render(record, request, command.tag + b" OK " + verb + b" completed\r\n"))
    machine.count("local_answers")
    return number, uid
