"""Reading ahead of a client that fetches a mailbox one message after the other (``Prefetch``).

mutt, fetchmail and many scripts ask for message n, read it, then ask for n+1: with a scan
between the server and the client, each message would cost the client a round trip to the
server and a scan while it waits. Once a client has asked for two consecutive messages alone,
the next few are fetched with ``BODY.PEEK[]`` (\\Seen stays as it was, RFC 9051 §6.4.5) and
scanned while the client handles the current one; its next FETCH is then answered from
memory (served.answer_locally). Bounded: a window of ``WINDOW_MESSAGES`` messages and
``WINDOW_BYTES`` octets, held in the session's memory, which has its own cap, topped up every
``REFILL_AFTER`` messages; sizes are asked for ``SIZES_AHEAD`` messages at a time, so a top-up
is one round trip. Our commands run between the client's, never beside one: a client command
that needs the server waits until our commands are answered (``settle``); the scans go on
meanwhile, each a step of its own. Everything ends with the session.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mailguard.protocols.imap.events import CacheEntry
from mailguard.protocols.imap.fetch import format_uid_set
from mailguard.protocols.imap.fetch_response import parse_fetch_response
from mailguard.protocols.imap.flows import Flow, Step, Until
from mailguard.protocols.imap.memory import MemoryKey
from mailguard.protocols.imap.responses import Response, ResponseKind
from mailguard.protocols.imap.served import Withheld, cache_lookup, scan_message
from mailguard.protocols.imap.sizes import largest_message

if TYPE_CHECKING:
    from mailguard.protocols.imap.core import SessionCore

__all__ = ["REFILL_AFTER", "SIZES_AHEAD", "WINDOW_BYTES", "WINDOW_MESSAGES", "Prefetch"]

#: messages fetched ahead at most
WINDOW_MESSAGES = 16
#: octets of message text fetched ahead at most (one larger message is fetched alone)
WINDOW_BYTES = 8 * 1024 * 1024
#: the window is topped up once this many of its messages were served: small, frequent
#: exchanges keep the server, the scans and the client busy at once instead of in turns
REFILL_AFTER = 4
#: message sizes asked for at once, ahead of the bodies (UID and RFC822.SIZE are a few dozen
#: octets a message): later top-ups then need no round trip for them
SIZES_AHEAD = 128


class Prefetch:
    def __init__(self, machine: "SessionCore", window: int = WINDOW_MESSAGES, window_bytes: int = WINDOW_BYTES) -> None:
        self.machine = machine
        self.window = window
        self.window_bytes = window_bytes
        #: our commands upstream, until answered
        self.flow: Flow | None = None
        #: messages fetched and being scanned
        self.pending: set[MemoryKey] = set()
        #: what their scans served, with the signature generation, for the ones the session's
        #: memory could not keep (a cap reached): the client's FETCH is answered from here
        #: rather than fetched and scanned again; at most ``window`` of them
        self._results: dict[MemoryKey, tuple[tuple[bytes, bool, int | None], str | None]] = {}
        #: (mailbox, UIDVALIDITY, number) of the last message a client FETCH asked for alone
        self._last: tuple[bytes | None, int | None, int] | None = None
        #: RFC822.SIZE by UID for the selected mailbox, learnt ahead of the bodies
        self._sizes: dict[int, int] = {}
        self._sizes_of: tuple[bytes | None, int | None] = (None, None)

    # --- what the session asks ------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self.flow is not None and not self.flow.done and not self.machine.done

    def settle(self) -> Step:
        """Until our commands are answered: the server connection is the client's again."""
        if self.busy:
            yield Until(lambda: not self.busy)

    def held(self, key: MemoryKey) -> Step:
        """What is served for ``key``, from memory or once its scan ends; None if not held."""
        if key in self.pending:
            yield Until(lambda: key not in self.pending)
        found = self.machine.memory.get(key)
        kept = self._results.pop(key, None)
        if found is None and kept is not None and kept[1] == self.machine.options.generation():
            found = kept[0]
        return found

    def after_answer(self, number: int, uid: int) -> None:
        """A client FETCH of message ``number`` alone was answered: read ahead if it reads in order."""
        machine = self.machine
        place = (machine.mailbox, machine.uidvalidity, number)
        sequential = self._last is not None and self._last == (place[0], place[1], number - 1)
        self._last = place
        if not machine.options.read_ahead or not sequential or machine.mailbox is None or self.busy:
            return
        view = machine.view
        last = min(len(view), number + self.window)
        missing = [n for n in range(number + 1, last + 1) if not self._have(view.uid_of(n))]
        if not missing or len(missing) < min(REFILL_AFTER, last - number):
            return
        self.flow = machine.spawn(self._run(missing[0], last), "read-ahead")

    def close(self) -> None:
        self.pending.clear()
        self._results.clear()
        self.flow = None

    def _have(self, uid: int | None) -> bool:
        if uid is None:
            return False
        key = (self.machine.mailbox, self.machine.uidvalidity, uid)
        return key in self.machine.memory or key in self.pending

    # --- our commands ---------------------------------------------------------------------------

    def _exchange(self, command: bytes, on_fetch: Callable[[Response], bool]) -> Step:
        """Send ``command`` under a tag of ours; FETCH responses to ``on_fetch`` (False: not
        ours, so the client gets it), every other response relayed as it comes."""
        machine = self.machine
        tag = machine.new_tag()
        machine.to_server(tag + b" " + command + b"\r\n")
        while True:
            response = yield from machine.response()
            if response.kind is ResponseKind.TAGGED and response.tag == tag:
                if response.word != "OK":
                    machine.notice("info", f"upstream refused our read-ahead: {response.raw[:200]!r}")
                return response.word == "OK"
            if response.word == "FETCH" and response.kind is ResponseKind.UNTAGGED and on_fetch(response):
                continue
            machine.relay(response)

    def _run(self, first: int, last: int) -> Step:
        machine = self.machine
        machine.take_server()
        try:
            yield from self._read(first, last)
        finally:
            machine.release_server()

    def _read(self, first: int, last: int) -> Step:
        machine = self.machine
        view = machine.view
        mailbox, validity = machine.mailbox, machine.uidvalidity
        if self._sizes_of != (mailbox, validity):
            self._sizes, self._sizes_of = {}, (mailbox, validity)
        sizes = self._sizes

        def on_meta(response: Response) -> bool:
            data = parse_fetch_response(response)
            uid, size = data.uid, data.size()
            if uid is None or size is None or len(data.items) != 2:
                return False
            view.learn(data.number, uid)
            sizes[uid] = size
            return True

        if any(view.uid_of(n) not in sizes for n in range(first, last + 1)):
            # FETCH, not UID FETCH, here too: no EXPUNGE can come while we hold the connection.
            through = min(len(view), max(last, first + SIZES_AHEAD - 1))
            ok = yield from self._exchange(b"FETCH %d:%d (UID RFC822.SIZE)" % (first, through), on_meta)
            if not ok:
                return
        largest = largest_message(machine)
        memory = machine.memory
        candidates: list[int] = []
        for number in range(first, last + 1):
            uid = view.uid_of(number)
            if uid is None or uid not in sizes or sizes[uid] > largest:
                continue  # the client's own FETCH deals with it (a notice for an oversize one)
            key = (mailbox, validity, uid)
            found = memory.get(key)
            if found is not None:
                memory.put(key, found[0], found[1], sizes[uid])
            elif key not in self.pending:
                candidates.append(uid)
        # Rewritten messages the cache holds are served from it (unchanged ones are fetched
        # again and checked against their record's hash, in scan_message, with the record
        # read here).
        entries: dict[int, CacheEntry | None] = {}
        wanted: dict[int, int] = {}
        total = 0
        for uid in candidates:
            entry = entries[uid] = yield from cache_lookup(machine, uid)
            if entry is not None and entry.blob is not None:
                blob, unchanged = machine.tls_tagged(entry.blob, entry.record.unchanged)
                memory.put((mailbox, validity, uid), blob, unchanged, sizes[uid])
                machine.count("cache_hits")
                continue
            if wanted and total + sizes[uid] > self.window_bytes:
                break
            wanted[uid] = sizes[uid]
            total += sizes[uid]
        if not wanted:
            return
        received: set[int] = set()
        for uid in wanted:
            self.pending.add((mailbox, validity, uid))

        def on_body(response: Response) -> bool:
            data = parse_fetch_response(response)
            uid = data.uid
            item = next((i for i in data.items if i.name == "BODY" and i.key.upper() == b"BODY[]"), None)
            if uid not in wanted or item is None or len(data.items) != 2:
                return False
            view.learn(data.number, uid)
            received.add(uid)  # type: ignore[arg-type]
            machine.spawn(self._scan(uid, item.value, wanted[uid], entries.get(uid)), "scan")  # type: ignore[index, arg-type]
            return True

        try:
            # By message number, not UID FETCH: a server sends no EXPUNGE during a FETCH
            # (RFC 9051 §7.5.1), and none may reach a client that has no command in progress.
            numbers = [view.number_of(uid) for uid in wanted]
            yield from self._exchange(b"FETCH " + format_uid_set([n for n in numbers if n]) + b" (UID BODY.PEEK[])",
                                      on_body)
        finally:
            # Messages the server did not send (expunged meanwhile): the client's FETCH asks.
            for uid in wanted.keys() - received:
                self.pending.discard((mailbox, validity, uid))

    def _scan(self, uid: int, raw: bytes, server_size: int, entry: CacheEntry | None) -> Step:
        machine = self.machine
        key = (machine.mailbox, machine.uidvalidity, uid)
        try:
            kept: dict[MemoryKey, tuple[bytes, bool, int | None]] = {}
            yield from scan_message(machine, uid, raw, server_size, entry, kept)
            if key in kept and key not in machine.memory:
                # Only what the memory was meant to hold (not a message relayed unscanned
                # while protection is off, nor one served as before a rescan that failed).
                self._results[key] = (kept[key], machine.options.generation())
                while len(self._results) > self.window:
                    del self._results[next(iter(self._results))]
        except Withheld:
            pass  # not served: the client's own FETCH asks again and is answered NO if it still fails
        finally:
            self.pending.discard(key)
