"""STARTTLS in transparent mode, where the server is known by its IP address only.

Certificates name hosts, not addresses, so the server leg cannot be verified before the client
says which server it wants. The server's STARTTLS therefore waits for the client's: when the
client sends STARTTLS, the engine sends its own upstream, answers the client's OK, reads the
server name from the client's ClientHello without taking it off the socket (MSG_PEEK,
session.peek_client_hello), switches and verifies the server leg against that name, and only then
completes the client's handshake with a leaf for it. A server the client names that is an
excluded domain gets both legs joined instead, to shake hands with each other end to end.

A client that never asks for STARTTLS stays in plaintext on both legs, as it chose: the engine
does not make the connection weaker than the client made it, and LOGINDISABLED is still honoured.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.imap.commands import Command
from mailguard.protocols.imap.responses import Kind, Response
from mailguard.proxy.conn import Conn
from mailguard.proxy.imap_served import next_answer
from mailguard.proxy.context import ClientTold, peek_client_hello, refuse_over_tls
from mailguard.proxy.upstream import upstream_certificate

if TYPE_CHECKING:
    from mailguard.proxy.imap import ImapSession

__all__ = ["ClientNamedTls", "check_starttls_answer", "starttls_named_by_client"]


@dataclass(frozen=True)
class ClientNamedTls:
    """How a session verifies a server against the name its client gives (transparent mode)."""

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


async def starttls_named_by_client(session: "ImapSession", command: Command, named: ClientNamedTls) -> None:
    # Not another byte is read from the client until its TLS is up: its ClientHello stays in
    # the socket for the TLS layer, and plaintext injected while the server answers our
    # STARTTLS stays there too, where the TLS handshake refuses it
    # (docs/pitfalls.md#command-injection-after-starttls).
    client = session.client.conn
    client.set_reading(False)
    answer, more = await _upstream_starttls(session)
    check_starttls_answer(answer, more or session.upstream.reader.buffered)
    session.send_client(command.tag + b" OK Begin TLS negotiation now\r\n")
    await client.drain()
    hello = await peek_client_hello(client, named.hello_timeout)
    if not hello.server_name:
        address = (session.upstream.conn.peer() or ("",))[0]
        reason = ("transparent mode: the client named no server (TLS SNI) after STARTTLS, "
                  f"and {address} cannot be verified by address")
        await refuse_over_tls(named.host, client, "imap", address, reason)
        raise ClientTold(reason)
    if named.excluded(hello.server_name):
        from mailguard.proxy.imap import SwitchToRelay

        raise SwitchToRelay(b"", b"")
    await named.upgrade(session.upstream.conn, hello.server_name)
    context = named.client_context(hello.server_name, upstream_certificate(session.upstream.conn))
    await client.start_tls(context, server_side=True)


def check_starttls_answer(answer: Response, more: bool) -> None:
    """Refuse what must not follow our STARTTLS upstream: a refusal after the server offered it
    (never a fallback to plaintext: docs/architecture.md#tls-stance,
    docs/pitfalls.md#starttls-stripping-and-preauth), or ``more`` bytes behind its OK, sent in
    plaintext where only the TLS handshake may come
    (docs/pitfalls.md#response-injection-after-starttls)."""
    if answer.word != "OK":
        raise RemoteProtocolError("the server offered STARTTLS and then refused it")
    if more:
        raise RemoteProtocolError("the server sent data after its STARTTLS answer; refusing it")


async def _upstream_starttls(session: "ImapSession") -> tuple[Response, bool]:
    """Our STARTTLS on the server leg, while the session's loops run: its tagged answer, and
    whether responses came behind it."""
    queue: asyncio.Queue[Response] = asyncio.Queue()

    async def divert(response: Response) -> None:
        queue.put_nowait(response)

    session.interceptor = divert
    try:
        tag = session.new_tag()
        session.send_upstream(tag + b" STARTTLS\r\n")
        while True:
            response = await next_answer(queue, session.context.answer_timeout)
            if response.kind is Kind.TAGGED and response.tag == tag:
                return response, not queue.empty()
            session.relay(response)
    finally:
        session.interceptor = None
