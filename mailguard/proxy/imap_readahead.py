"""Reading ahead of a client that fetches a mailbox one message after the other.

mutt, fetchmail and many scripts ask for message n, read it, then ask for n+1: with a scan
between the server and the client, each message would cost the client a round trip to the
server and a scan while it waits. Once a client has asked for two consecutive messages alone,
the next few are fetched with ``BODY.PEEK[]`` (\\Seen stays as it was, RFC 9051 §6.4.5) and
scanned while the client handles the current one; its next FETCH is then answered from
memory (imap_fetch.answer_locally). Bounded: a window of ``WINDOW_MESSAGES`` messages and
``WINDOW_BYTES`` octets, held in the session's memory, which has its own cap, topped up every
``REFILL_AFTER`` messages; sizes are asked for ``SIZES_AHEAD`` messages at a time, so a top-up
is one round trip. Our commands run between the client's, never beside one: a client command
that needs the server waits until our commands are answered (``settle``); the scans go on
meanwhile. Everything is cancelled with the session.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.imap.fetch import format_uid_set
from mailguard.protocols.imap.fetch_response import parse_fetch_response
from mailguard.protocols.imap.responses import Kind, Response
from mailguard.proxy.imap_cache import cache_key
from mailguard.proxy.imap_served import Withheld, next_answer, scan_message, tls_tagged

if TYPE_CHECKING:
    from mailguard.proxy.imap import ImapSession
    from mailguard.proxy.imap_served import MemoryKey

log = logging.getLogger("mailguard.proxy.imap")

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


class ReadAhead:
    def __init__(self, session: "ImapSession", window: int = WINDOW_MESSAGES, window_bytes: int = WINDOW_BYTES) -> None:
        self.session = session
        self.window = window
        self.window_bytes = window_bytes
        #: our commands upstream, until answered
        self.task: asyncio.Task[None] | None = None
        #: messages fetched and being scanned: resolved with (served, unchanged, server size)
        self.pending: dict["MemoryKey", asyncio.Future[tuple[bytes, bool, int | None]]] = {}
        self._scans: set[asyncio.Task[None]] = set()
        self._queue: asyncio.Queue[Response] = asyncio.Queue()
        #: (mailbox, UIDVALIDITY, number) of the last message a client FETCH asked for alone
        self._last: tuple[bytes | None, int | None, int] | None = None
        #: RFC822.SIZE by UID for the selected mailbox, learnt ahead of the bodies
        self._sizes: dict[int, int] = {}
        self._sizes_of: tuple[bytes | None, int | None] = (None, None)

    # --- what the session asks ------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    async def settle(self) -> None:
        """Until our commands are answered: the server connection is the client's again."""
        task = self.task
        if task is not None and not task.done():
            await asyncio.wait({task})  # not cancelled with the waiter; never raises

    async def held(self, key: "MemoryKey") -> tuple[bytes, bool, int | None] | None:
        """What is served for ``key``, from memory or once its scan ends; None if not held."""
        found = self.session.memory.get(key)
        if found is not None:
            return found
        future = self.pending.get(key)
        if future is None:
            return None
        await asyncio.wait({future})
        if future.cancelled() or future.exception() is not None:
            return None
        return future.result()

    def after_answer(self, number: int, uid: int) -> None:
        """A client FETCH of message ``number`` alone was answered: read ahead if it reads in order."""
        session = self.session
        place = (session.mailbox, session.uidvalidity, number)
        sequential = self._last is not None and self._last == (place[0], place[1], number - 1)
        self._last = place
        if not sequential or session.mailbox is None or (self.task is not None and not self.task.done()):
            return
        view = session.view
        last = min(len(view), number + self.window)
        missing = [n for n in range(number + 1, last + 1) if not self._have(view.uid_of(n))]
        if not missing or len(missing) < min(REFILL_AFTER, last - number):
            return
        self.task = asyncio.ensure_future(self._run(missing[0], last))

    def close(self) -> None:
        for task in (self.task, *self._scans):
            if task is not None:
                task.cancel()
        for future in self.pending.values():
            future.cancel()
        self.pending.clear()

    def _have(self, uid: int | None) -> bool:
        if uid is None:
            return False
        key = (self.session.mailbox, self.session.uidvalidity, uid)
        return key in self.session.memory or key in self.pending

    # --- our commands ---------------------------------------------------------------------------

    async def _divert(self, response: Response) -> None:
        self._queue.put_nowait(response)

    async def _exchange(self, command: bytes, on_fetch) -> bool:  # type: ignore[no-untyped-def]
        """Send ``command`` under a tag of ours; FETCH responses to ``on_fetch`` (False: not
        ours, so the client gets it), every other response relayed as it comes."""
        session = self.session
        tag = session.new_tag()
        session.send_upstream(tag + b" " + command + b"\r\n")
        while True:
            response = await next_answer(self._queue, session.context.answer_timeout)
            if response.kind is Kind.TAGGED and response.tag == tag:
                if response.word != "OK":
                    log.info("upstream refused our read-ahead: %r", response.raw[:200])
                return response.word == "OK"
            if response.word == "FETCH" and response.kind is Kind.UNTAGGED and on_fetch(response):
                continue
            session.relay(response)

    async def _run(self, first: int, last: int) -> None:
        session = self.session
        session.interceptor = self._divert
        try:
            await self._read(first, last)
        except RemoteProtocolError as exc:  # UpstreamSilent, or a response we cannot read
            # Nobody awaits this task's result: end the session here, as ImapSession.run would.
            log.warning("IMAP session ended: %s", exc)
            session.send_client(b"* BYE " + str(exc).encode("ascii", "replace") + b"\r\n")
            session.client.conn.close()  # the transport sends what is buffered first
            session.upstream.conn.close()
        finally:
            session.interceptor = None
            while not self._queue.empty():
                session.relay(self._queue.get_nowait())

    async def _read(self, first: int, last: int) -> None:
        session = self.session
        view = session.view
        mailbox, validity = session.mailbox, session.uidvalidity
        if self._sizes_of != (mailbox, validity):
            self._sizes, self._sizes_of = {}, (mailbox, validity)
        sizes = self._sizes

        def on_meta(response: Response) -> bool:
            data = parse_fetch_response(response)
            uid, size = data.uid, data.get("RFC822.SIZE")
            if uid is None or size is None or not size.value.isdigit() or len(data.items) != 2:
                return False
            view.learn(data.number, uid)
            sizes[uid] = int(size.value)
            return True

        if any(view.uid_of(n) not in sizes for n in range(first, last + 1)):
            # FETCH, not UID FETCH, here too: no EXPUNGE can come while we hold the connection.
            through = min(len(view), max(last, first + SIZES_AHEAD - 1))
            if not await self._exchange(b"FETCH %d:%d (UID RFC822.SIZE)" % (first, through), on_meta):
                return
        largest = min(session.context.limits.max_response_literal - 1,
                      session.context.limits.max_response_size - 64 * 1024)
        candidates: list[int] = []
        for number in range(first, last + 1):
            uid = view.uid_of(number)
            if uid is None or uid not in sizes or sizes[uid] > largest:
                continue  # the client's own FETCH deals with it (a notice for an oversize one)
            key = (mailbox, validity, uid)
            if key in session.memory:
                session.memory.put(key, *session.memory.get(key)[:2], sizes[uid])  # type: ignore[misc]
            elif key not in self.pending:
                candidates.append(uid)
        # Rewritten messages the cache holds are served from it (unchanged ones are fetched
        # again and checked against their record's hash, in scan_message).
        cached = self._cached(candidates) if candidates else {}
        if cached:
            stats = session.context.stats
            stats["cache_hits"] = stats.get("cache_hits", 0) + len(cached)
        wanted: dict[int, int] = {}
        total = 0
        for uid in candidates:
            if uid in cached:
                blob, unchanged = tls_tagged(session, *cached[uid])
                session.memory.put((mailbox, validity, uid), blob, unchanged, sizes[uid])
                continue
            if wanted and total + sizes[uid] > self.window_bytes:
                break
            wanted[uid] = sizes[uid]
            total += sizes[uid]
        if not wanted:
            return
        loop = asyncio.get_running_loop()
        received: set[int] = set()
        for uid in wanted:
            self.pending[(mailbox, validity, uid)] = loop.create_future()

        def on_body(response: Response) -> bool:
            data = parse_fetch_response(response)
            uid = data.uid
            item = next((i for i in data.items if i.name == "BODY" and i.key.upper() == b"BODY[]"), None)
            if uid not in wanted or item is None or len(data.items) != 2:
                return False
            view.learn(data.number, uid)
            received.add(uid)  # type: ignore[arg-type]
            task = asyncio.ensure_future(self._scan(uid, item.value, wanted[uid]))  # type: ignore[index]
            self._scans.add(task)
            task.add_done_callback(self._scans.discard)
            return True

        try:
            # By message number, not UID FETCH: a server sends no EXPUNGE during a FETCH
            # (RFC 9051 §7.5.1), and none may reach a client that has no command in progress.
            numbers = [view.number_of(uid) for uid in wanted]
            await self._exchange(b"FETCH " + format_uid_set([n for n in numbers if n]) + b" (UID BODY.PEEK[])", on_body)
        finally:
            # Messages the server did not send (expunged meanwhile): the client's FETCH asks.
            for uid in wanted.keys() - received:
                future = self.pending.pop((mailbox, validity, uid), None)
                if future is not None:
                    future.cancel()

    async def _scan(self, uid: int, raw: bytes, server_size: int) -> None:
        session = self.session
        key = (session.mailbox, session.uidvalidity, uid)
        future = self.pending.get(key)
        try:
            served, unchanged = await scan_message(session, uid, raw, server_size)
            if future is not None and not future.done():
                future.set_result((served, unchanged, server_size))
        except Withheld:
            pass  # not served: the client's own FETCH asks again and is answered NO if it still fails
        finally:
            if future is not None and not future.done():
                future.cancel()  # no answer from here (withheld, failed, cancelled): the FETCH asks
            if self.pending.get(key) is future:
                self.pending.pop(key, None)

    def _cached(self, uids: list[int]) -> dict[int, tuple[bytes, bool]]:
        """What the rewrite cache holds for ``uids``: a record read each (one ``pread``), and
        for a rewritten message its bytes; on the loop, since a thread hand-off costs more."""
        session = self.session
        cache, identity = session.context.cache, session.cache_identity
        found: dict[int, tuple[bytes, bool]] = {}
        if cache is None or identity is None:
            return found
        for uid in uids:
            key = cache_key(*identity, uid)
            record = cache.record(key)
            blob = None if record is None else cache.blob(key, record)
            if record is not None and blob is not None:
                found[uid] = (blob, record.unchanged)
        return found
