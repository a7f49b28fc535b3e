"""One client connection, from accept to close: where it goes and who handles it.

In order:

1. The upstream: the route's (explicit mode) or the original destination (transparent mode).
   In transparent mode on an implicit-TLS port the client's ClientHello is first peeked at
   (MSG_PEEK: the bytes stay for the TLS layer; bounded in size and by the greeting time-out) for
   the server name it asked for (SNI, protocols/clienthello.py). That name, not the destination
   IP, is what excluded-domains is matched against, what the server's certificate is verified
   against and what our leaf names; the connection still goes to the original destination IP.
2. Relayed untouched, never scanned: filtering off, an excluded IP (the client's address, the
   upstream as given, or the address the server leg actually connected to, so a route naming its
   server by host name is covered), an excluded domain, protection off (``mailguard disable``),
   or implicit TLS we may not or cannot intercept (``ssl-tls.enabled`` off, pop3s/imaps
   disabled, no CA).
3. Implicit TLS (the upstream port is in the pop3s/imaps lists): the server leg first, verified
   per ``certificate-validity.*``; then the client's handshake, answered with a leaf minted for
   the name it asked for (SNI) or the configured upstream name.
   Transparent mode never verifies against an IP address (real providers' certificates name
   hosts only): an implicit-TLS client that sent no SNI is refused (our TLS, then ``-ERR`` /
   ``* BYE`` saying why, and a log line) unless an excluded IP let it through untouched in step 2;
   on a plaintext port the session is scanned, and a STLS/STARTTLS towards the server waits for
   the client's and is verified against the name the client asks for in the handshake that
   follows it (``upstream.require_client_name``; pop3_session.py, protocols/imap/starttls.py).
4. The protocol. On a port in a protocol's port list (the upstream port of a route, or the
   original destination port in transparent mode) it is that protocol: the handler checks the
   greeting as leniently as clients do, and the greeting never decides whether to scan. There no
   greeting within the greeting time-out, a client that speaks before the server greets, or a
   server that closes first is refused (``-ERR`` / ``* BYE``, then close), never relayed. On any
   other port the greeting is sniffed (protocols/sniff.py, lenient too); a session it does not
   recognise is blocked or relayed byte for byte as ``protocol-filtering.unrecognized`` says,
   logged as a warning and counted (``unrecognized``). Then the session goes to the registered
   handler for its protocol: ``PROTOCOL_HANDLERS["pop3"]``, ``PROTOCOL_HANDLERS["imap"]``;
   protocols whose scanning is disabled are relayed byte for byte.

``PROTOCOL_HANDLERS`` is the dispatch point for the protocol engines: POP3 (pop3_session.py)
and IMAP (imap_handler.py). What a handler gets from here, ``SessionContext``, lives in
context.py, so the handlers never import this module.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from mailguard.protocols.sniff import Greeting, GreetingSniffer
from mailguard.proxy.conn import Conn
from mailguard.proxy.context import (
    Handler, SessionContext, SessionHost, peek_client_hello, refuse_over_tls, tell_client,
)
from mailguard.proxy.imap_handler import handle_imap
from mailguard.proxy.limits import refusal_line
from mailguard.proxy.pop3_session import handle_pop3
from mailguard.proxy.relay import relay
from mailguard.proxy.upstream import (
    TlsKit, UpstreamRefused, connect_upstream, require_client_name, upgrade_upstream,
    upstream_certificate,
)

if TYPE_CHECKING:
    from mailguard.proxy.runconfig import RunConfig

__all__ = ["PROTOCOL_HANDLERS", "refuse_at_limit", "run_session"]

log = logging.getLogger("mailguard.proxy")


async def relay_unscanned(ctx: SessionContext, protocol: str) -> None:
    ctx.log.info("%s session relayed unscanned", protocol)
    ctx.host.count("relayed")
    await ctx.relay(client_early=ctx.client_early, server_early=ctx.greeting)


PROTOCOL_HANDLERS: dict[str, Handler] = {"pop3": handle_pop3, "imap": handle_imap}


class _Log(logging.LoggerAdapter):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['session']}] {msg}", kwargs


async def run_session(host: SessionHost, client: Conn, upstream_addr: tuple[str, int],
                      number: int, *, mark_upstream: bool = False) -> None:
    config = host.config
    upstream_host, upstream_port = upstream_addr
    # Only transparent-mode connections carry the socket mark: their upstream is an IP address.
    transparent = mark_upstream
    peer = client.peer() or ("?", 0)
    session_log = _Log(log, {"session": f"#{number} {peer[0]}:{peer[1]}->{upstream_host}:{upstream_port}"})
    upstream: Conn | None = None
    try:
        implicit = config.implicit_tls_protocol(upstream_port)
        # The name TLS is verified against and the leaf is made for: the route's host, or in
        # transparent mode the name in the client's ClientHello (SNI); never a bare IP address.
        tls_name: str | None = upstream_host
        if transparent:
            tls_name = None
            if implicit and config.filtering:
                hello = await peek_client_hello(client, host.greeting_timeout)
                tls_name = hello.server_name
                if not hello.complete or not hello.valid:
                    session_log.info("no TLS ClientHello from the client (%s)",
                                     "time-out" if not hello.complete else "not TLS")
        untouched = _why_untouched(config, host.tls, peer[0], upstream_host, implicit, tls_name)
        if untouched:
            session_log.info("relayed untouched: %s", untouched)
            host.count("relayed")
            upstream = await connect_upstream(upstream_host, upstream_port, mark=mark_upstream)
            await relay(client, upstream, idle_timeout=host.idle_timeout)
            return
        try:
            upstream = await connect_upstream(upstream_host, upstream_port, mark=mark_upstream)
        except UpstreamRefused as exc:
            await _refuse_client(host, client, implicit, upstream_port, config, tls_name or upstream_host,
                                 str(exc), session_log, str(exc))
            return
        server_ip = (upstream.peer() or ("",))[0]
        if config.excluded_ip(server_ip):
            # A route may name its server by host name: the address it resolved to counts too.
            session_log.info("relayed untouched: excluded IP (server address %s)", server_ip)
            host.count("relayed")
            await relay(client, upstream, idle_timeout=host.idle_timeout)
            return
        if implicit:
            if tls_name is None:
                reason = (f"transparent mode: the client named no server (TLS SNI), and {upstream_host} "
                          "cannot be verified by address; add it to excluded-ips to let it through")
                await _refuse_client(host, client, implicit, upstream_port, config, upstream_host, reason,
                                     session_log, f"refused: {reason}")
                return
            try:
                await upgrade_upstream(upstream, tls_name, host.tls)
            except UpstreamRefused as exc:
                await _refuse_client(host, client, implicit, upstream_port, config, tls_name, str(exc),
                                     session_log, str(exc))
                return
            context = host.tls.client_context([tls_name], upstream_certificate(upstream))
            try:
                await client.start_tls(context, server_side=True, timeout=host.greeting_timeout)
            except (OSError, ConnectionError, asyncio.TimeoutError) as exc:
                session_log.info("client TLS handshake failed: %s", exc or type(exc).__name__)
                host.count("errors")
                return
        elif transparent:
            require_client_name(upstream, (
                f"transparent mode: TLS with {upstream_host} refused: only its IP address is known, "
                "which its certificate cannot be verified against; use the implicit-TLS port, "
                "explicit mode, or excluded-ips"))
        name = tls_name or upstream_host
        kind, reason, greeting, client_early = await _sniff(client, upstream, host.greeting_timeout)
        known = config.protocol_of_port(upstream_port)
        if known is not None and reason in ("client", "closed", "timeout"):
            # A port in a protocol's list: the protocol is known, and a session that does not
            # follow it is refused (an error line in that protocol, then close), never relayed.
            why = _why_no_greeting(reason, host.greeting_timeout)
            session_log.warning("refused%s: %s", " (TLS intercepted)" if implicit else "", why)
            host.count("errors")
            await tell_client(client, known, why)
            return
        if known is not None:
            kind = Greeting.POP3 if known.startswith("pop3") else Greeting.IMAP
        ctx = SessionContext(host, config, client, upstream, name, upstream_port,
                             bool(implicit), greeting, client_early,
                             f"{kind.value}://{name}:{upstream_port}", session_log)
        protocol = kind.value + ("s" if implicit else "")
        if kind is Greeting.OPAQUE:
            await _unrecognized(ctx, reason)
        elif not config.protocols.get(protocol, False):
            await relay_unscanned(ctx, f"{protocol.upper()} (scanning disabled)")
        else:
            await _until_logged_in(ctx, protocol, PROTOCOL_HANDLERS[kind.value](ctx))
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - one session's bug must not take the server down
        session_log.exception("session failed")
        host.count("errors")
    finally:
        client.close()
        if upstream is not None:
            upstream.close()


def _why_no_greeting(reason: str | None, timeout: float) -> str:
    """Words for why the sniffer (``_sniff``) found no POP3 or IMAP greeting."""
    return {"client": "the client spoke before the server greeted",
            "timeout": f"no server greeting within {timeout:g}s",
            "closed": "the server closed the connection before greeting"}.get(reason or "", "not a POP3 or IMAP greeting")


async def _unrecognized(ctx: SessionContext, reason: str | None) -> None:
    """A session on a port in no protocol's list whose protocol the greeting did not tell:
    blocked or relayed as protocol-filtering.unrecognized says, and always said and counted,
    since either way nothing of it is scanned."""
    why = _why_no_greeting(reason, ctx.host.greeting_timeout)
    if reason == "closed":
        ctx.log.info("%s", why)  # nothing was said: nothing to block or relay
        return
    ctx.host.count("unrecognized")
    if ctx.config.unrecognized == "relay":
        ctx.log.warning("unrecognized session (%s): relayed byte for byte, unscanned "
                        "(protocol-filtering.unrecognized = relay)", why)
        ctx.host.count("relayed")
        await ctx.relay(client_early=ctx.client_early, server_early=ctx.greeting)
    else:
        ctx.log.warning("unrecognized session (%s): closed (protocol-filtering.unrecognized = block)", why)
        await ctx.client.linger()


async def _until_logged_in(ctx: SessionContext, protocol: str, handling: Awaitable[None]) -> None:
    """Run the handler; a client not logged in ``limits.login-timeout`` after it connected is
    told (``-ERR [SYS/TEMP]`` / ``* BYE [UNAVAILABLE]``) and the session ended, so a client that
    connects and idles holds a session slot for that long, not for the 30-minute idle time-out.
    The answer goes between two whole answers of the handler: each is one write."""
    task = asyncio.ensure_future(handling)
    limit = ctx.config.limits.login_timeout
    try:
        done, _ = await asyncio.wait({task}, timeout=limit)
        if not done and not ctx.authenticated():
            ctx.log.info("not logged in within %gs (limits.login-timeout): closing", limit)
            ctx.host.count("timed_out")
            ctx.client.write(refusal_line(protocol, f"not logged in within {limit:g}s, closing"))
            task.cancel()
            await asyncio.wait({task})
            await ctx.client.drain(within=ctx.host.idle_timeout, peer="client")
            return
        await task
    finally:
        task.cancel()


def _why_untouched(config: "RunConfig", tls: TlsKit, client_ip: str, upstream_host: str,
                   implicit: str | None, tls_name: str | None) -> str:
    if not config.filtering:
        return "protocol filtering is off"
    if config.excluded_ip(client_ip, upstream_host):
        return "excluded IP"
    if config.excluded_domain(tls_name, upstream_host):
        return "excluded domain"
    if not config.protection:
        return "email protection is disabled"
    if implicit:
        if not config.ssl_enabled:
            return "TLS interception is off (ssl-tls.enabled)"
        if not config.protocols.get(implicit, False):
            return f"{implicit} scanning is disabled"
        if not tls.can_intercept:
            return f"no interception CA ({tls.problem})"
    return ""


async def _refuse_client(host: SessionHost, client: Conn, implicit: str | None, port: int,
                         config: "RunConfig", upstream_host: str, reason: str, log: Any, logged: str) -> None:
    """Log ``logged`` as a warning, count an error, and tell the client in its own protocol why
    there is no session (docs/pitfalls.md#verifying-the-server)."""
    log.warning("%s", logged)
    host.count("errors")
    protocol = _protocol_of(implicit, port, config)
    if implicit and host.tls.can_intercept:
        await refuse_over_tls(host, client, protocol, upstream_host, reason)
        return
    await tell_client(client, protocol, reason)


async def refuse_at_limit(host: SessionHost, client: Conn, upstream: tuple[str, int], reason: str,
                          *, transparent: bool) -> None:
    """Tell a client refused at a session limit why, in the protocol of the port it came for
    (``-ERR [SYS/TEMP]`` / ``* BYE [UNAVAILABLE]``: try again later), then close. The server is
    never contacted: that is what the limit spares it. On an implicit-TLS port the answer needs
    our TLS first; transparent mode knows no name for a leaf there, so the client is just closed."""
    name, port = upstream
    implicit = host.config.implicit_tls_protocol(port)
    protocol = _protocol_of(implicit, port, host.config)
    try:
        if implicit:
            if not transparent:
                await refuse_over_tls(host, client, protocol, name, reason, temporary=True)
        elif protocol is not None:
            await tell_client(client, protocol, reason, temporary=True)
    except (OSError, ConnectionError, asyncio.TimeoutError):
        pass
    finally:
        client.close()


def _protocol_of(implicit: str | None, port: int, config: "RunConfig") -> str | None:
    return implicit or next((p for p in ("pop3", "imap") if port in config.ports[p]), None)


async def _sniff(client: Conn, upstream: Conn,
                 timeout: float) -> tuple[Greeting, str | None, bytes, bytes]:
    """(kind, why it is opaque, server bytes so far, client bytes so far) once the greeting is
    recognised, the client spoke first, or the time-out passed."""
    sniffer = GreetingSniffer()
    decided = asyncio.Event()
    client_bytes = bytearray()

    def from_server(data: bytes) -> None:
        if sniffer.receive_server(data) is not None:
            decided.set()

    def from_client(data: bytes) -> None:
        client_bytes.extend(data)
        sniffer.client_spoke()
        decided.set()

    client.set_reading(True)
    upstream.set_reading(True)
    early_client = client.attach(from_client)
    if early_client or client.eof:
        from_client(early_client)
    early_server = upstream.attach(from_server)
    if early_server:
        from_server(early_server)
    if upstream.eof:
        from_server(b"")
    try:
        await asyncio.wait_for(decided.wait(), timeout)
    except asyncio.TimeoutError:
        sniffer.timed_out()
    client.detach()
    upstream.detach()
    assert sniffer.result is not None
    return sniffer.result, sniffer.reason, sniffer.buffered, bytes(client_bytes)
