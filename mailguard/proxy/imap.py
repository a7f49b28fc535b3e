"""Driving the sans-I/O IMAP machine (protocols/imap/machine.py) over two live connections.

The connections push every received byte straight into the machine (conn.py owns no buffer);
this loop takes the machine's events and performs them: writes (each drained, so a client that
does not read stops us reading the server), scans in the worker pool (side by side: the
read-ahead scans while the client reads), the rewrite cache's file I/O, TLS switches, and the
hand-over to a byte relay. Reading from a side pauses when the machine holds enough of its bytes
(``wants_data``); the machine's ``timer`` says how long each side may be silent, and why; a
write waits for a peer to read for at most the idle time.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mailguard.errors import MailguardError
from mailguard.protocols.events import (
    NEED_DATA, Closed, SendToClient, SendToServer, Side, StartTls, SwitchToRelay, TlsEstablished, TlsFailed,
)
from mailguard.protocols.imap.events import (
    CacheEntry, CacheLookup, CacheRestamp, CacheWrite, Limit, Notice, ScanFetched, Scanned,
)
from mailguard.protocols.imap.limits import DEFAULT_LIMITS, ImapLimits
from mailguard.protocols.imap.machine import (
    IDLE_TIMEOUT, READ_HIGH_WATER, UPSTREAM_ANSWER_TIMEOUT, ImapOptions, ImapProxy,
)
from mailguard.proxy.conn import Conn
from mailguard.proxy.context import peek_client_hello, refuse_over_tls
from mailguard.proxy.imap_cache import CacheRecord, RewriteCache, cache_key, host_generation
from mailguard.proxy.relay import relay
from mailguard.proxy.upstream import upstream_certificate
from mailguard.scan.rewrite import TLS_HEADER, add_header, tls_value
from mailguard.scanpool.pool import account

__all__ = ["ClientNamedTls", "ImapContext", "ImapDriver", "serve_imap"]

log = logging.getLogger("mailguard.proxy.imap")


@dataclass(frozen=True)
class ClientNamedTls:
    """How a session verifies a server against the name its client gives (transparent mode,
    protocols/imap/starttls.py)."""

    #: switch ``conn`` to TLS and verify the server against the name (raises to refuse it)
    upgrade: Callable[[Conn, str], Awaitable[None]]
    #: our side of the client's handshake, for the name and the server's certificate
    client_context: Callable[[str, bytes | None], ssl.SSLContext]
    #: whether the name is one of ssl-tls.excluded-domains
    excluded: Callable[[str], bool]
    #: how long the client may take to send its ClientHello
    hello_timeout: float
    #: the session host, to refuse a client that names no server (session.refuse_over_tls)
    host: Any = None


@dataclass
class ImapContext:
    """What a session needs from the engine; built once per route by the proxy core."""

    #: scans a message: ``await scanner.scan(raw, source)`` gives a ScanOutcomeLike (the
    #: engine's pool, or a test's stand-in)
    scanner: Any
    #: "host:port" of the upstream, part of every cache key
    server_id: str
    cache: RewriteCache | None = None
    limits: ImapLimits = DEFAULT_LIMITS
    #: offered to the client as STARTTLS when the upstream offers it; None: not offered
    client_tls: ssl.SSLContext | None = None
    #: performs STARTTLS's handshake on the upstream leg and verifies the certificate (raises
    #: to refuse it); None: TLS is not intercepted, and a client's STARTTLS turns the session
    #: into a byte relay rather than being refused (refusing it would be a downgrade)
    upgrade_upstream: Callable[[Conn], Awaitable[None]] | None = None
    #: transparent mode on a plaintext port: the server's STARTTLS waits for the client's, and is
    #: verified against the name the client asks for
    client_named_tls: ClientNamedTls | None = None
    #: both legs are already TLS (imaps ports): the greeting is relayed
    implicit_tls: bool = False
    #: a message too large to scan (response.on-scan-error): "pass" delivers it tagged unscanned
    #: where the request allows streaming it; "block" serves a notice instead
    on_oversize: str = "pass"
    #: message bytes fetched upstream per batch, at least one message
    batch_bytes: int = 32 * 1024 * 1024
    idle_timeout: float = IDLE_TIMEOUT
    #: set when the engine stops: sessions say BYE once no FETCH is half answered
    draining: asyncio.Event | None = None
    stats: dict[str, int] = field(default_factory=dict)
    #: see machine.UPSTREAM_ANSWER_TIMEOUT
    answer_timeout: float = UPSTREAM_ANSWER_TIMEOUT
    #: the engine (its current config and counters); None in tests without one: always scan
    host: Any = None
    #: the session's logger (engine sessions name the session in each line)
    log: Any = None
    #: unframed bytes a side may hold before we stop reading it (limits.max-session-buffer)
    read_high_water: int = READ_HIGH_WATER
    #: a server silent this long in the middle of a response ends the session (limits.server-timeout)
    server_timeout: float | None = None
    #: read ahead of a client that fetches message after message (protocols/imap/prefetch.py);
    #: on unless a test or a benchmark measures without it
    read_ahead: bool = True

    def options(self) -> ImapOptions:
        return ImapOptions(
            server_id=self.server_id, limits=self.limits, cache=self.cache is not None,
            intercept_tls=self.upgrade_upstream is not None,
            client_tls=self.client_tls is not None, client_named_tls=self.client_named_tls is not None,
            implicit_tls=self.implicit_tls, on_oversize=self.on_oversize, batch_bytes=self.batch_bytes,
            stats=self.stats, read_high_water=self.read_high_water, idle_timeout=self.idle_timeout,
            answer_timeout=self.answer_timeout, server_timeout=self.server_timeout, read_ahead=self.read_ahead,
            generation=host_generation(self.host) if self.host is not None else (lambda: None),
        )


class _RelayUntouched(Exception):
    """The server the client named after STARTTLS is one we leave alone (ssl-tls excluded-domains)."""


class _Failed(Exception):
    """A scan task failed: the session ends (nothing unscanned is delivered for it)."""


class ImapDriver:
    def __init__(self, client: Conn, upstream: Conn, context: ImapContext) -> None:
        self.client = client
        self.upstream = upstream
        self.context = context
        self.log = context.log or log
        self.machine = ImapProxy(context.options())
        self._tag_tls()
        self._waiter: asyncio.Future[bool] | None = None
        self._timer: asyncio.TimerHandle | None = None
        #: when each side was last heard (loop time)
        self._heard = {Side.CLIENT: 0.0, Side.SERVER: 0.0}
        #: the machine's limits now, each with the time it first appeared
        self._limits: list[tuple[Limit, float]] = []
        #: the machine's limits as ``timer`` gave them for the last wait
        self._given: list[Limit] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        #: the client was refused over TLS, and told why (session.refuse_over_tls)
        self._refused = ""

    # --- bytes in ----------------------------------------------------------------------------

    def _sink(self, side: Side, conn: Conn) -> Callable[[bytes], None]:
        machine, heard, clock = self.machine, self._heard, asyncio.get_running_loop().time

        def receive(data: bytes) -> None:
            heard[side] = clock()
            machine.receive_data(side, data)
            # Backpressure at once, not at the next NEED_DATA.
            if data and not machine.wants_data(side):
                conn.set_reading(False)
            self._wake()
        return receive

    def _wake(self, heard: bool = True) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(heard)

    async def _wait(self, limits: list[Limit]) -> str | None:
        """Until something happens (None), or one of the machine's ``limits`` runs out (its
        reason).

        Each limit counts from the later of when it first appeared and when its side was last
        heard: bytes from one side never restart the other side's limit. One bare future per
        wait, and one timer per session, moved only when it would fire too late: there are
        several waits per message (bench/imap.py), and a timer armed and cancelled for each cost
        more than the rest of the wait."""
        loop = asyncio.get_running_loop()
        if limits != self._given:
            # The same limits as the last wait (the common case) keep their starts as they are.
            self._given = limits
            now = loop.time()
            since = {limit: started for limit, started in self._limits}
            self._limits = [(limit, since.get(limit, now)) for limit in limits]
        self._waiter = waiter = loop.create_future()
        due = self._due()
        if due is not None and (self._timer is None or self._timer.when() > due[0]):
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(due[0], self._check_quiet)
        try:
            return None if await waiter else self._expired()
        finally:
            self._waiter = None

    def _due(self) -> tuple[float, str] | None:
        """When the first of the current limits runs out, and why."""
        heard = self._heard
        return min(((max(started, heard[limit.side]) + limit.seconds, limit.why)
                    for limit, started in self._limits), default=None)

    def _expired(self) -> str | None:
        due = self._due()
        return due[1] if due is not None and asyncio.get_running_loop().time() >= due[0] else None

    def _check_quiet(self) -> None:
        """The timer: wake the wait with False once a limit ran out, else look again when one
        could."""
        self._timer = None
        if self._waiter is None:
            return
        due = self._due()
        if due is None:
            return
        if asyncio.get_running_loop().time() >= due[0]:
            self._wake(False)
        else:
            self._timer = asyncio.get_running_loop().call_at(due[0], self._check_quiet)

    def _tag_tls(self) -> None:
        """Policy let a bad server certificate through (certificate-validity = allow): every
        message from this connection says so (issue 5). Read at each switch: STARTTLS may come later."""
        problems = self.upstream.certificate_problems
        if problems:
            value = tls_value(problems)
            self.machine.tls_tag = lambda message: add_header(message, TLS_HEADER, value)

    # --- the session ---------------------------------------------------------------------------

    async def run(self, *, client_early: bytes = b"", upstream_early: bytes = b"") -> None:
        machine = self.machine
        for side, data in ((Side.SERVER, upstream_early), (Side.CLIENT, client_early)):
            if data:  # b"" would mean end of stream
                machine.receive_data(side, data)
        for side, conn in ((Side.CLIENT, self.client), (Side.SERVER, self.upstream)):
            early = conn.attach(self._sink(side, conn))
            if early:
                machine.receive_data(side, early)
            if conn.eof:
                machine.receive_data(side, b"")
        draining = None
        if self.context.draining is not None:
            draining = asyncio.ensure_future(self.context.draining.wait())
            draining.add_done_callback(lambda _: (machine.stop(), self._wake()))
        try:
            await self._drive()
        except (ConnectionError, OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            self.log.info("IMAP session ended: %s", exc)
        finally:
            if draining is not None:
                draining.cancel()
            if self._timer is not None:
                self._timer.cancel()
            for task in self._tasks:
                task.cancel()
            # Free the messages now, not when the garbage collector finds the session
            # (bench/imap.py measures the RSS after).
            machine.close()
            self.client.close()
            self.upstream.close()

    async def _drive(self) -> None:
        machine, client, upstream = self.machine, self.client, self.upstream
        while True:
            if self._failure is not None:
                raise self._failure
            event = machine.next_event()
            if event is NEED_DATA:
                client.set_reading(machine.wants_data(Side.CLIENT))
                upstream.set_reading(machine.wants_data(Side.SERVER))
                expired = await self._wait(machine.timer())
                if expired is not None:
                    machine.timed_out(expired)
                continue
            if isinstance(event, SendToClient):
                client.write(event.data)
                await self._drain(client, Side.CLIENT)
            elif isinstance(event, SendToServer):
                upstream.write(event.data)
                await self._drain(upstream, Side.SERVER)
            elif isinstance(event, ScanFetched):
                task = asyncio.ensure_future(self._scan(event))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif isinstance(event, CacheLookup):
                machine.send(self._lookup(event))
            elif isinstance(event, CacheWrite):
                self._write(event)
            elif isinstance(event, CacheRestamp):
                cache = self.context.cache
                if cache is not None:
                    cache.restamp(cache_key(*event.cache, event.uid), event.generation)
            elif isinstance(event, Notice):
                getattr(self.log, event.level)("%s", event.text)
                if event.counter is not None and self.context.host is not None:
                    self.context.host.count(event.counter)
            elif isinstance(event, StartTls):
                try:
                    machine.send(await self._start_tls(event))
                except _RelayUntouched as exc:
                    # Both legs are between STARTTLS and their handshakes: joined, they shake
                    # hands with each other, end to end, as if we were not there.
                    machine.relayed = True
                    await self._relay(f"relayed untouched after STARTTLS: {exc}", b"", b"")
                    return
            elif isinstance(event, SwitchToRelay):
                await self._relay("STARTTLS without interception: relayed unscanned from here",
                                  event.client_early, event.server_early)
                return
            elif isinstance(event, Closed):
                if self._refused:
                    self.log.warning("IMAP session refused: %s", self._refused)
                elif event.error:
                    self.log.warning("IMAP session ended: %s", event.reason)
                else:
                    self.log.debug("IMAP session ended: %s", event.reason)
                return

    async def _drain(self, conn: Conn, side: Side) -> None:
        await conn.drain(within=self.context.idle_timeout, peer=side.value)

    async def _relay(self, why: str, client_early: bytes, server_early: bytes) -> None:
        self.log.info("%s", why)
        self.client.detach()
        self.upstream.detach()
        await relay(self.client, self.upstream, client_early=client_early, server_early=server_early,
                    idle_timeout=self.context.idle_timeout)

    # --- requests ------------------------------------------------------------------------------

    async def _scan(self, event: ScanFetched) -> None:
        try:
            reply = await self._scanned(event)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - ends the session, nothing delivered unscanned
            self._failure = exc
        else:
            if not self.machine.done:
                self.machine.send(reply)
        self._wake()

    async def _scanned(self, event: ScanFetched) -> Scanned:
        context, host = self.context, self.context.host
        if host is not None and not host.config.scanning:
            # Protection is off (the current settings: disable/enable reach open sessions).
            host.count("unscanned")
            return Scanned(event.ident, None)
        outcome = await context.scanner.scan(event.message, event.source)
        if host is not None:
            account(host, self.log, outcome, f"message UID {event.uid}", len(event.message))
        before = None
        cache = context.cache
        if event.cache is not None and cache is not None and not outcome.quarantine_failed:
            before = cache.served_before(cache_key(*event.cache, event.uid), event.message, outcome.located)
        policy = getattr(getattr(host, "config", None), "policy", None)
        on_scan_error = policy.on_scan_error if policy is not None else context.on_oversize
        return Scanned(event.ident, outcome, before, on_scan_error)

    def _lookup(self, event: CacheLookup) -> CacheEntry:
        """A record read once (one ``pread``), and for a rewritten message its bytes; on the
        loop, since a thread hand-off costs more (bench/imap.py)."""
        cache = self.context.cache
        if cache is None:
            return CacheEntry(event.ident)
        key = cache_key(*event.cache, event.uid)
        record = cache.record(key)
        blob = None if record is None else cache.blob(key, record)
        return CacheEntry(event.ident, record, blob)

    def _write(self, event: CacheWrite) -> None:
        cache = self.context.cache
        if cache is None:
            return
        outcome = event.outcome
        # On the loop: a record is a SHA-256 of the message (~60 µs for 100 KB) and one
        # appended line, plus a file for a rewritten message; handing it to a thread cost
        # more than that (bench/imap.py).
        try:
            cache.put(cache_key(*event.cache, event.uid),
                      CacheRecord.build(outcome.status, list(outcome.detections), list(outcome.reasons),
                                        event.original, event.served, outcome.generation, outcome.located),
                      event.served)
        except OSError as exc:
            # Served all the same: without the record a later fetch scans the message again
            # (same engine, same rewrite), which is slower, not less safe.
            self.log.warning("rewrite cache not written: %s", exc)
            if self.context.host is not None:
                self.context.host.count("errors")

    async def _start_tls(self, event: StartTls) -> TlsEstablished | TlsFailed:
        context = self.context
        named = context.client_named_tls
        if event.side is Side.SERVER:
            if named is not None:
                # Transparent mode, plaintext port: the server is known by its address only. Its
                # handshake waits for the name the client asks for in its own (below). Nothing
                # is read from it meanwhile: a byte that came now would be plaintext (the
                # machine refuses the session if one did, starttls.client_starttls).
                self.upstream.set_reading(False)
                return TlsEstablished(Side.SERVER)
            if context.upgrade_upstream is None:  # the machine asked what it was not configured for
                return TlsFailed(Side.SERVER, "internal error: TLS on the server leg with no way to make it")
            try:
                await context.upgrade_upstream(self.upstream)
            except MailguardError as exc:
                return TlsFailed(Side.SERVER, str(exc))
            self._tag_tls()
            return TlsEstablished(Side.SERVER)
        client = self.client
        if named is None:
            if context.client_tls is None:  # the machine asked what it was not configured for
                return TlsFailed(Side.CLIENT, "internal error: TLS for the client with no certificate")
            client.write(event.preface)  # no await before start_tls: see conn.Conn.start_tls
            tls = context.client_tls
        else:
            client.set_reading(False)  # the ClientHello stays in the socket for the TLS layer
            client.write(event.preface)
            await self._drain(client, Side.CLIENT)
            hello = await peek_client_hello(client, named.hello_timeout)
            if not hello.server_name:
                address = (self.upstream.peer() or ("",))[0]
                reason = ("transparent mode: the client named no server (TLS SNI) after STARTTLS, "
                          f"and {address} cannot be verified by address")
                await refuse_over_tls(named.host, client, "imap", address, reason)
                self._refused = reason
                return TlsFailed(Side.CLIENT, reason)
            if named.excluded(hello.server_name):
                raise _RelayUntouched(f"excluded domain {hello.server_name}")
            try:
                await named.upgrade(self.upstream, hello.server_name)
            except MailguardError as exc:
                return TlsFailed(Side.CLIENT, str(exc))
            self._tag_tls()
            tls = named.client_context(hello.server_name, upstream_certificate(self.upstream))
        try:
            await client.start_tls(tls, server_side=True)
        except (OSError, ConnectionError, asyncio.TimeoutError, ssl.SSLError) as exc:
            return TlsFailed(Side.CLIENT, str(exc) or type(exc).__name__)
        return TlsEstablished(Side.CLIENT)


async def serve_imap(client: Conn, upstream: Conn, context: ImapContext, *, client_early: bytes = b"",
                     upstream_early: bytes = b"") -> None:
    """The protocol handler the proxy core calls for an IMAP connection pair."""
    await ImapDriver(client, upstream, context).run(client_early=client_early, upstream_early=upstream_early)
