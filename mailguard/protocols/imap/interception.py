"""Scan before release: answering a client's FETCH from the scanned, rewritten message.

For a FETCH that asks for message text, or for anything derived from it (RFC822.SIZE,
BODYSTRUCTURE, BODY, ENVELOPE, BINARY.SIZE), the proxy

1. asks the server for the same messages with every other item, plus UID and
   RFC822.SIZE (under the client's tag, so the server's own completion is relayed);
2. fetches each message not in the cache whole, ``UID FETCH uids (BODY.PEEK[])``, in
   batches of bounded size, leaving \\Seen as it was (docs/pitfalls.md#scan-before-release,
   docs/pitfalls.md#the-seen-flag);
3. scans and rewrites it (or takes what was served before from the cache,
   docs/pitfalls.md#messages-never-change);
4. answers every requested item from the served bytes: sections and partials cut from
   them, sizes and structures computed from them when the message changed, the section
   spec echoed as the client wrote it (docs/pitfalls.md#partial-fetches,
   docs/pitfalls.md#section-specs-echoed-verbatim, docs/pitfalls.md#sizes-and-structure-after-a-rewrite);
5. sets \\Seen with ``UID STORE`` when the client's form implies it.

A message too large to hold is streamed through tagged unscanned when on-scan-error is
``pass`` and the request allows it (oversize.py), else answered with a notice.

Every other response the server sends meanwhile keeps its place in the order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.imap.commands import Command
from mailguard.protocols.imap.events import CacheEntry
from mailguard.protocols.imap.fetch import FetchRequest, SequenceSet, format_uid_set, parse_fetch
from mailguard.protocols.imap.fetch_response import FetchData, parse_fetch_response
from mailguard.protocols.imap.oversize import oversize_notice, stream_unscanned, streamable
from mailguard.protocols.imap.render import Record, render
from mailguard.protocols.imap.responses import Response, ResponseKind
from mailguard.protocols.imap.served import Withheld, answer_locally, cache_lookup, from_rewrite_cache, scan_message
from mailguard.protocols.imap.sizes import Handling, fetch_window, handling, largest_message
from mailguard.protocols.imap.flows import SENT, Step

if TYPE_CHECKING:
    from mailguard.protocols.imap.core import SessionCore

__all__ = ["FetchInterception", "intercept_fetch"]

#: the client's FETCH completion when a message could not be kept in quarantine
WITHHELD_COMPLETION = b" NO [UNAVAILABLE] mailguard: %s\r\n"  # Withheld.client_text

#: the client's FETCH completion when the server answered NO to our fetch of the message text
REFUSED_COMPLETION = b" NO [UNAVAILABLE] mailguard: the server did not send the message, try later\r\n"

#: items the proxy computes itself: not asked of the server in the first round trip
COMPUTED = frozenset({"UID", "RFC822.SIZE", "BINARY.SIZE", "BODYSTRUCTURE", "BODY", "ENVELOPE"})

#: a UID FETCH of this many UIDs (not cached) gets its body in the same round trip; one, so
#: at most one message is held before its scan, as with the batches of the two-trip path
MAX_UIDS_IN_ONE_TRIP = 1


def intercept_fetch(machine: "SessionCore", command: Command) -> Step:
    try:
        request = parse_fetch(command)
    except RemoteProtocolError as exc:
        # Fail closed: a FETCH we cannot read might carry message text past us.
        machine.to_client(command.tag + b" BAD " + str(exc).encode("ascii", "replace")[:120] + b"\r\n")
        return
    refused = machine.gate.fetch_refusal(request)
    if refused is not None:
        machine.notice("warning", "refused a client FETCH: " + refused.decode("ascii", "replace").strip())
        machine.to_client(command.tag + b" " + refused)
        return
    prefetch = machine.prefetch
    if not request.needs_message:
        yield from prefetch.settle()
        machine.gate.relayed_fetch(command.tag, request)
        machine.forward(command.tag, command.raw)
        return
    yield from machine.quiet()
    entries: dict[int, CacheEntry | None] = {}
    answered = yield from answer_locally(machine, command, request, entries)
    if answered is None and prefetch.busy:
        # Our read-ahead may be fetching this very message: once its commands are answered,
        # the message is held or being scanned, and is not fetched and scanned twice.
        yield from prefetch.settle()
        entries.clear()  # the read-ahead may have written the cache meanwhile
        answered = yield from answer_locally(machine, command, request, entries)
    if answered is None:
        yield from prefetch.settle()
        yield from machine.quiet()
        interception = FetchInterception(machine, command, request, entries)
        yield from interception.run()
        records = interception.records
        answered = (records[0].data.number, records[0].uid) if len(records) == 1 else None
    if answered is not None and request.sequence_set.isdigit():
        prefetch.after_answer(*answered)


class FetchInterception:
    def __init__(self, machine: "SessionCore", command: Command, request: FetchRequest,
                 entries: dict[int, CacheEntry | None] | None = None) -> None:
        self.machine = machine
        self.command = command
        self.request = request
        self.tag = command.tag
        #: what goes to the client, in order: ready bytes, or a Record to be rendered
        self.slots: deque[bytes | Record] = deque()
        self.sequence = SequenceSet(request.sequence_set)
        self.memory = machine.memory
        self.largest = largest_message(machine)
        #: bodies come with the first answer (known, uncached UIDs: one round trip, not two)
        self.bodies_at_once = False
        #: the cache's entry for each UID looked up already (read once per message)
        self.entries: dict[int, CacheEntry | None] = {} if entries is None else entries
        #: every message of the answer, in order
        self.records: list[Record] = []
        #: a message was not served (its original could not be quarantined, ...): the tag ends NO
        #: saying why (``Withheld.client_text``)
        self.withheld = False
        self.withheld_text = b""
        #: the server answered NO to our body fetch: the tag ends NO
        self.upstream_refused = False

    def run(self) -> Step:
        machine = self.machine
        self.bodies_at_once = yield from self._explicit_uncached_uids()
        machine.take_server()
        try:
            machine.outstanding.add(self.tag)
            machine.to_server(self._meta_command())
            completion = yield from self.collect(self.tag, self._on_meta)
            records = [slot for slot in self.slots if isinstance(slot, Record)]
            self.records = records
            yield from self._resolve(records)
            if self.request.sets_seen and records:
                yield from self._set_seen([r.uid for r in records])
            self._flush(final=True)
            if self.withheld or self.upstream_refused:
                machine.observe(completion)  # the server's completion, replaced by ours
            if self.withheld:
                # Lose nothing (docs/architecture.md#lose-nothing): without the original kept, the
                # rewrite is not served.
                machine.to_client(self.tag + WITHHELD_COMPLETION % self.withheld_text)
            elif self.upstream_refused:
                machine.to_client(self.tag + REFUSED_COMPLETION)
            else:
                machine.to_client(machine.filter_response(completion))
        finally:
            machine.release_server()

    # --- the upstream conversation ------------------------------------------------------------

    def _explicit_uncached_uids(self) -> Step:
        if not self.request.uid or b"*" in self.request.sequence_set:
            return False
        uids = [uid for low, high in self.sequence.ranges
                for uid in range(low, min(high, low + MAX_UIDS_IN_ONE_TRIP) + 1)]
        if len(uids) > MAX_UIDS_IN_ONE_TRIP:
            return False
        for uid in uids:
            if self._memory_key(uid) in self.memory:
                return False
            entry = yield from self._entry(uid)
            if entry is not None:
                return False
        return True

    def _entry(self, uid: int) -> Step:
        if uid not in self.entries:
            self.entries[uid] = yield from cache_lookup(self.machine, uid)
        return self.entries[uid]

    def _meta_command(self) -> bytes:
        items = [b"UID", b"RFC822.SIZE"]
        if self.bodies_at_once:
            # One octet more than we scan: a longer answer means the message is too large,
            # and it never costs more memory than that (the size is not known yet).
            items.append(b"BODY.PEEK[]<0.%d>" % (self.largest + 1))
        for att in self.request.atts:
            if att.carries_content or att.name in COMPUTED:
                continue  # answered from the scanned copy (render.py)
            if att.raw.upper() not in (item.upper() for item in items):
                items.append(att.raw)
        verb = b"UID FETCH" if self.request.uid else b"FETCH"
        out = self.tag + b" " + verb + b" " + self.request.sequence_set + b" (" + b" ".join(items) + b")"
        if self.request.modifiers:
            out += b" " + self.request.modifiers
        return out + b"\r\n"

    def collect(self, tag: bytes, on_untagged: Callable[[Response], None]) -> Step:
        """Responses until ``tag`` completes; untagged ones go to ``on_untagged``."""
        machine = self.machine
        while True:
            # A server that stops answering ends the session with BYE (the machine's timer).
            response = yield from machine.response()
            if response.kind is ResponseKind.TAGGED and response.tag == tag:
                return response
            if response.kind is ResponseKind.TAGGED or response.kind is ResponseKind.CONTINUATION:
                self.slots.append(machine.filter_response(response))
                continue
            on_untagged(response)

    def _on_meta(self, response: Response) -> None:
        if response.word == "FETCH":
            data = parse_fetch_response(response)
            uid = data.uid
            in_set = uid in self.sequence if self.request.uid and uid is not None else data.number in self.sequence
            body = _first_window(data) if self.bodies_at_once else None
            expected = data.carries_content == (body is not None)
            if self.bodies_at_once and data.carries_content and body is None:
                # Text, but not the <0.N> window we asked for: a server that ignores partials
                # (RFC 9051 §6.4.5) answers with BODY[] whole, and dropping it as unsolicited
                # ended the client's FETCH OK with no data. Those bytes are not what we asked
                # for and are not used; the message is fetched again in the plain form
                # (BODY.PEEK[], the two-trip path) and scanned as any other.
                self.machine.notice(
                    "warning", "the server answered our BODY.PEEK[]<0.N> with another form; fetching the message whole")
                expected, self.bodies_at_once = True, False
            if uid is not None:
                self.machine.view.learn(data.number, uid)
            if uid is not None and in_set and expected:
                claimed = data.size()
                record = Record(data=data, uid=uid, size=claimed or 0, raw=body, server_size=claimed)
                self.slots.append(record)
                return
        self.pass_on(response)

    def pass_on(self, response: Response) -> None:
        self.slots.append(self.machine.filter_response(response))

    def _resolve(self, records: list[Record]) -> Step:
        """Serve every record, in order, streaming: what is resolved at the front goes out at
        once, so a whole-mailbox FETCH holds at most about two batches of messages."""
        batch: list[Record] = []
        batch_size = held = 0
        limit = self.machine.options.batch_bytes
        for record in records:
            how = None if record.raw is None else self._handling(record, record.raw)
            if how is Handling.SCAN:
                yield from self._serve(record, record.raw)  # type: ignore[arg-type]
            elif how is not None:
                # More octets arrived than we can hold: too large to scan, whatever was claimed.
                if batch:
                    yield from self._fetch_and_scan(batch)
                    batch, batch_size, held = [], 0, 0
                record.raw = None
                yield from self._too_large(record, how)
                continue
            else:
                from_caches = yield from self._from_caches(record)
                if fetch_window(record.server_size, self.largest) and not from_caches:
                    # The server's RFC822.SIZE is a claim, a hint for buffering only: the octets
                    # that arrive decide (sizes.py); such a message is fetched alone.
                    if batch:
                        yield from self._fetch_and_scan(batch)
                        batch, batch_size, held = [], 0, 0
                    yield from self._fetch_and_scan([record])
                    continue
                if from_caches:
                    held += len(record.served or b"")
                else:
                    batch.append(record)
                    batch_size += record.size
            record.raw = None
            record.resolved = record.served is not None or record.withheld
            if batch and (batch_size >= limit or held >= limit):
                yield from self._fetch_and_scan(batch)
                batch, batch_size, held = [], 0, 0
            if self._flush():
                # Each record answered from memory goes out and is drained before the next
                # is rendered: a FETCH 1:* never holds the whole mailbox rendered at once.
                yield SENT
        if batch:
            yield from self._fetch_and_scan(batch)

    @property
    def _pass_oversize(self) -> bool:
        """A message too large to hold is delivered tagged unscanned (not replaced by a notice):
        on-scan-error = pass, and a request that can be answered while the message streams."""
        return self.machine.options.on_oversize == "pass" and streamable(self.request)

    def _memory_key(self, uid: int) -> tuple[bytes | None, int | None, int]:
        return (self.machine.mailbox, self.machine.uidvalidity, uid)

    def _from_caches(self, record: Record) -> Step:
        if record.served is not None:
            return True
        found = self.memory.get(self._memory_key(record.uid))
        if found is not None:
            record.served, record.unchanged, _ = found
            if record.server_size is not None:
                self.memory.put(self._memory_key(record.uid), record.served, record.unchanged, record.server_size)
            return True
        entry = yield from self._entry(record.uid)
        if entry is None:
            return False
        cached = yield from from_rewrite_cache(self.machine, record.uid, entry, record.server_size)
        if cached is None:
            return False
        record.served, record.unchanged = cached
        return True

    def _fetch_and_scan(self, batch: list[Record]) -> Step:
        machine = self.machine
        tag = machine.new_tag()
        wanted = {record.uid for record in batch}
        bodies: dict[int, bytes] = {}

        def on_body(response: Response) -> None:
            if response.word == "FETCH":
                data = parse_fetch_response(response)
                body = _whole_body(data)
                if data.uid is not None:
                    machine.view.learn(data.number, data.uid)
                if data.uid in wanted and body is not None:
                    bodies[data.uid] = body  # type: ignore[index]
                    return
            self.pass_on(response)

        # A message claimed larger than we scan is asked for one octet more than that: what
        # arrives says whether it is (sizes.py), never the claim.
        window = max((fetch_window(r.server_size, self.largest) or 0) for r in batch)
        partial = b"<0.%d>" % window if window else b""
        machine.to_server(tag + b" UID FETCH " + format_uid_set(list(wanted)) + b" (UID BODY.PEEK[]"
                          + partial + b")\r\n")
        done = yield from self.collect(tag, on_body)
        refused = done.word != "OK"
        if refused:
            machine.notice("warning", f"upstream refused our fetch of {sorted(wanted)}: {done.raw[:200]!r}")
            # The client's tag ends NO, never OK with the message as NIL (it would take that
            # for an empty message); what did come is served.
            self.upstream_refused = True
        for record in batch:
            raw = bodies.pop(record.uid, None)
            how = None if raw is None else self._handling(record, raw)
            if how is not None and how is not Handling.SCAN:
                yield from self._too_large(record, how)
                continue
            if raw is not None:
                yield from self._serve(record, raw)
            elif refused:
                record.withheld = True
            # else: expunged meanwhile, answered with NIL items, never with nothing
            record.resolved = True
            self._flush()

    def _handling(self, record: Record, raw: bytes) -> Handling:
        return handling(record.server_size, len(raw), self.largest, may_stream=self._pass_oversize)

    def _too_large(self, record: Record, how: Handling) -> Step:
        """Answer ``record``, whose octets are more than we can hold and scan."""
        if how is Handling.STREAM:
            # on-scan-error = pass: streamed through, tagged unscanned (oversize.py), once
            # everything before it has gone out; the literal announced is the server's size.
            self._flush()
            yield from stream_unscanned(self.machine, self.request, record, self.largest, self.collect, self.pass_on)
            record.resolved = record.streamed = True
            return
        # A notice in its place, never the unscanned bytes and never an empty answer
        # (docs/pitfalls.md#never-answer-a-fetch-with-nothing); also for a server whose size
        # claim the octets contradict.
        record.served, record.unchanged = self.machine.tls_tagged(
            oversize_notice(record.uid, max(record.size, self.largest + 1), self.largest), False)
        record.resolved = True
        self._flush()

    def _serve(self, record: Record, raw: bytes) -> Step:
        entry = self.entries.get(record.uid, False)
        try:
            record.served, record.unchanged = yield from scan_message(
                self.machine, record.uid, raw, record.server_size, entry)
        except Withheld as exc:
            record.served, record.withheld, self.withheld = None, True, True
            self.withheld_text = exc.client_text.encode()

    def _set_seen(self, uids: list[int]) -> Step:
        """RFC 9051 §6.4.5: BODY[...], RFC822 and RFC822.TEXT set \\Seen; our PEEK did not."""
        tag = self.machine.new_tag()
        self.machine.to_server(tag + b" UID STORE " + format_uid_set(uids) + b" +FLAGS (\\Seen)\r\n")
        yield from self.collect(tag, self.pass_on)

    # --- answering the client -----------------------------------------------------------------

    def _flush(self, final: bool = False) -> bool:
        """Send the slots from the front as far as they are ready: FETCH 1:* of a big mailbox
        streams message by message (the driver writes and drains each) instead of piling up.
        Whether anything was sent."""
        sent = False
        while self.slots:
            slot = self.slots[0]
            if isinstance(slot, Record):
                if not slot.resolved and not final:
                    return sent
                if not slot.withheld and not slot.streamed:
                    self.machine.to_client(render(slot, self.request))
                    sent = True
                slot.release()
            else:
                self.machine.to_client(slot)
                sent = True
            self.slots.popleft()
        return sent


def _first_window(data: FetchData) -> bytes | None:
    """The ``BODY[]<0>`` window of a one-trip answer."""
    item = next((i for i in data.items if i.name == "BODY" and i.key.upper() == b"BODY[]<0>"), None)
    return None if item is None else item.value


def _whole_body(data: FetchData) -> bytes | None:
    """``BODY[]``, or the ``BODY[]<0>`` window asked for a message claimed too large."""
    item = next((i for i in data.items if i.name == "BODY" and i.key.upper() in (b"BODY[]", b"BODY[]<0>")), None)
    return None if item is None else item.value
