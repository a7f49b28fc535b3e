"""Conn: TCP_NODELAY on every connection, and one TLS read buffer shared by all connections."""

from __future__ import annotations

import asyncio
import socket
import ssl

import trustme

from mailguard.proxy.conn import TLS_READ_BUFFER, TLS_RECORD, Conn, fit_tls_buffer
from tests.proxy.harness import run


def test_tls_connections_share_one_read_buffer_and_interleaved_transfers_arrive_whole() -> None:
    """Several TLS connections receive different 1 MiB payloads at once, their reads interleaved
    by the loop through the one buffer: each arrives whole, and nothing of another's is in it."""
    ca = trustme.CA()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    # ~1 MiB each, in a 251-byte period that differs between them at every position.
    payloads = [bytes((3 * i + 50 * n) % 251 for i in range(251)) * 4177 for n in range(4)]

    async def scenario() -> None:
        loop = asyncio.get_running_loop()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            which = (await reader.readexactly(1))[0]
            for at in range(0, len(payloads[which]), 100_000):
                writer.write(payloads[which][at:at + 100_000])
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context)
        port = server.sockets[0].getsockname()[1]

        async def fetch(which: int) -> tuple[bytes, object]:
            received = loop.create_future()
            chunks: list[bytes] = []

            def on_connect(conn: Conn) -> None:
                def sink(data: bytes) -> None:
                    chunks.append(data)
                    if not data and not received.done():
                        received.set_result(b"".join(chunks))
                conn.attach(sink)

            transport, conn = await loop.create_connection(
                lambda: Conn(on_connect), "127.0.0.1", port, ssl=client_context, server_hostname="localhost")
            protocol = transport._ssl_protocol  # type: ignore[attr-defined]
            assert protocol.max_size == TLS_RECORD and len(protocol._ssl_buffer) == TLS_READ_BUFFER
            assert transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            conn.write(bytes([which]))
            data = await asyncio.wait_for(received, 30)
            conn.close()
            return data, protocol._ssl_buffer

        results = await asyncio.gather(*(fetch(n) for n in range(len(payloads))))
        server.close()
        assert [data for data, _ in results] == payloads
        # One buffer for all: no connection holds a read buffer of its own.
        assert len({id(buffer) for _, buffer in results}) == 1

    run(scenario())


def test_fit_tls_buffer_leaves_other_transports_alone() -> None:
    class Plain:
        pass

    fit_tls_buffer(Plain())  # type: ignore[arg-type]  # no TLS layer: nothing to do, no error


def test_large_writes_the_socket_cannot_take_at_once_arrive_whole_and_in_order() -> None:
    """Plain transports get large writes as views (Conn.write); the peer reads nothing until all
    are written, so what the socket buffers cannot hold waits in the transport's buffer."""
    payloads = [bytes([n]) * (3 * 1024 * 1024 + n) for n in range(3)] + [b"tail"]

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        start_reading = asyncio.Event()
        received = loop.create_future()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await start_reading.wait()
            received.set_result(await reader.read())
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, conn = await loop.create_connection(lambda: Conn(), "127.0.0.1", port)
        for payload in payloads:
            conn.write(payload)
        start_reading.set()
        await conn.drain()
        conn.write_eof()
        assert await asyncio.wait_for(received, 30) == b"".join(payloads)
        assert conn.bytes_out == sum(map(len, payloads))
        conn.close()
        server.close()

    run(scenario())
