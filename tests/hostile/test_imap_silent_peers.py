"""Peers that go quiet in ways that once kept an IMAP session open for good: a client that stops
reading what it is sent, and a client that says nothing while its server keeps the connection
alive. Each session must end after the configured idle time (small here); the bound the tests
wait for is generous, a safety net only, never what they measure."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from mailguard.proxy.imap import ImapContext
from mailguard.proxy.imap_listener import ImapRoute, start_imap_listener

pytestmark = pytest.mark.timeout(90)

#: how long a session may be silent in these tests
IDLE = 0.5
#: the safety net: a session that is not over by then never will be
BOUND = 30.0

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, asyncio.Event], Awaitable[None]]


async def _login_select(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """Answer LOGIN and SELECT; the first other command line."""
    writer.write(b"* OK [CAPABILITY IMAP4rev1 IDLE] hi\r\n")
    while line := await reader.readline():
        tag = line.split()[0]
        if b"LOGIN" in line.upper():
            writer.write(tag + b" OK logged in\r\n")
        elif b"SELECT" in line.upper():
            writer.write(b"* 1 EXISTS\r\n* OK [UIDVALIDITY 7] x\r\n" + tag + b" OK [READ-WRITE] done\r\n")
        else:
            return line
        await writer.drain()
    return b""


async def _flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ended: asyncio.Event) -> None:
    """Answers NOOP with untagged lines until the proxy stops taking them."""
    try:
        if b"NOOP" in (await _login_select(reader, writer)).upper():
            while True:
                writer.write(b"* OK " + b"x" * 1000 + b"\r\n")
                await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        ended.set()


async def _keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ended: asyncio.Event) -> None:
    """Enters IDLE and sends keep-alives until the proxy hangs up."""
    try:
        if b"IDLE" in (await _login_select(reader, writer)).upper():
            writer.write(b"+ idling\r\n")
            while not reader.at_eof():
                writer.write(b"* OK still here\r\n")
                await writer.drain()
                # The keep-alive's period: how this server behaves, not a synchronisation.
                await asyncio.sleep(IDLE / 5)
    except (ConnectionError, OSError):
        pass
    finally:
        ended.set()


async def _session(handler: Handler, client: Callable[[int], Awaitable[None]]) -> None:
    ended = asyncio.Event()
    upstream = await asyncio.start_server(lambda r, w: handler(r, w, ended), "127.0.0.1", 0)
    uport = upstream.sockets[0].getsockname()[1]
    context = ImapContext(scanner=None, server_id=f"127.0.0.1:{uport}", idle_timeout=IDLE, answer_timeout=IDLE)
    listener = await start_imap_listener(ImapRoute("127.0.0.1", uport), lambda: context)
    try:
        await client(listener.sockets[0].getsockname()[1])
        # the proxy hung up on the server: the session is over
        await asyncio.wait_for(ended.wait(), BOUND)
    finally:
        listener.close()
        upstream.close()
        await listener.wait_closed()
        await upstream.wait_closed()


def test_a_client_that_stops_reading_does_not_hold_its_session() -> None:
    sockets: list[socket.socket] = []

    async def client(port: int) -> None:
        sock = socket.socket()
        sockets.append(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"a LOGIN u p\r\nb SELECT INBOX\r\nc NOOP\r\n")  # and never reads again

    try:
        asyncio.run(_session(_flood, client))
    finally:
        for sock in sockets:
            sock.close()


def test_server_keep_alives_do_not_keep_a_silent_clients_session() -> None:
    async def client(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"a LOGIN u p\r\nb SELECT INBOX\r\nc IDLE\r\n")  # then silent, but reading
        try:
            async with asyncio.timeout(BOUND):
                while await reader.read(65536):
                    pass
        finally:
            writer.close()

    asyncio.run(_session(_keep_alive, client))
