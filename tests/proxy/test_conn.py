"""Conn: TCP_NODELAY on every connection, and a TLS read buffer per connection that is small unless
a transfer fills it."""

from __future__ import annotations

import asyncio
import socket
import ssl

import trustme

from mailguard.proxy.conn import TLS_BULK_READ_BUFFER, TLS_READ_BUFFER, Conn, fit_tls_buffer
from tests.proxy.harness import run


def test_tls_connections_get_a_small_read_buffer_and_still_carry_data() -> None:
    ca = trustme.CA()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    payload = bytes(range(256)) * 4096  # 1 MiB: many reads through the smaller buffer

    async def scenario() -> None:
        received = asyncio.get_running_loop().create_future()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(payload)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context)
        port = server.sockets[0].getsockname()[1]
        chunks: list[bytes] = []

        def on_connect(conn: Conn) -> None:
            def sink(data: bytes) -> None:
                chunks.append(data)
                if not data and not received.done():
                    received.set_result(b"".join(chunks))
            conn.attach(sink)

        transport, conn = await asyncio.get_running_loop().create_connection(
            lambda: Conn(on_connect), "127.0.0.1", port, ssl=client_context, server_hostname="localhost")
        protocol = transport._ssl_protocol  # type: ignore[attr-defined]
        assert protocol.max_size == TLS_READ_BUFFER and len(protocol._ssl_buffer) == TLS_READ_BUFFER
        # This Python's TLS layer has the pieces that let the buffer grow for bulk reads.
        assert "buffer_updated" in vars(protocol) and len(protocol.get_buffer(-1)) == TLS_READ_BUFFER  # this Python's TLS layer has the pieces it adapts
        sock = transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert await asyncio.wait_for(received, 10) == payload
        conn.close()
        server.close()

    run(scenario())


class FakeTLSLayer:
    """The pieces of asyncio's SSLProtocol that fit_tls_buffer adapts; records what each read saw."""

    def __init__(self) -> None:
        self.max_size = 256 * 1024
        self._ssl_buffer = bytearray(self.max_size)
        self._ssl_buffer_view = memoryview(self._ssl_buffer)
        self.reads: list[bytes] = []

    def get_buffer(self, n: int) -> memoryview:  # as asyncio.sslproto's
        want = self.max_size if n <= 0 or n > self.max_size else n
        if len(self._ssl_buffer) < want:
            self._ssl_buffer = bytearray(want)
            self._ssl_buffer_view = memoryview(self._ssl_buffer)
        return self._ssl_buffer_view

    def read(self, data: bytes) -> None:
        """What the event loop does: fill the buffer ``get_buffer`` gives, then report how much."""
        buffer = self.get_buffer(-1)
        assert len(data) <= len(buffer)
        buffer[:len(data)] = data
        self.buffer_updated(len(data))

    def buffer_updated(self, nbytes: int) -> None:
        self.reads.append(bytes(self._ssl_buffer_view[:nbytes]))


class FakeTLSTransport:
    def __init__(self) -> None:
        self._ssl_protocol = FakeTLSLayer()


def test_the_tls_read_buffer_grows_while_reads_fill_it_and_shrinks_once_one_does_not() -> None:
    transport = FakeTLSTransport()
    layer = transport._ssl_protocol
    fit_tls_buffer(transport)  # type: ignore[arg-type]
    fit_tls_buffer(transport)  # twice (a STARTTLS after all): still one adapter
    # Each decryption asks for one record's worth (max_size), however big the buffer is.
    assert layer.max_size == TLS_READ_BUFFER == len(layer._ssl_buffer)
    sizes = []
    for n, size in enumerate([100, TLS_READ_BUFFER, TLS_BULK_READ_BUFFER, TLS_BULK_READ_BUFFER, 5000,
                              TLS_READ_BUFFER - 1, TLS_READ_BUFFER]):
        layer.read(bytes([n]) * min(size, len(layer.get_buffer(-1))))
        sizes.append(len(layer.get_buffer(-1)))
    assert layer.max_size == TLS_READ_BUFFER
    assert sizes == [TLS_READ_BUFFER, TLS_BULK_READ_BUFFER, TLS_BULK_READ_BUFFER, TLS_BULK_READ_BUFFER,
                     TLS_READ_BUFFER, TLS_READ_BUFFER, TLS_BULK_READ_BUFFER]
    # Every read reached the TLS layer whole, whatever buffer it came through.
    assert [(len(r), r[:1]) for r in layer.reads] == [
        (100, b"\0"), (TLS_READ_BUFFER, b"\1"), (TLS_BULK_READ_BUFFER, b"\2"), (TLS_BULK_READ_BUFFER, b"\3"),
        (5000, b"\4"), (TLS_READ_BUFFER - 1, b"\5"), (TLS_READ_BUFFER, b"\6")]
    assert all(len(set(r)) == 1 for r in layer.reads)


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
