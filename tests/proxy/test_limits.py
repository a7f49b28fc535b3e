"""protocol-filtering.limits.*: session caps, time-outs, backpressure and answers past every limit.

Each test waits on an event (a line read, a connection closed, the engine pausing a leg), with
generous time-outs only as a safety net; memory is measured as bytes the engine has read from
one peer and not yet handed to the kernel for the other, never by time.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from mailguard.proxy import session as session_module
from mailguard.proxy.conn import Conn
from mailguard.settings import Settings
from tests.proxy.harness import EC, TlsWorld, filter_server, free_port, run
from tests.proxy.pop3server import Pop3TestServer

LIMITS = "web-and-email.protocol-filtering.limits."
ROUTES = "web-and-email.protocol-filtering.routes"
MiB = 1024 * 1024

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def scripted_server(serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter], object],
                          tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """A loopback server running ``serve(reader, writer)`` per connection (implicit TLS with
    ``tls``); yields its port."""
    tasks: set[asyncio.Task[None]] = set()

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await serve(reader, writer)  # type: ignore[misc]
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tasks:
            task.cancel()


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A server that never greets: a session to it stays in its greeting wait."""
    await reader.read()


class EndlessRetr:
    """A POP3 server whose RETR answer is ``total`` bytes of lines (None: never ends)."""

    def __init__(self, total: int | None = None) -> None:
        self.total = total
        self.sent = 0
        self.finished = asyncio.Event()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"+OK endless POP3 ready\r\n")
        while line := await reader.readline():
            verb = line.split()[0].upper() if line.split() else b""
            if verb != b"RETR":
                writer.write(b"+OK\r\n" if verb != b"QUIT" else b"+OK bye\r\n")
                continue
            writer.write(b"+OK message follows\r\nSubject: endless\r\n\r\n")
            block = b"x" * 1022 + b"\r\n"
            chunk = block * 64
            while self.total is None or self.sent < self.total:
                writer.write(chunk)
                self.sent += len(chunk)
                await writer.drain()
            writer.write(b".\r\n")
            await writer.drain()
            self.finished.set()


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readline(), 30)


async def _login(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    assert (await _read_line(reader)).startswith(b"+OK")
    writer.write(b"USER u\r\nPASS p\r\n")
    assert (await _read_line(reader)).startswith(b"+OK")
    assert (await _read_line(reader)).startswith(b"+OK")


async def _until(done: Callable[[], bool], polls: int = 6000) -> None:
    """Poll ``done`` every 10 ms until it is true or ``polls`` have passed (a safety net)."""
    for _ in range(polls):
        if done():
            return
        await asyncio.sleep(0.01)


def _held(source: Conn, sink: Conn) -> int:
    """Bytes the engine has read from ``source`` and not yet handed to the kernel for ``sink``."""
    return source.bytes_in - (sink.bytes_out - sink.transport.get_write_buffer_size())  # type: ignore[union-attr]


# --- session caps ------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol, answer", [
    ("pop3", b"-ERR [SYS/TEMP] mailguard: too many sessions"),
    ("imap", b"* BYE [UNAVAILABLE] mailguard: too many sessions"),
])
@pytest.mark.parametrize("limit", ["max-sessions", "max-sessions-per-client"])
def test_a_client_over_a_session_cap_is_refused_in_its_protocol(protocol: str, answer: bytes, limit: str) -> None:
    async def scenario() -> None:
        async with scripted_server(_silent) as upstream, filter_server(upstream, values={
            LIMITS + limit: 1, EC + f"protocols.{protocol}.ports": [upstream],
        }) as (server, port):
            _, first = await asyncio.open_connection("127.0.0.1", port)
            while server.snapshot()["active_sessions"] < 1:  # the first session is admitted
                await asyncio.sleep(0.01)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            line = await _read_line(reader)
            assert line.startswith(answer), line
            assert await asyncio.wait_for(reader.read(), 30) == b""  # then closed
            counters = server.snapshot()["counters"]
            assert counters["refused"] == 1 and server.snapshot()["active_sessions"] == 1
            first.close()
            writer.close()

    run(scenario())


def test_a_refused_client_does_not_reach_the_server() -> None:
    accepted = 0

    async def counting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await reader.read()

    async def scenario() -> None:
        async with scripted_server(counting) as upstream, filter_server(upstream, values={
            LIMITS + "max-sessions": 1, EC + "protocols.pop3.ports": [upstream],
        }) as (server, port):
            _, first = await asyncio.open_connection("127.0.0.1", port)
            while accepted < 1:
                await asyncio.sleep(0.01)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert (await _read_line(reader)).startswith(b"-ERR [SYS/TEMP]")
            assert await asyncio.wait_for(reader.read(), 30) == b""
            assert accepted == 1
            first.close()
            writer.close()

    run(scenario())


# --- time-outs -------------------------------------------------------------------------------

def test_a_pop3_client_that_never_logs_in_is_told_and_closed() -> None:
    async def scenario() -> None:
        async with Pop3TestServer([b"Subject: x\r\n\r\nx\r\n"]) as upstream, filter_server(
            upstream.port, values={LIMITS + "login-timeout": 0.5}
        ) as (server, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert (await _read_line(reader)).startswith(b"+OK")
            line = await _read_line(reader)  # sending nothing
            assert line.startswith(b"-ERR [SYS/TEMP] mailguard: not logged in within 0.5s"), line
            assert await asyncio.wait_for(reader.read(), 30) == b""
            assert server.snapshot()["counters"]["timed_out"] == 1
            writer.close()

    run(scenario())


def test_a_logged_in_pop3_client_is_not_timed_out_by_the_login_limit() -> None:
    async def scenario() -> None:
        async with Pop3TestServer([b"Subject: x\r\n\r\nx\r\n"]) as upstream, filter_server(
            upstream.port, values={LIMITS + "login-timeout": 3, LIMITS + "server-timeout": 3}
        ) as (server, port):
            loop = asyncio.get_running_loop()
            connected = loop.time()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await _login(reader, writer)
            # Past both limits (a client may think for a while), the session is still served. Not
            # a synchronisation: nothing is waited for but the limits' passing.
            await asyncio.sleep(max(0.0, connected + 4.0 - loop.time()))
            writer.write(b"STAT\r\n")
            assert (await _read_line(reader)).startswith(b"+OK 1 ")
            assert server.snapshot()["counters"]["timed_out"] == 0
            writer.close()

    run(scenario())


async def _imap_greeter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"* OK [CAPABILITY IMAP4rev1] test IMAP ready\r\n")
    await reader.read()


def test_an_imap_client_that_never_logs_in_gets_bye_unavailable() -> None:
    async def scenario() -> None:
        async with scripted_server(_imap_greeter) as upstream, filter_server(
            upstream, values={LIMITS + "login-timeout": 0.5}
        ) as (server, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert (await _read_line(reader)).startswith(b"* OK")
            line = await _read_line(reader)
            assert line.startswith(b"* BYE [UNAVAILABLE] mailguard: not logged in within 0.5s"), line
            assert await asyncio.wait_for(reader.read(), 30) == b""
            assert server.snapshot()["counters"]["timed_out"] == 1
            writer.close()

    run(scenario())


def test_a_pop3_server_silent_in_an_answer_ends_the_session() -> None:
    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"+OK ready\r\n")
        while line := await reader.readline():
            if line.upper().startswith(b"RETR"):
                writer.write(b"+OK message follows\r\nSubject: half\r\n")  # and nothing more
            else:
                writer.write(b"+OK\r\n")

    async def scenario() -> None:
        async with scripted_server(stalls) as upstream, filter_server(
            upstream, values={LIMITS + "server-timeout": 0.5}
        ) as (server, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await _login(reader, writer)
            writer.write(b"RETR 1\r\n")
            line = await _read_line(reader)
            assert line.startswith(b"-ERR [SYS/TEMP] mailguard: the server stopped answering"), line
            assert await asyncio.wait_for(reader.read(), 30) == b""
            assert server.snapshot()["counters"]["timed_out"] == 1
            writer.close()

    run(scenario())


# --- backpressure and answers past every limit --------------------------------------------------

@contextlib.contextmanager
def upstream_legs(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[Conn]]:
    """The engine's server-side connections, as sessions open them."""
    legs: list[Conn] = []
    original = session_module.connect_upstream

    async def recording(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        conn = await original(*args, **kwargs)
        legs.append(conn)
        return conn

    monkeypatch.setattr(session_module, "connect_upstream", recording)
    yield legs


async def _retr_and_stop_reading(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                 legs: list[Conn], server: Any, endless: EndlessRetr) -> None:
    """Log in, RETR the endless message and read no more of it: the engine must stop reading
    the server rather than hold what the client does not take."""
    await _login(reader, writer)
    writer.write(b"RETR 1\r\n")
    assert (await _read_line(reader)).startswith(b"+OK")
    # The client reads no more. Wait for the engine to stop reading the server, or
    # for the server to have sent everything (what an unbounded engine lets it do).
    [leg] = legs
    (client_leg,) = server._live
    await _until(lambda: not leg.transport.is_reading() or endless.finished.is_set())  # type: ignore[union-attr]
    held = _held(leg, client_leg)
    assert not endless.finished.is_set()
    assert held < 2 * MiB, f"the engine holds {held} bytes for a client that does not read"
    writer.close()


def test_a_slow_reader_of_a_streamed_answer_keeps_the_engine_buffer_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A message over max-object-size is streamed; a client that stops reading must stop the
    engine reading the server, not make it hold the difference (issue: 220 MB/s of growth)."""
    endless = EndlessRetr(total=256 * MiB)

    async def scenario() -> None:
        with upstream_legs(monkeypatch) as legs:
            async with scripted_server(endless) as upstream, filter_server(upstream, values={
                EC + "threatsense.limits.max-object-size": 64 * 1024,
            }) as (server, port):
                reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=64 * 1024)
                await _retr_and_stop_reading(reader, writer, legs, server, endless)

    run(scenario(), timeout=120)


def test_a_slow_reader_over_tls_on_both_legs_keeps_the_engine_buffer_bounded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same through POP3S intercepted: TLS legs pause as plain ones do."""
    world = TlsWorld(tmp_path)
    endless = EndlessRetr(total=256 * MiB)

    async def scenario() -> None:
        with upstream_legs(monkeypatch) as legs:
            async with scripted_server(endless, world.server_context) as upstream, filter_server(upstream, values={
                **world.values, EC + "protocols.pop3s.ports": [upstream],
                EC + "threatsense.limits.max-object-size": 64 * 1024,
            }) as (server, port):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=world.client_context, server_hostname="127.0.0.1", limit=64 * 1024)
                await _retr_and_stop_reading(reader, writer, legs, server, endless)

    run(scenario(), timeout=120)


def test_an_answer_that_never_ends_ends_the_session() -> None:
    endless = EndlessRetr(total=None)

    async def scenario() -> None:
        async with scripted_server(endless) as upstream, filter_server(upstream, values={
            EC + "threatsense.limits.max-object-size": 64 * 1024, LIMITS + "max-message-size": 4 * MiB,
        }) as (server, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await _login(reader, writer)
            writer.write(b"RETR 1\r\n")
            assert (await _read_line(reader)).startswith(b"+OK")
            received = 0
            while chunk := await asyncio.wait_for(reader.read(1 << 20), 30):
                received += len(chunk)
                assert received < 8 * MiB, "the answer is still being passed on"
            assert received <= 4 * MiB + 64 * 1024
            assert server.snapshot()["counters"]["oversized"] == 1
            writer.close()

    run(scenario(), timeout=120)


class StalledAppend:
    """An IMAP server that says "+" to an APPEND literal and then reads no more."""

    def __init__(self) -> None:
        self.stalled = asyncio.Event()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK [CAPABILITY IMAP4rev1] ready\r\n")
        while line := await reader.readline():
            tag, _, rest = line.partition(b" ")
            if rest.upper().startswith(b"APPEND"):
                writer.write(b"+ go ahead\r\n")
                await writer.drain()
                self.stalled.set()
                await asyncio.Event().wait()  # never reads the literal
            writer.write(tag + b" OK done\r\n")


def test_an_append_of_a_large_literal_keeps_the_engine_buffer_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """An upload is streamed: when the server stops taking it, the engine stops reading the
    client, rather than holding the message (three 59 MB uploads raised RSS by 149 MB)."""
    server_side = StalledAppend()
    size = 64 * MiB

    async def scenario() -> None:
        with upstream_legs(monkeypatch) as legs:
            async with scripted_server(server_side) as upstream, filter_server(upstream) as (server, port):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                assert (await _read_line(reader)).startswith(b"* OK")
                writer.write(b"a LOGIN u p\r\n")
                assert (await _read_line(reader)).startswith(b"a OK")
                writer.write(b"b APPEND Sent {%d}\r\n" % size)
                assert (await _read_line(reader)).startswith(b"+ ")

                async def upload() -> None:
                    chunk = b"z" * MiB
                    for _ in range(size // MiB):
                        writer.write(chunk)
                        await writer.drain()

                uploading = asyncio.ensure_future(upload())
                [leg] = legs
                (client_leg,) = server._live
                await _until(lambda: not client_leg.transport.is_reading() or uploading.done())  # type: ignore[union-attr]
                held = _held(client_leg, leg)
                assert not uploading.done(), "the whole upload was taken while the server read none of it"
                assert held < 3 * MiB, f"the engine holds {held} bytes of an upload"
                uploading.cancel()
                writer.close()

    run(scenario(), timeout=120)


def test_an_imap_server_silent_in_the_middle_of_a_response_ends_the_session_with_bye() -> None:
    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK [CAPABILITY IMAP4rev1] ready\r\n")
        while line := await reader.readline():
            tag, _, rest = line.partition(b" ")
            if rest.upper().startswith(b"LIST"):
                writer.write(b'* LIST () "/" {20}\r\nIN')  # and nothing more
            else:
                writer.write(tag + b" OK done\r\n")

    async def scenario() -> None:
        async with scripted_server(stalls) as upstream, filter_server(
            upstream, values={LIMITS + "server-timeout": 0.5}
        ) as (server, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert (await _read_line(reader)).startswith(b"* OK")
            writer.write(b"a LOGIN u p\r\n")
            assert (await _read_line(reader)).startswith(b"a OK")
            writer.write(b'b LIST "" "*"\r\n')
            line = await _read_line(reader)
            assert line.startswith(b"* BYE [UNAVAILABLE] the server stopped in the middle of a response"), line
            assert await asyncio.wait_for(reader.read(), 30) == b""
            assert server.snapshot()["counters"]["timed_out"] == 1
            writer.close()

    run(scenario())


def test_stop_ends_sessions_in_any_state_within_its_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """A session streaming to a client that does not read, one that never logged in and one
    waiting for a server that never greets: ``stop`` closes them all within its grace."""
    endless = EndlessRetr(total=None)

    async def scenario() -> None:
        with upstream_legs(monkeypatch) as legs:
            async with scripted_server(endless) as upstream, scripted_server(_silent) as silent, filter_server(
                upstream, values={EC + "threatsense.limits.max-object-size": 64 * 1024}
            ) as (server, port):
                reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=64 * 1024)
                await _login(reader, writer)
                writer.write(b"RETR 1\r\n")
                assert (await _read_line(reader)).startswith(b"+OK")
                idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
                assert (await _read_line(idle_reader)).startswith(b"+OK")
                # the streaming session is held up by its client
                await _until(lambda: not legs[0].transport.is_reading())  # type: ignore[union-attr]
                await server.reload(Settings.from_values({
                    ROUTES: [f"127.0.0.1:{port}=127.0.0.1:{upstream}",
                             f"127.0.0.1:{(other := free_port())}=127.0.0.1:{silent}"],
                    EC + "threatsense.limits.max-object-size": 64 * 1024,
                }))
                _, greeting_writer = await asyncio.open_connection("127.0.0.1", other)
                while server.snapshot()["active_sessions"] < 3:
                    await asyncio.sleep(0.01)
                await asyncio.wait_for(server.stop(grace=0.5), 20)
                assert server.snapshot()["active_sessions"] == 0
                # the session waiting for a command is told, then closed
                assert (await asyncio.wait_for(idle_reader.read(), 30)).startswith(b"-ERR [SYS/TEMP] mailguard is stopping")
                for w in (writer, idle_writer, greeting_writer):
                    w.close()

    run(scenario(), timeout=120)


class HeldRetr:
    """A POP3 server that sends half of the first RETR answer it gets and waits for ``finish``;
    records (connection, command) in the order commands arrive."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, bytes]] = []
        self.finish = asyncio.Event()
        self.held = asyncio.Event()
        self.connections = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        me = self.connections
        message = b"Subject: held\r\n\r\n" + b"line\r\n" * 1000
        writer.write(b"+OK ready\r\n")
        while line := await reader.readline():
            verb = line.split(b" ")[0].strip().upper()
            self.seen.append((me, verb))
            if verb == b"RETR":
                writer.write(b"+OK\r\n" + message[:100])
                if not self.held.is_set():
                    self.held.set()
                    await writer.drain()
                    await self.finish.wait()
                writer.write(message[100:] + b".\r\n")
                self.seen.append((me, b"<sent>"))
            elif verb == b"LIST":  # one message: nothing to read ahead
                writer.write(b"+OK\r\n1 %d\r\n.\r\n" % len(message))
            else:
                writer.write(b"+OK\r\n")


def test_no_message_is_asked_of_a_server_while_the_engine_holds_as_many_as_it_may() -> None:
    """With every place for a message in flight taken, a session waits before its RETR goes
    upstream: a queue of sessions waiting for the scanners holds no messages in memory."""
    server_side = HeldRetr()

    async def scenario() -> None:
        async with scripted_server(server_side) as upstream, filter_server(upstream) as (server, port):
            server.fetch_slots = asyncio.Semaphore(1)
            first_reader, first = await asyncio.open_connection("127.0.0.1", port)
            await _login(first_reader, first)
            first.write(b"RETR 1\r\n")
            await asyncio.wait_for(server_side.held.wait(), 30)
            second_reader, second = await asyncio.open_connection("127.0.0.1", port)
            await _login(second_reader, second)
            second.write(b"RETR 1\r\n")
            # The second session waits for the place, or (an engine without one) its RETR arrives.
            await _until(lambda: bool(server.fetch_slots._waiters) or (2, b"RETR") in server_side.seen,  # type: ignore[attr-defined]
                         polls=3000)
            assert (2, b"RETR") not in server_side.seen
            server_side.finish.set()
            for reader in (first_reader, second_reader):
                assert (await _read_line(reader)).startswith(b"+OK")
                assert (await asyncio.wait_for(reader.readuntil(b"\r\n.\r\n"), 30)).endswith(b"line\r\n.\r\n")
            assert server_side.seen.index((1, b"<sent>")) < server_side.seen.index((2, b"RETR"))
            first.close()
            second.close()

    run(scenario())
