"""Driving the sans-I/O POP3 machine (protocols/pop3.py) over two live connections.

The connections push every received byte straight into the machine (conn.py owns no buffer);
this loop takes the machine's events and performs them: writes (one ``write`` per answer, a
whole message included), scans in the worker pool, TLS switches, and the hand-over to a byte
relay. Reading from a side pauses when the machine holds enough of its bytes (``wants_data``),
so a pipelining client or a flooding server cannot grow memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from mailguard.protocols.pop3 import Phase, Pop3Limits, Pop3Options, Pop3Proxy, State, TlsMode
from mailguard.protocols.pop3_events import (
    NEED_DATA, Closed, LinesDropped, MessageUnscanned, ScanMessage, ScanResult, SendToClient, SendToServer, Side,
    StartTls, SwitchToRelay, TlsEstablished, TlsFailed,
)
from mailguard.protocols.pop3_readahead import READ_AHEAD_DEPTH
from mailguard.proxy.conn import Conn
from mailguard.proxy.limits import FetchSlot
from mailguard.scanpool.pool import account
from mailguard.proxy.context import SessionContext, peek_client_hello, refuse_over_tls
from mailguard.proxy.upstream import UpstreamRefused, needs_client_name, upgrade_upstream, upstream_certificate
from mailguard.scan.rewrite import TLS_HEADER, add_header, tls_value

__all__ = ["handle_pop3", "pop3_options"]

_AUTOLOGOUT = b"-ERR [SYS/TEMP] mailguard: idle for too long, closing\r\n"
_SERVER_SILENT = b"-ERR [SYS/TEMP] mailguard: the server stopped answering, closing\r\n"
# Phases in which an answer from the server is due or half received: silence there longer than
# limits.server-timeout ends the session (a server cannot hold a client forever mid-answer).
_ANSWER_DUE = frozenset({
    Phase.STATUS, Phase.BODY, Phase.STREAM_PASS, Phase.STREAM_DROP, Phase.STLS_REPLY,
    Phase.AHEAD_SIZE, Phase.AHEAD_LISTING, Phase.AHEAD_STATUS, Phase.AHEAD_BODY, Phase.AHEAD_DROP,
})
_STOPPING = b"-ERR [SYS/TEMP] mailguard is stopping, try again shortly\r\n"


def pop3_options(ctx: SessionContext) -> Pop3Options:
    config = ctx.config
    if not config.ssl_enabled:
        tls = TlsMode.RELAY
    elif ctx.host.tls.can_intercept:
        tls = TlsMode.INTERCEPT
    else:
        # No CA to mint leaves: STLS is handed to a relay rather than stripped, so the client's
        # choice of TLS stands (stripping it would be a downgrade); the session goes unscanned.
        tls = TlsMode.RELAY
    policy, limits = config.policy, config.limits
    return Pop3Options(
        tls=tls, implicit_tls=ctx.implicit_tls, on_oversize=policy.on_scan_error,
        read_ahead=READ_AHEAD_DEPTH,
        limits=Pop3Limits(max_message=policy.max_object_size, max_server_backlog=limits.max_session_buffer,
                          max_stream=max(limits.max_message_size, policy.max_object_size)),
    )


async def handle_pop3(ctx: SessionContext) -> None:
    machine = Pop3Proxy(pop3_options(ctx))
    host, client, upstream = ctx.host, ctx.client, ctx.upstream
    ctx.authenticated = lambda: machine.state is State.TRANSACTION
    wakeup = _Wakeup(host.idle_timeout)

    def sink(side: Side, conn: Conn):  # noqa: ANN202
        def receive(data: bytes) -> None:
            machine.receive_data(side, data)
            # Backpressure at once, not at the next NEED_DATA: while the loop waits for the
            # client to drain a streamed answer, the server must not fill memory behind it.
            if data and not machine.wants_data(side):
                conn.set_reading(False)
            wakeup.heard()
        return receive

    for side, data in ((Side.SERVER, ctx.greeting), (Side.CLIENT, ctx.client_early)):
        if data:  # b"" would mean end of stream
            machine.receive_data(side, data)
    for side, conn in ((Side.CLIENT, client), (Side.SERVER, upstream)):
        early = conn.attach(sink(side, conn))
        if early:
            machine.receive_data(side, early)
        if conn.eof:
            machine.receive_data(side, b"")
    draining = asyncio.ensure_future(host.draining.wait())
    draining.add_done_callback(lambda _: wakeup.wake())
    try:
        await _run(ctx, machine, wakeup.wait)
    except ConnectionError as exc:  # a peer gone, or one that reads nothing (Conn.drain)
        ctx.log.info("POP3 session ended: %s", exc)
    finally:
        draining.cancel()
        wakeup.close()


class _Wakeup:
    """The session's one wait: until bytes arrive or the engine drains (True), or nothing was
    heard from either peer for ``idle_timeout`` (False).

    One bare future per wait, resolved straight from data_received: the loop resumes the
    session in its next iteration. Waiting through asyncio.wait on Event.wait() tasks cost two
    task creations, two cancellations and two extra loop iterations per wake-up, and a timer
    per wait its own allocation and heap work; there are several wake-ups per message
    (bench/pop3.py), so the idle timer is one per session, re-armed only when it fires.
    """

    def __init__(self, idle_timeout: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.idle_timeout = idle_timeout
        self.last_heard = self.loop.time()
        self.waiter: asyncio.Future[bool] | None = None
        self.limit = idle_timeout
        self.timer = self.loop.call_later(idle_timeout, self._check_idle)

    def heard(self) -> None:
        self.last_heard = self.loop.time()
        self.wake()

    def wake(self, woke: bool = True) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(woke)

    def _check_idle(self) -> None:
        now = self.loop.time()
        quiet_until = self.last_heard + self.limit
        if self.waiter is None:
            next_check = now + self.limit  # busy, so not idle
        elif now < quiet_until:
            next_check = quiet_until  # heard from lately: look again when it could be idle
        else:
            self.wake(False)
            next_check = now + self.limit
        self.timer = self.loop.call_at(next_check, self._check_idle)

    async def wait(self, limit: float | None = None) -> bool:
        """``limit``: a shorter quiet time for this wait than the idle time-out (the server's
        answer is due); the timer is brought forward only when it would fire too late."""
        # Idle counts from the start of the wait, as a timer per wait would.
        self.last_heard = now = self.loop.time()
        self.limit = limit or self.idle_timeout
        if self.timer.when() > now + self.limit:
            self.timer.cancel()
            self.timer = self.loop.call_at(now + self.limit, self._check_idle)
        self.waiter = self.loop.create_future()
        try:
            return await self.waiter
        finally:
            self.waiter = None

    def close(self) -> None:
        self.timer.cancel()


async def _run(ctx: SessionContext, machine: Pop3Proxy, wait: Callable[[float | None], Awaitable[bool]]) -> None:
    ctx.host.count("pop3_sessions")
    slot = FetchSlot(ctx.host.fetch_slots)
    try:
        await _drive(ctx, machine, wait, slot)
    finally:
        slot.give_back()


def _fetches_message(command: bytes) -> bool:
    """A RETR or TOP (the client's or our read-ahead's): its answer is a message to hold and scan."""
    verb = command[:5].upper()
    return verb.startswith(b"RETR ") or verb.startswith(b"TOP ")


async def _drive(ctx: SessionContext, machine: Pop3Proxy, wait: Callable[[float | None], Awaitable[bool]],
                 slot: FetchSlot) -> None:
    host, client, upstream = ctx.host, ctx.client, ctx.upstream
    settings = host.config
    served_ahead = 0
    while True:
        if host.config is not settings:
            # enable/disable or a reload: a message scanned ahead under the old settings must
            # not be served under the new ones.
            settings = host.config
            machine.drop_read_ahead()
        event = machine.next_event()
        if event is NEED_DATA:
            if machine.phase is Phase.COMMAND:
                slot.give_back()  # an answer without a message (-ERR) ended the fetch
            client.set_reading(machine.wants_data(Side.CLIENT))
            upstream.set_reading(machine.wants_data(Side.SERVER))
            if host.draining.is_set() and machine.phase is Phase.COMMAND:
                client.write(_STOPPING)
                await client.drain(within=host.idle_timeout, peer="client")
                return
            answer_due = machine.phase in _ANSWER_DUE
            if not await wait(settings.limits.server_timeout if answer_due else None):
                if answer_due:
                    ctx.log.warning("the server was silent for %gs in an answer (limits.server-timeout)",
                                    settings.limits.server_timeout)
                    host.count("timed_out")
                    # Mid-message the client has part of it and no dot: it knows it is incomplete.
                    client.write(b"" if machine.phase is Phase.STREAM_PASS else _SERVER_SILENT)
                else:
                    ctx.log.info("idle time-out")
                    client.write(_AUTOLOGOUT)
                await client.drain(within=host.idle_timeout, peer="client")
                return
            continue
        if isinstance(event, SendToClient):
            if machine.served_ahead != served_ahead:  # an answer from read-ahead: counted as it goes
                host.count("read_ahead", machine.served_ahead - served_ahead)
                served_ahead = machine.served_ahead
            client.write(event.data)
            await client.drain(within=host.idle_timeout, peer="client")
        elif isinstance(event, SendToServer):
            if _fetches_message(event.data):
                await slot.take()  # while the scanners are behind, the message stays at the server
            upstream.write(event.data)
            await upstream.drain(within=host.idle_timeout, peer="server")
        elif isinstance(event, ScanMessage):
            result = await _scan(ctx, event)
            slot.give_back()
            machine.send(result)
        elif isinstance(event, MessageUnscanned):
            slot.give_back()  # streamed, not held
            host.count("unscanned")
            ctx.log.warning("message %d over max-object-size: %s unscanned", event.number,
                            "blocked" if event.blocked else "delivered")
        elif isinstance(event, LinesDropped):
            ctx.log.warning("%d line(s) of the server's %s answer were not listing lines: left out",
                            event.count, event.command)
        elif isinstance(event, StartTls):
            try:
                machine.send(await _start_tls(ctx, event))
            except _RelayUntouched as exc:
                # Both legs are between STLS and their handshakes: joined, they shake hands with
                # each other, end to end, as if we were not there.
                await _relay_from_here(ctx, f"relayed untouched after STLS: {exc}")
                return
        elif isinstance(event, SwitchToRelay):
            await _relay_from_here(ctx, "STLS without interception: relayed unscanned from here")
            return
        elif isinstance(event, Closed):
            if machine.stream_overrun:
                host.count("oversized")
            if event.error:
                host.count("errors")
                ctx.log.warning("POP3 session ended: %s", event.reason)
            else:
                ctx.log.info("POP3 session ended: %s", event.reason)
            await client.drain(within=host.idle_timeout, peer="client")
            if event.error:
                # The client may still be sending (a refused over-long line, say): closing with
                # its bytes unread makes the kernel send RST, which can discard our -ERR unread.
                await client.linger()
            return


async def _scan(ctx: SessionContext, event: ScanMessage) -> ScanResult:
    result = await _scanned(ctx, event)
    problems = ctx.upstream.certificate_problems
    if not problems or result.refusal:
        return result
    # Policy let a bad server certificate through (certificate-validity = allow): every message
    # from this connection says so (issue 5). Read now, not at connect: STLS may come later.
    delivered = event.message if result.message is None else result.message
    return ScanResult(add_header(delivered, TLS_HEADER, tls_value(problems)))


async def _scanned(ctx: SessionContext, event: ScanMessage) -> ScanResult:
    host = ctx.host
    config = host.config  # the current settings: disable/enable reach open sessions
    if not config.scanning:
        host.count("unscanned")
        return ScanResult(None)
    outcome = await host.pool.scan(event.message, f"{ctx.source} {event.command} {event.number}")
    account(host, ctx.log, outcome, f"message {event.number}", len(event.message))
    if outcome.quarantine_failed:
        # Lose nothing (docs/architecture.md#lose-nothing): without the original kept, the client gets an
        # error and the message stays on the server for a later try.
        return ScanResult(None, refusal="could not keep the original in quarantine, try later")
    return ScanResult(outcome.delivered)


async def _relay_from_here(ctx: SessionContext, why: str) -> None:
    """Hand both connections over to a byte relay until the session ends."""
    ctx.log.info("%s", why)
    ctx.host.count("relayed")
    ctx.upstream.detach()
    ctx.client.detach()
    await ctx.relay()


class _RelayUntouched(Exception):
    """The server the client named after STLS is one we leave alone (ssl-tls excluded-domains)."""


async def _start_tls(ctx: SessionContext, event: StartTls) -> TlsEstablished | TlsFailed:
    tls = ctx.host.tls
    named_by_client = needs_client_name(ctx.upstream)
    if event.side is Side.SERVER:
        if named_by_client:
            # Transparent mode, plaintext port: the server is known by its address only. Its
            # handshake waits for the name the client asks for in its own (below); until both
            # are up no byte moves on either leg.
            return TlsEstablished(Side.SERVER)
        try:
            await upgrade_upstream(ctx.upstream, ctx.upstream_host, tls)
        except UpstreamRefused as exc:
            return TlsFailed(Side.SERVER, str(exc))
        return TlsEstablished(Side.SERVER)
    name = ctx.upstream_host
    if named_by_client:
        named = await _client_named_server(ctx, event.preface)
        if isinstance(named, TlsFailed):
            return named
        name = named
    else:
        ctx.client.write(event.preface)  # no await before start_tls: see conn.Conn.start_tls
    context = tls.client_context([name], upstream_certificate(ctx.upstream))
    try:
        await ctx.client.start_tls(context, server_side=True)
    except (OSError, ConnectionError, asyncio.TimeoutError) as exc:
        return TlsFailed(Side.CLIENT, str(exc) or type(exc).__name__)
    return TlsEstablished(Side.CLIENT)


async def _client_named_server(ctx: SessionContext, preface: bytes) -> str | TlsFailed:
    """Answer STLS, read the server name from the client's ClientHello without taking it off the
    socket, and switch the server leg, verified against that name; the name, or why not."""
    ctx.client.set_reading(False)  # the ClientHello stays in the socket for the TLS layer
    ctx.client.write(preface)
    await ctx.client.drain(within=ctx.host.idle_timeout, peer="client")
    hello = await peek_client_hello(ctx.client, ctx.host.greeting_timeout)
    if not hello.server_name:
        reason = ("transparent mode: the client named no server (TLS SNI) after STLS, "
                  f"and {ctx.upstream_host} cannot be verified by address")
        await refuse_over_tls(ctx.host, ctx.client, "pop3", ctx.upstream_host, reason)
        return TlsFailed(Side.CLIENT, reason)
    if ctx.host.config.excluded_domain(hello.server_name, ctx.upstream_host):
        raise _RelayUntouched(f"excluded domain {hello.server_name}")
    try:
        await upgrade_upstream(ctx.upstream, hello.server_name, ctx.host.tls, named_by_client=True)
    except UpstreamRefused as exc:
        return TlsFailed(Side.CLIENT, str(exc))
    return hello.server_name
