"""What a protocol handler gets from session set-up (session.py), and what both of them use.

- ``SessionContext``: one session's legs, upstream and early bytes, handed to the protocol's
  handler (pop3_session.py, imap_handler.py); ``SessionHost``: what every session needs from
  the listeners (server.py): settings, TLS, the scan pool, counters.
- ``refuse_over_tls`` / ``tell_client``: a refusal the client can read, in its protocol.
- ``peek_client_hello``: the name a client asks for in its ClientHello, before our TLS answers
  it (transparent mode's implicit TLS, and STLS/STARTTLS towards a server named by IP).

Set-up imports the handlers and the handlers import this, never session.py, so the two do not
import each other.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailguard.errors import MailguardError
from mailguard.protocols.clienthello import INCOMPLETE, INVALID, MAX_CLIENT_HELLO, Hello, parse_client_hello
from mailguard.protocols.sniff import GREETING_TIMEOUT
from mailguard.proxy.conn import LINGER_SECONDS, Conn
from mailguard.proxy.limits import refusal_line
from mailguard.proxy.relay import relay
from mailguard.proxy.upstream import TlsKit

if TYPE_CHECKING:
    from mailguard.proxy.runconfig import RunConfig
    from mailguard.scanpool.pool import ScanPool

__all__ = [
    "IDLE_TIMEOUT", "ClientTold", "Handler", "SessionContext", "SessionHost", "peek_client_hello",
    "refuse_over_tls", "tell_client",
]

# RFC 1939 §3 and RFC 9051 §5.4: servers may not log out an idle client before 10 / 30 minutes;
# the proxy must not cut a session earlier than the server would.
IDLE_TIMEOUT = 1800.0


class SessionHost:
    """What a session needs from the server: current settings, TLS, the scan pool, counters."""

    config: "RunConfig"
    tls: TlsKit
    pool: "ScanPool"
    idle_timeout: float = IDLE_TIMEOUT
    greeting_timeout: float = GREETING_TIMEOUT
    draining: asyncio.Event
    #: places for messages being fetched and scanned (limits.MESSAGES_IN_FLIGHT); None: no limit
    fetch_slots: asyncio.Semaphore | None = None

    def count(self, name: str, amount: int = 1) -> None:
        raise NotImplementedError


@dataclass
class SessionContext:
    host: SessionHost
    config: "RunConfig"          # as of the session's start
    client: Conn
    upstream: Conn
    upstream_host: str
    upstream_port: int
    #: Both legs already run TLS (POP3S / IMAPS intercepted).
    implicit_tls: bool
    #: Server bytes read while sniffing (the greeting), to be fed to the handler first.
    greeting: bytes
    #: Client bytes read while sniffing (a first command sent right after the greeting).
    client_early: bytes
    source: str
    log: logging.LoggerAdapter = field(repr=False, default=None)  # type: ignore[assignment]
    #: set by the protocol handler: whether the client has logged in (limits.login-timeout)
    authenticated: Callable[[], bool] = field(repr=False, default=lambda: False)

    def relay(self, *, client_early: bytes = b"", server_early: bytes = b"") -> Awaitable[None]:
        # What passes a byte relay is not ours to judge: no login time-out from here on.
        self.authenticated = lambda: True
        return relay(self.client, self.upstream, client_early=client_early,
                     server_early=server_early, idle_timeout=self.host.idle_timeout)


Handler = Callable[[SessionContext], Awaitable[None]]


class ClientTold(MailguardError):
    """The session is refused and the client has been told why (``refuse_over_tls``)."""


async def refuse_over_tls(host: SessionHost, client: Conn, protocol: str | None, name: str, reason: str,
                          *, temporary: bool = False) -> None:
    """Refuse a client whose TLS handshake has begun, readably: finish the handshake with a leaf
    for ``name`` (the name it asked for, or else the address it connected to), then send
    ``-ERR`` / ``* BYE`` with ``reason`` inside TLS. A cleartext line in the middle of its
    handshake reaches no user: the client reports "wrong version number".
    The reason cannot come before the switch: the ClientHello, which names the server or not,
    is only sent after the STLS/STARTTLS answer (RFC 2595 §4, RFC 9051 §6.2.1)."""
    if not host.tls.can_intercept:
        return
    try:
        await client.start_tls(host.tls.client_context([name], None), server_side=True,
                               timeout=host.greeting_timeout)
    except (OSError, ConnectionError, asyncio.TimeoutError):
        return
    await tell_client(client, protocol, reason, temporary=temporary)


async def tell_client(client: Conn, protocol: str | None, reason: str, *, temporary: bool = False) -> None:
    client.write(refusal_line(protocol, reason, temporary=temporary))  # b"": nothing to say
    try:
        await client.drain(within=LINGER_SECONDS, peer="client")
    except ConnectionError:
        return  # it reads nothing, not even why: closing is all that is left
    await client.linger()  # the client may have spoken first: no RST over our answer


# How much of the client's first flight is peeked at, and how often, while waiting for the
# ClientHello (transparent mode, implicit TLS).
_PEEK_BYTES = MAX_CLIENT_HELLO + 5 * 4
_PEEK_INTERVAL = 0.01


async def peek_client_hello(client: Conn, timeout: float) -> Hello:
    """The client's ClientHello, looked at without taking it off the socket (MSG_PEEK), so the
    TLS layer still gets every byte. Reading on ``client`` must be paused (it is until the
    session starts reading). Bounded by ``_PEEK_BYTES`` and ``timeout``."""
    assert client.transport is not None
    raw = client.transport.get_extra_info("socket")
    if raw is None:
        return INVALID
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    # A duplicate descriptor: the transport's own socket object is not ours to read from.
    sock = socket.socket(fileno=os.dup(raw.fileno()))
    try:
        while True:
            try:
                data = sock.recv(_PEEK_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                return INVALID
            if data == b"":
                return INVALID
            if data:
                hello = parse_client_hello(data)
                if hello.complete or len(data) >= _PEEK_BYTES:
                    return hello if hello.complete else INVALID
            if loop.time() >= deadline:
                return INCOMPLETE
            await asyncio.sleep(_PEEK_INTERVAL)
    finally:
        sock.close()
