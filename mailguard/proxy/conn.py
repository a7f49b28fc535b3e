"""One TCP (or TLS) connection as an asyncio Protocol that owns no read buffer.

Why not ``asyncio.StreamReader``: at a STLS switch every byte received before it must be thrown away
or refused, and some asyncio versions keep the StreamReader's buffered bytes across ``start_tls``
(docs/pitfalls.md#the-asyncio-buffer-at-a-tls-switch, gh-142352). Here every received byte goes
straight to the ``sink`` callback, i.e. into the sans-I/O machine, which owns the only buffer and
checks it at the switch. Until a sink is attached (while the greeting is sniffed), bytes wait in
``pending``.

TCP_NODELAY is set on every connection: one-command-at-a-time protocols meeting Nagle's
algorithm and delayed ACKs made a relay 54x slower (issue 6).

TLS read buffer: asyncio's SSLProtocol allocates (and zero-fills) a 256 KiB read buffer per
connection, 512 KiB per intercepted session with both legs on TLS, which made 1,000 idle POP3S
sessions cost ~576 KB each (bench/pop3.py). A 16 KiB buffer per connection fixed the memory but
made a bulk transfer pay ~65,000 reads (each a wake-up of the loop, a system call, a pass through
the TLS layer) per GB and leg: receiving cost twice the CPU of big reads (bench/tls_bulk.py).
Yet the buffer only ever holds bytes for an instant: the event loop reads the socket into it and,
in the same callback, the TLS layer copies them out into its own incoming buffer
(``SSLProtocol.buffer_updated``). So ``fit_tls_buffer`` gives every TLS connection of a thread
one shared ``TLS_READ_BUFFER``: reads of several records for all, no read buffer of its own
for any.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Callable

__all__ = ["TLS_READ_BUFFER", "TLS_RECORD", "Conn", "fit_tls_buffer", "set_nodelay"]

Sink = Callable[[bytes], None]

#: the one read buffer the TLS connections of a thread share. Not asyncio's 256 KiB: reads that
#: big let each session take in more at once, and 1,000 sessions fetching over TLS peaked ~40 MB
#: higher (bench/load.py: 311 MB, against 283 MB at 64 KiB and ~270 MB with 16 KiB reads), for
#: little less CPU than four records per read (bench/tls_bulk.py)
TLS_READ_BUFFER = 64 * 1024
#: the most plaintext one TLS record carries (RFC 8446 §5.1): what each decryption asks for
TLS_RECORD = 16 * 1024

# How long, and how much, ``Conn.linger`` reads and throws away before a close on error.
LINGER_SECONDS = 1.0
LINGER_BYTES = 1024 * 1024


_shared = threading.local()


def fit_tls_buffer(transport: asyncio.BaseTransport) -> None:
    """Have the TLS layer under ``transport`` read through this thread's shared buffer.

    Sharing is sound because asyncio's selector loop calls ``get_buffer``, reads the socket into
    what it returned and calls ``buffer_updated``, which copies the bytes out before doing
    anything else, all in one callback: no two reads of one thread (one event loop) ever
    overlap in the buffer. tests/proxy/test_conn.py checks that interleaved transfers on many
    connections arrive whole. It reaches into ``asyncio.sslproto`` (``_ssl_buffer`` and its view
    are what ``get_buffer`` hands out, growing them only when smaller than ``max_size``), so it
    checks each piece exists and otherwise leaves the transport alone. ``max_size`` becomes
    ``TLS_RECORD``: it is also what each decryption asks for, and asking for more than a record
    only allocates more. Called between reads (from a callback of ours).
    """
    protocol = getattr(transport, "_ssl_protocol", None)
    buffer = getattr(protocol, "_ssl_buffer", None)
    if not isinstance(buffer, bytearray) or not hasattr(protocol, "_ssl_buffer_view") or not hasattr(protocol, "max_size"):
        return
    shared = getattr(_shared, "buffer", None)
    if shared is None:
        shared = _shared.buffer = bytearray(TLS_READ_BUFFER)
        _shared.view = memoryview(shared)
    protocol.max_size = TLS_RECORD  # type: ignore[union-attr]
    protocol._ssl_buffer = shared  # type: ignore[union-attr]
    protocol._ssl_buffer_view = _shared.view  # type: ignore[union-attr]


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # the peer is already gone; the next write will tell


class Conn(asyncio.Protocol):
    """Bytes in through ``sink`` (``b""`` = the peer is done sending), bytes out through ``write``."""

    def __init__(self, on_connect: Callable[["Conn"], None] | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.pending = bytearray()
        # Set on a server leg whose certificate the policy let through despite problems
        # (certificate-validity = allow): its names must not be copied into our leaves, and every
        # message delivered from this connection gets an ``X-MailGuard-TLS`` header naming them.
        self.certificate_problems: tuple[str, ...] = ()
        # Set on a server leg known by address only (transparent mode): its STLS/STARTTLS is
        # verified against the name the client gives, else refused with this reason
        # (``upstream.require_client_name``).
        self.client_name_only: str | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.eof = False
        self.lost = asyncio.get_running_loop().create_future()
        self._sink: Sink | None = None
        self._on_connect = on_connect
        self._writable = asyncio.Event()
        self._writable.set()
        self._reading = True
        self._on_writable: list[Callable[[], None]] = []

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        set_nodelay(transport)
        fit_tls_buffer(transport)
        if self._on_connect is not None:
            self._on_connect(self)

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self._sink is not None:
            self._sink(data)
        else:
            self.pending += data

    def eof_received(self) -> bool:
        self._mark_eof()
        # Keep our sending direction open: answers may still be on their way (TLS transports
        # cannot half-close, and say so if asked).
        return self.ssl_object() is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._mark_eof()
        self.resume_writing()
        if not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()
        callbacks, self._on_writable = self._on_writable, []
        for callback in callbacks:
            callback()

    # --- ours ----------------------------------------------------------------------------------

    def _mark_eof(self) -> None:
        if not self.eof:
            self.eof = True
            if self._sink is not None:
                self._sink(b"")

    def attach(self, sink: Sink) -> bytes:
        """Send every later byte to ``sink``; return the bytes that arrived before (and forget
        them here). Check ``eof`` afterwards: a peer that already finished is not reported again."""
        early = bytes(self.pending)
        self.pending.clear()
        self._sink = sink
        return early

    def detach(self) -> None:
        self._sink = None

    @property
    def closed(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def write(self, data: bytes) -> None:
        if data and not self.closed:
            assert self.transport is not None
            self.transport.write(data)
            self.bytes_out += len(data)

    @property
    def writable(self) -> bool:
        """False while the write buffer is above its high-water mark."""
        return self._writable.is_set()

    def when_writable(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the write buffer drains (at once if it is not full)."""
        if self._writable.is_set() or self.closed:
            callback()
        else:
            self._on_writable.append(callback)

    def write_eof(self) -> None:
        """Half-close our sending direction where the transport can (plain TCP), else close."""
        if self.closed:
            return
        assert self.transport is not None
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.transport.close()

    async def linger(self, timeout: float = LINGER_SECONDS, limit: int = LINGER_BYTES) -> None:
        """Before closing on a peer that may still be sending: half-close our side (plain TCP),
        then read and discard what the peer sends until it is done, ``limit`` bytes or ``timeout``
        seconds, whichever comes first.

        Closing a socket whose receive buffer holds unread bytes makes the kernel answer with RST
        instead of FIN, and an RST can make the peer drop our last words (the ``-ERR``) unread:
        a client still sending a refused 200 KB line never saw why. The caller closes after."""
        if self.closed or self.eof:
            return
        assert self.transport is not None
        done = asyncio.get_running_loop().create_future()
        seen = 0

        def discard(data: bytes) -> None:
            nonlocal seen
            seen += len(data)
            if (not data or seen >= limit) and not done.done():
                done.set_result(None)

        self.pending.clear()
        self._sink = discard
        if self.transport.can_write_eof():  # TLS cannot half-close: the peer has our words anyway
            self.transport.write_eof()
        self.set_reading(True)
        try:
            await asyncio.wait_for(done, timeout)
        except asyncio.TimeoutError:
            pass

    async def drain(self, within: float | None = None, peer: str = "peer") -> None:
        """Wait while the transport's write buffer is above its high-water mark.

        With ``within``, a peer that takes nothing of what we sent for that long is treated as
        gone (ConnectionError): one that reads nothing is as silent as one that sends nothing,
        and a session must not wait on it forever (limits in docs/architecture.md)."""
        if self._writable.is_set() or self.closed:
            return
        try:
            await asyncio.wait_for(self._writable.wait(), within)
        except asyncio.TimeoutError:
            raise ConnectionError(f"the {peer} read nothing of what we sent for {within:g}s") from None

    def set_reading(self, on: bool) -> None:
        if on == self._reading or self.closed:
            return
        assert self.transport is not None
        self._reading = on
        if on:
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

    async def start_tls(
        self, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Switch this connection to TLS. Call it right after writing any preface, with no
        await in between: ``loop.start_tls`` pauses reading before it first yields, so no byte of
        the peer's handshake can be delivered to us as plaintext."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        if not self._reading:
            self.transport.resume_reading()
            self._reading = True
        new = await loop.start_tls(
            self.transport, self, context, server_side=server_side,
            server_hostname=server_hostname, ssl_handshake_timeout=timeout,
        )
        if new is None:
            raise ConnectionError("the connection closed during the TLS handshake")
        fit_tls_buffer(new)
        self.transport = new

    def ssl_object(self) -> ssl.SSLObject | None:
        return None if self.transport is None else self.transport.get_extra_info("ssl_object")

    def peer(self) -> tuple[str, int] | None:
        if self.transport is None:
            return None
        name = self.transport.get_extra_info("peername")
        return (name[0], name[1]) if name else None

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
