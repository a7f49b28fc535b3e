"""FilterServer: many sessions, reload and protection switches, stop, relays and dispatch."""

from __future__ import annotations

import asyncio
import poplib
import resource
import socket

from mailguard.settings import Settings
from tests.proxy.harness import EC, clean_message, filter_server, infected_message, run
from tests.proxy.pop3server import Pop3TestServer

ROUTES = "web-and-email.protocol-filtering.routes"


async def _pop3_fetch(port: int) -> bytes:
    """A minimal asyncio POP3 client: log in, RETR 1, QUIT; the message as received."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        assert (await reader.readline()).startswith(b"+OK")
        writer.write(b"USER u\r\nPASS p\r\nRETR 1\r\n")
        for _ in range(2):
            assert (await reader.readline()).startswith(b"+OK")
        assert (await reader.readline()).startswith(b"+OK")
        body = await reader.readuntil(b"\r\n.\r\n")
        writer.write(b"QUIT\r\n")
        assert (await reader.readline()).startswith(b"+OK")
        return body[:-3].replace(b"\r\n..", b"\r\n.")  # un-stuffed
    finally:
        writer.close()


def test_a_thousand_concurrent_sessions() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 8192:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(8192, hard), hard))
    message = clean_message(1)

    async def scenario() -> None:
        async with Pop3TestServer([message]) as upstream, filter_server(upstream.port, values={
            # every client here is 127.0.0.1
            "web-and-email.protocol-filtering.limits.max-sessions-per-client": 1000,
        }) as (server, port):
            results = await asyncio.gather(*(_pop3_fetch(port) for _ in range(1000)), return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            assert not failures, failures[:3]
            assert all(r == message for r in results)
            counters = server.snapshot()["counters"]
            assert counters["connections"] == 1000 and counters["messages_scanned"] == 1000
            assert counters["errors"] == 0

    try:
        run(scenario(), timeout=120)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_disable_reaches_open_sessions_and_reload_keeps_them() -> None:
    messages = [infected_message(1), infected_message(2)]

    async def scenario() -> None:
        async with Pop3TestServer(messages) as upstream, filter_server(
            upstream.port, values={EC + "response.quarantine": False}
        ) as (server, port):
            route = server.snapshot()["listeners"][0]
            client = await asyncio.to_thread(poplib.POP3, "127.0.0.1", port, timeout=20)
            await asyncio.to_thread(client.user, "u")
            await asyncio.to_thread(client.pass_, "p")
            first = b"\r\n".join((await asyncio.to_thread(client.retr, 1))[1])
            assert b"EICAR-STANDARD" not in first
            # mailguard disable: protection off, the open session is kept and no longer scans
            await server.reload(Settings.from_values({
                ROUTES: [f"{route['listen']}={route['upstream']}"], EC + "protocols.enabled": False,
            }))
            assert server.snapshot()["protection"] == "off"
            second = b"\r\n".join((await asyncio.to_thread(client.retr, 2))[1])
            assert b"EICAR-STANDARD" in second
            await asyncio.to_thread(client.quit)
            # a new connection under protection off is relayed untouched
            got = await _pop3_fetch(port)
            assert got == messages[0]
            assert server.snapshot()["counters"]["relayed"] >= 1

    run(scenario())


def test_reload_adds_and_removes_listeners() -> None:
    async def scenario() -> None:
        async with Pop3TestServer([clean_message(1)]) as upstream, filter_server(upstream.port) as (server, port):
            from tests.proxy.harness import free_port

            other = free_port()
            await server.reload(Settings.from_values({ROUTES: [f"127.0.0.1:{other}=127.0.0.1:{upstream.port}"]}))
            assert [entry["listen"] for entry in server.snapshot()["listeners"]] == [f"127.0.0.1:{other}"]
            assert await _pop3_fetch(other) == clean_message(1)
            with socket.socket() as probe:
                assert probe.connect_ex(("127.0.0.1", port)) != 0

    run(scenario())


def test_stop_closes_idle_sessions_within_grace() -> None:
    async def scenario() -> None:
        async with Pop3TestServer([clean_message(1)]) as upstream:
            async with filter_server(upstream.port, grace=5.0) as (server, port):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                assert (await reader.readline()).startswith(b"+OK")
                loop = asyncio.get_running_loop()
                started = loop.time()
                await server.stop(5.0)
                assert loop.time() - started < 2.0  # an idle POP3 session ends at once
                assert (await reader.readline()).startswith(b"-ERR [SYS/TEMP] mailguard is stopping")
                assert await reader.read() == b""
                writer.close()
                server.stop = _noop_stop  # already stopped; the context manager's stop is a no-op

    run(scenario())


async def _noop_stop(grace: float) -> None:
    return None


UNRECOGNIZED = "web-and-email.protocol-filtering.unrecognized"


def test_imap_with_scanning_off_and_unknown_protocols_when_asked_are_relayed_byte_for_byte() -> None:
    async def greeter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        writer.write(await reader.readline())  # echo one line
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        for greeting in (b"* OK IMAP4rev1 ready\r\n", b"220 smtp ready\r\n"):
            global GREETING
            GREETING = greeting
            upstream = await asyncio.start_server(greeter, "127.0.0.1", 0)
            upstream_port = upstream.sockets[0].getsockname()[1]
            values = {EC + "protocols.imap.enabled": False, UNRECOGNIZED: "relay"}
            async with filter_server(upstream_port, values=values) as (server, port):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                assert await reader.readline() == greeting
                writer.write(b"a NOOP\r\n")
                assert await reader.readline() == b"a NOOP\r\n"
                writer.close()
                assert server.snapshot()["counters"]["unrecognized"] == (greeting.startswith(b"220"))
            upstream.close()

    run(scenario())


GREETING = b""


def _echo_server(greeting: bytes):  # noqa: ANN202
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        data = await reader.read(100)
        writer.write(b"echo:" + data)
        await writer.drain()
        writer.close()
    return echo


def test_client_speaking_first_gets_a_byte_relay_when_asked() -> None:
    async def scenario() -> None:
        upstream = await asyncio.start_server(_echo_server(b""), "127.0.0.1", 0)
        async with filter_server(upstream.sockets[0].getsockname()[1], values={UNRECOGNIZED: "relay"}) as (server, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            assert await reader.read() == b"echo:GET / HTTP/1.0\r\n\r\n"
            writer.close()
            counters = server.snapshot()["counters"]
            assert counters["unrecognized"] == 1 and counters["relayed"] == 1
        upstream.close()

    run(scenario())


def test_unrecognized_sessions_are_blocked_by_default_and_counted(caplog) -> None:
    """On a port in no protocol list: a non-mail greeting, or a client that speaks first, gets
    no relay: the connection is closed, logged as a warning and counted."""
    async def scenario() -> None:
        for greeting, first in ((b"220 smtp ready\r\n", b""), (b"", b"GET / HTTP/1.0\r\n\r\n")):
            received: list[bytes] = []

            async def recording(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                writer.write(greeting)
                received.append(await reader.read(100))
                writer.close()

            upstream = await asyncio.start_server(recording, "127.0.0.1", 0)
            async with filter_server(upstream.sockets[0].getsockname()[1]) as (server, port):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(first)
                assert await reader.read() == b""
                writer.close()
                counters = server.snapshot()["counters"]
                assert counters["unrecognized"] == 1 and counters["relayed"] == 0
            upstream.close()
            assert not any(received)
    with caplog.at_level("WARNING", logger="mailguard.proxy"):
        run(scenario())
    assert sum("unrecognized session" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records) == 2


def test_excluded_ip_is_relayed_without_scanning() -> None:
    messages = [infected_message(1)]

    async def scenario() -> None:
        async with Pop3TestServer(messages) as upstream, filter_server(upstream.port, values={
            "web-and-email.protocol-filtering.excluded-ips": ["127.0.0.0/8"],
        }) as (server, port):
            got = await _pop3_fetch(port)
            assert b"EICAR-STANDARD" in got
            assert server.snapshot()["counters"]["messages_scanned"] == 0

    run(scenario())
