"""A byte relay between two connections: what the engine does with anything it does not scan.

Callback driven: each received chunk (up to the transport's read size) is written to the other
side in the same loop iteration, with TCP_NODELAY on both legs (conn.py), so a relay adds no
Nagle delay to one-command-at-a-time protocols. A side whose peer cannot keep up stops being
read until the peer's write buffer drains, so memory stays bounded by the transports'
high-water marks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from mailguard.proxy.conn import Conn

__all__ = ["relay"]


class _Direction:
    def __init__(self, src: Conn, dst: Conn, touch: Callable[[], None]) -> None:
        self.src = src
        self.dst = dst
        self.touch = touch
        self.done = asyncio.get_running_loop().create_future()

    def __call__(self, data: bytes) -> None:
        if not data:
            self.dst.write_eof()
            if not self.done.done():
                self.done.set_result(None)
            return
        self.touch()
        self.dst.write(data)
        if not self.dst.writable:
            self.src.set_reading(False)
            self.dst.when_writable(lambda: self.src.set_reading(True))


async def relay(
    client: Conn, server: Conn, *, client_early: bytes = b"", server_early: bytes = b"",
    idle_timeout: float = 600.0,
) -> None:
    """Relay until both sides finished sending, either connection is lost, or nothing moved
    for ``idle_timeout`` seconds. ``*_early`` are bytes already read from that side."""
    last = time.monotonic()

    def touch() -> None:
        nonlocal last
        last = time.monotonic()

    up = _Direction(client, server, touch)
    down = _Direction(server, client, touch)
    server.write(client_early + bytes(client.attach(up)))
    client.write(server_early + bytes(server.attach(down)))
    client.set_reading(True)
    server.set_reading(True)
    if client.eof:
        up(b"")
    if server.eof:
        down(b"")
    try:
        while not (up.done.done() and down.done.done()):
            remaining = idle_timeout - (time.monotonic() - last)
            if remaining <= 0 or client.lost.done() or server.lost.done():
                break
            watched = [f for f in (up.done, down.done) if not f.done()] + [client.lost, server.lost]
            await asyncio.wait(watched, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
    finally:
        client.detach()
        server.detach()
        client.close()
        server.close()
