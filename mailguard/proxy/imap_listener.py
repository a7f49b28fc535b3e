"""One IMAP route on its own: listen, connect upstream, run an IMAP session (``serve_imap``) per client.

The engine's listeners (proxy core) do the same for every route and protocol; this small
listener serves tests and bench/imap.py, which need IMAP alone without the daemon.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from mailguard.proxy.conn import Conn
from mailguard.proxy.imap import ImapContext, serve_imap

__all__ = ["ImapRoute", "start_imap_listener"]


@dataclass
class ImapRoute:
    upstream_host: str
    upstream_port: int
    #: implicit TLS on both legs (an imaps port): client_tls serves, upstream_tls connects
    implicit_tls: bool = False
    client_tls: ssl.SSLContext | None = None
    upstream_tls: ssl.SSLContext | None = None
    upstream_hostname: str | None = None


async def start_imap_listener(
    route: ImapRoute, context_for: Callable[[], ImapContext], host: str = "127.0.0.1", port: int = 0
) -> asyncio.base_events.Server:
    loop = asyncio.get_running_loop()
    sessions: set[asyncio.Task[None]] = set()

    async def handle(client: Conn) -> None:
        try:
            _, upstream = await loop.create_connection(
                Conn,
                route.upstream_host,
                route.upstream_port,
                ssl=route.upstream_tls if route.implicit_tls else None,
                server_hostname=(route.upstream_hostname or route.upstream_host) if route.implicit_tls else None,
            )
        except (OSError, ssl.SSLError):
            client.write(b"* BYE upstream server unavailable\r\n")
            client.close()
            return
        context = context_for()
        context.implicit_tls = route.implicit_tls
        context.client_tls = route.client_tls
        upstream_tls, hostname = route.upstream_tls, route.upstream_hostname or route.upstream_host
        if upstream_tls is not None:

            async def upgrade(conn: Conn) -> None:
                await conn.start_tls(upstream_tls, server_side=False, server_hostname=hostname)

            context.upgrade_upstream = upgrade
        await serve_imap(client, upstream, context)

    def on_connect(conn: Conn) -> None:
        task = asyncio.ensure_future(handle(conn))
        sessions.add(task)
        task.add_done_callback(sessions.discard)

    return await loop.create_server(
        lambda: Conn(on_connect=on_connect), host, port, ssl=route.client_tls if route.implicit_tls else None
    )
