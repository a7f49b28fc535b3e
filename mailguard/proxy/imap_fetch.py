"""Scan before release: answering a client's FETCH from the scanned, rewritten message.

For a FETCH that asks for message text, or for anything derived from it (RFC822.SIZE,
BODYSTRUCTURE, BODY, ENVELOPE, BINARY.SIZE), the proxy

1. asks the server for the same messages with every other item, plus UID and
   RFC822.SIZE (under the client's tag, so the server's own completion is relayed);
2. fetches each message not in the cache whole, ``UID FETCH uids (BODY.PEEK[])``, in
   batches of bounded size, leaving \\Seen as it was (pitfalls §2.4, §2.8);
3. scans and rewrites it (or takes what was served before from the cache, §2.7);
4. answers every requested item from the served bytes: sections and partials cut from
   them, sizes and structures computed from them when the message changed, the section
   spec echoed as the client wrote it (§2.2, §2.3, §2.5);
5. sets \\Seen with ``UID STORE`` when the client's form implies it.

Every other response the server sends meanwhile keeps its place in the order.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict, deque
from typing import TYPE_CHECKING

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.imap.commands import Command
from mailguard.protocols.imap.fetch import FetchAtt, FetchRequest, SequenceSet, format_uid_set, parse_fetch
from mailguard.protocols.imap.fetch_response import DataItem, FetchData, parse_fetch_response
from mailguard.protocols.imap.responses import Kind, Response
from mailguard.proxy.imap_cache import CacheRecord, RewriteCache, cache_key
from mailguard.proxy.imap_render import Record, render

if TYPE_CHECKING:
    from mailguard.proxy.imap import ImapSession

log = logging.getLogger("mailguard.proxy.imap")

#: messages a session keeps in memory after serving them (Thunderbird's chunk loop re-asks)
SESSION_MEMORY_BYTES = 64 * 1024 * 1024
#: a UID FETCH of this many UIDs (not cached) gets its body in the same round trip; one, so
#: at most one message is held before its scan, as with the batches of the two-trip path
MAX_UIDS_IN_ONE_TRIP = 1


MemoryKey = tuple[bytes | None, int | None, int]


class SessionMemory:
    """What this session served lately, by (mailbox, UIDVALIDITY, UID): a chunk loop costs one scan.

    Each entry is (served bytes, unchanged, the server's RFC822.SIZE when it told us): with the
    size a FETCH of UID, RFC822.SIZE and body items is answered without asking the server."""

    def __init__(self, max_bytes: int = SESSION_MEMORY_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[MemoryKey, tuple[bytes, bool, int | None]] = OrderedDict()
        self._bytes = 0

    def get(self, key: MemoryKey) -> tuple[bytes, bool, int | None] | None:
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def __contains__(self, key: MemoryKey) -> bool:
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
        while self._bytes > self.max_bytes:
            _, (dropped, _, _) = self._items.popitem(last=False)
            self._bytes -= len(dropped)


async def intercept_fetch(session: "ImapSession", command: Command) -> None:
    try:
        request = parse_fetch(command)
    except RemoteProtocolError as exc:
        # Fail closed: a FETCH we cannot read might carry message text past us.
        session.send_client(command.tag + b" BAD " + str(exc).encode("ascii", "replace")[:120] + b"\r\n")
        return
    if not request.needs_message:
        await session.readahead.settle()
        session.forward(command.tag, command.raw)
        return
    await session.wait_quiet()
    answered = await answer_locally(session, command, request)
    if answered is None and session.readahead.busy:
        # Our read-ahead may be fetching this very message: once its commands are answered,
        # the message is held or being scanned, and is not fetched and scanned twice.
        await session.readahead.settle()
        answered = await answer_locally(session, command, request)
    if answered is None:
        await session.readahead.settle()
        await session.wait_quiet()
        interception = FetchInterception(session, command, request)
        await interception.run()
        records = interception.records
        answered = (records[0].data.number, records[0].uid) if len(records) == 1 else None
    if answered is not None and request.sequence_set.isdigit():
        session.readahead.after_answer(*answered)


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
    session.memory.put((session.mailbox, session.uidvalidity, uid), blob, cached.unchanged)
    stats = session.context.stats
    stats["cache_hits"] = stats.get("cache_hits", 0) + 1
    return blob, cached.unchanged, None


async def scan_message(session: "ImapSession", uid: int, raw: bytes, server_size: int | None) -> tuple[bytes, bool]:
    """Scan ``raw`` (or know it from the cache), remember what is served, write the cache entry."""
    identity = session.cache_identity
    cache = session.context.cache
    key = cache_key(*identity, uid) if identity is not None and cache is not None else None
    cached = cache.record(key) if key is not None and cache is not None else None
    if cached is not None and cached.unchanged and hashlib.sha256(raw).hexdigest() == cached.original_sha256:
        # Served unchanged before, and it is the same message: no rescan (§2.7).
        served, unchanged = raw, True
    else:
        source = f"imap://{session.context.server_id}/{(session.mailbox or b'').decode('utf-8', 'replace')}/{uid}"
        outcome = await session.context.scanner.scan(raw, source)
        served = outcome.delivered if outcome.delivered is not None else raw
        unchanged = outcome.delivered is None
        stats = session.context.stats
        stats["scanned"] = stats.get("scanned", 0) + 1
        if key is not None and cache is not None:
            # Hashed and written in the background (hashing releases the GIL), in the loop's
            # default executor, which asyncio.run and the engine's stop wait for: this session
            # serves from its memory meanwhile.
            task = asyncio.ensure_future(asyncio.to_thread(
                _store, cache, key, outcome.status, list(outcome.detections), list(outcome.reasons), raw, served))
            _pending_writes.add(task)
            task.add_done_callback(_pending_writes.discard)
            while len(_pending_writes) > MAX_PENDING_WRITES:
                # The disk is behind: wait for it rather than hold ever more messages.
                await asyncio.wait(set(_pending_writes), return_when=asyncio.FIRST_COMPLETED)
    session.memory.put((session.mailbox, session.uidvalidity, uid), served, unchanged, server_size)
    return served, unchanged


class FetchInterception:
    def __init__(self, session: "ImapSession", command: Command, request: FetchRequest) -> None:
        self.session = session
        self.command = command
        self.request = request
        self.tag = command.tag
        self.queue: asyncio.Queue[Response] = asyncio.Queue()
        #: what goes to the client, in order: ready bytes, or a Record to be rendered
        self.slots: deque[bytes | Record] = deque()
        self.sequence = SequenceSet(request.sequence_set)
        self.memory = session.memory
        #: bodies come with the first answer (known, uncached UIDs: one round trip, not two)
        self.bodies_at_once = self._explicit_uncached_uids()
        #: every message of the answer, in order
        self.records: list[Record] = []

    async def _divert(self, response: Response) -> None:
        self.queue.put_nowait(response)

    async def run(self) -> None:
        session = self.session
        session.interceptor = self._divert
        try:
            session.outstanding.add(self.tag)
            session.send_upstream(self._meta_command())
            completion = await self._collect(self.tag, self._on_meta)
            records = [slot for slot in self.slots if isinstance(slot, Record)]
            self.records = records
            await self._resolve(records)
            if self.request.sets_seen and records:
                await self._set_seen([r.uid for r in records])
            self._flush(final=True)
            self.session.send_client(session.filter_response(completion))
        finally:
            session.interceptor = None
            # responses that arrived after our last completion belong to nobody here
            while not self.queue.empty():
                session.relay(self.queue.get_nowait())

    # --- the upstream conversation ------------------------------------------------------------

    def _explicit_uncached_uids(self) -> bool:
        if not self.request.uid or b"*" in self.request.sequence_set:
            return False
        uids = [uid for low, high in self.sequence.ranges for uid in range(low, min(high, low + MAX_UIDS_IN_ONE_TRIP) + 1)]
        if len(uids) > MAX_UIDS_IN_ONE_TRIP:
            return False
        cache = self.session.context.cache
        for uid in uids:
            if self._memory_key(uid) in self.memory:
                return False
            key = self._cache_key(uid)
            if key is not None and cache is not None and cache.record(key) is not None:
                return False
        return True

    def _meta_command(self) -> bytes:
        items = [b"UID", b"RFC822.SIZE"]
        if self.bodies_at_once:
            # One octet more than we scan: a longer answer means the message is too large,
            # and it never costs more memory than that (the size is not known yet).
            items.append(b"BODY.PEEK[]<0.%d>" % (self._largest + 1))
        for att in self.request.atts:
            if att.carries_content or att.name in ("UID", "RFC822.SIZE", "BINARY.SIZE"):
                continue
            if att.raw.upper() not in (item.upper() for item in items):
                items.append(att.raw)
        verb = b"UID FETCH" if self.request.uid else b"FETCH"
        out = self.tag + b" " + verb + b" " + self.request.sequence_set + b" (" + b" ".join(items) + b")"
        if self.request.modifiers:
            out += b" " + self.request.modifiers
        return out + b"\r\n"

    async def _collect(self, tag: bytes, on_untagged) -> Response:  # type: ignore[no-untyped-def]
        """Responses until ``tag`` completes; untagged ones go to ``on_untagged``."""
        while True:
            response = await self.queue.get()
            if response.kind is Kind.TAGGED and response.tag == tag:
                return response
            if response.kind is Kind.TAGGED or response.kind is Kind.CONTINUATION:
                self.slots.append(self.session.filter_response(response))
                continue
            on_untagged(response)

    def _on_meta(self, response: Response) -> None:
        if response.word == "FETCH":
            data = parse_fetch_response(response)
            uid = data.uid
            in_set = uid in self.sequence if self.request.uid and uid is not None else data.number in self.sequence
            body = _first_window(data) if self.bodies_at_once else None
            expected = data.carries_content == (body is not None)
            if uid is not None:
                self.session.view.learn(data.number, uid)
            if uid is not None and in_set and expected:
                size_item = data.get("RFC822.SIZE")
                known = size_item is not None and size_item.value.isdigit()
                size = int(size_item.value) if known else 0  # type: ignore[union-attr]
                record = Record(data=data, uid=uid, size=size, raw=body, server_size=size if known else None)
                self.slots.append(record)
                return
        self._pass(response)

    def _pass(self, response: Response) -> None:
        self.slots.append(self.session.filter_response(response))

    async def _resolve(self, records: list[Record]) -> None:
        """Serve every record, in order, streaming: what is resolved at the front goes out at
        once, so a whole-mailbox FETCH holds at most about two batches of messages."""
        batch: list[Record] = []
        batch_size = held = 0
        limit = self.session.context.batch_bytes
        for record in records:
            if record.raw is not None and len(record.raw) <= self._largest:
                await self._serve(record, record.raw)
            elif record.raw is not None or record.size > self._largest:
                # Too large to hold and scan: a notice in its place, never the unscanned bytes
                # and never an empty answer (pitfalls §2.6).
                record.served, record.unchanged = oversize_notice(record.uid, record.size, self._largest), False
            elif self._from_caches(record):
                held += len(record.served or b"")
            else:
                batch.append(record)
                batch_size += record.size
            record.raw = None
            record.resolved = record.served is not None
            if batch and (batch_size >= limit or held >= limit):
                await self._fetch_and_scan(batch)
                batch, batch_size, held = [], 0, 0
            await self._flush_and_drain()
        if batch:
            await self._fetch_and_scan(batch)

    @property
    def _largest(self) -> int:
        """The largest message we fetch: one octet less than a FETCH literal may hold (the one-trip
        window asks for one more), and room for the framing within a whole response."""
        limits = self.session.context.limits
        return min(limits.max_response_literal - 1, limits.max_response_size - 64 * 1024)

    def _memory_key(self, uid: int) -> tuple[bytes | None, int | None, int]:
        return (self.session.mailbox, self.session.uidvalidity, uid)

    def _cache_key(self, uid: int) -> str | None:
        identity = self.session.cache_identity
        if identity is None or self.session.context.cache is None:
            return None
        return cache_key(*identity, uid)

    def _from_caches(self, record: Record) -> bool:
        found = self.memory.get(self._memory_key(record.uid))
        if found is not None:
            record.served, record.unchanged, _ = found
            if record.server_size is not None:
                self.memory.put(self._memory_key(record.uid), record.served, record.unchanged, record.server_size)
            return True
        key = self._cache_key(record.uid)
        cache = self.session.context.cache
        if key is None or cache is None:
            return False
        cached = cache.record(key)
        if cached is None:
            return False
        blob = cache.blob(key, cached)
        if blob is None:
            return False
        record.served, record.unchanged = blob, cached.unchanged
        self.memory.put(self._memory_key(record.uid), blob, cached.unchanged, record.server_size)
        self.session.context.stats["cache_hits"] = self.session.context.stats.get("cache_hits", 0) + 1
        return True

    async def _fetch_and_scan(self, batch: list[Record]) -> None:
        tag = self.session.new_tag()
        wanted = {record.uid for record in batch}
        bodies: dict[int, bytes] = {}

        def on_body(response: Response) -> None:
            if response.word == "FETCH":
                data = parse_fetch_response(response)
                body = _whole_body(data)
                if data.uid is not None:
                    self.session.view.learn(data.number, data.uid)
                if data.uid in wanted and body is not None:
                    bodies[data.uid] = body  # type: ignore[index]
                    return
            self._pass(response)

        self.session.send_upstream(tag + b" UID FETCH " + format_uid_set(list(wanted)) + b" (UID BODY.PEEK[])\r\n")
        done = await self._collect(tag, on_body)
        if done.word != "OK":
            log.warning("upstream refused our fetch of %s: %r", sorted(wanted), done.raw[:200])
        for record in batch:
            raw = bodies.pop(record.uid, None)
            if raw is not None:
                await self._serve(record, raw)
            # else: expunged meanwhile, answered with NIL items, never with nothing
            record.resolved = True
            await self._flush_and_drain()

    async def _serve(self, record: Record, raw: bytes) -> None:
        record.served, record.unchanged = await scan_message(self.session, record.uid, raw, record.server_size)

    async def _set_seen(self, uids: list[int]) -> None:
        """RFC 9051 §6.4.5: BODY[...], RFC822 and RFC822.TEXT set \\Seen; our PEEK did not."""
        tag = self.session.new_tag()
        self.session.send_upstream(tag + b" UID STORE " + format_uid_set(uids) + b" +FLAGS (\\Seen)\r\n")
        await self._collect(tag, self._pass)

    # --- answering the client -----------------------------------------------------------------

    async def _flush_and_drain(self) -> None:
        """Send what is ready, and wait while the client is behind: FETCH 1:* of a big mailbox
        streams message by message instead of piling up in our write buffer."""
        self._flush()
        await self.session.drain_client()

    def _flush(self, final: bool = False) -> None:
        """Send the slots from the front as far as they are ready."""
        while self.slots:
            slot = self.slots[0]
            if isinstance(slot, Record):
                if not slot.resolved and not final:
                    return
                self.session.send_client(render(slot, self.request))
                slot.release()
            else:
                self.session.send_client(slot)
            self.slots.popleft()


def oversize_notice(uid: int, size: int, largest: int) -> bytes:
    """What a client gets for a message larger than we can scan; the same bytes every time."""
    return (
        b"From: mailguard <mailguard@localhost>\r\n"
        b"Subject: [mailguard] message %d not delivered: too large to scan\r\n"
        b"X-MailGuard-Result: unscanned; reason=\"limit\"\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        b"This message (%d bytes) is larger than mailguard can scan (%d bytes,\r\n"
        b"web-and-email.email-client.threatsense.limits.max-object-size). It is still on\r\n"
        b"the server, unchanged.\r\n" % (uid, size, largest)
    )


#: cache writes queued at most (each holds a message) before scanning waits for the disk
MAX_PENDING_WRITES = 64
#: cache writes in flight (a strong reference, so none is collected before it ran)
_pending_writes: set[asyncio.Future[None]] = set()


def _store(cache: RewriteCache, key: str, status: str, detections: list[str], reasons: list[str],
           raw: bytes, served: bytes) -> None:
    cache.put(key, CacheRecord.build(status, detections, reasons, raw, served), served)


def _first_window(data: FetchData) -> bytes | None:
    """The ``BODY[]<0>`` window of a one-trip answer."""
    item = next((i for i in data.items if i.name == "BODY" and i.key.upper() == b"BODY[]<0>"), None)
    return None if item is None else item.value


def _whole_body(data: FetchData) -> bytes | None:
    item = next((i for i in data.items if i.name == "BODY" and i.key.upper() == b"BODY[]"), None)
    return None if item is None else item.value
