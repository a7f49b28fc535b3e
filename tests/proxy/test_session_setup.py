"""Session setup: transparent mode's server name from the ClientHello (SNI), excluded-ips against
the address actually connected to, and no unscanned relay after a greeting time-out or behind
our own TLS leaf. Transparent mode is exercised on loopback with a faked original destination."""

from __future__ import annotations

import contextlib
import asyncio
import ssl
from collections.abc import Callable
from typing import Any

import pytest

from mailguard.transparent import netfilter
from mailguard.proxy.server import FilterServer
from mailguard.settings import Settings, resolve_paths
from tests.proxy.harness import EC, TlsWorld, filter_server, free_port, infected_message, run
from tests.proxy.pop3server import Pop3TestServer

PF = "web-and-email.protocol-filtering."
NAME = "mail.example.test"   # the upstream certificate names this host only: no IP SAN


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), 10)


async def _pop3_retr(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    assert (await reader.readline()).startswith(b"+OK")
    writer.write(b"USER u\r\nPASS p\r\nRETR 1\r\n")
    for _ in range(3):
        assert (await reader.readline()).startswith(b"+OK")
    body = await reader.readuntil(b"\r\n.\r\n")
    writer.write(b"QUIT\r\n")
    writer.close()
    return body


class _Transparent:
    """A FilterServer in transparent mode whose connections all 'were meant for' ``destination``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, destination: tuple[str, int], values: dict[str, Any]):
        monkeypatch.setattr(netfilter, "original_destination", lambda sock: destination)
        monkeypatch.setattr(netfilter, "mark_upstream_socket", lambda sock: None)  # no nft rules here
        self.port = free_port()
        self.settings = Settings.from_values({
            PF + "mode": "transparent", PF + "transparent.listen": f"127.0.0.1:{self.port}", **values})

    async def __aenter__(self) -> FilterServer:
        self.server = FilterServer(self.settings, resolve_paths(), pool_kind="thread", pool_workers=2)
        await self.server.start()
        return self.server

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop(2.0)


def _name_only_upstream(world: TlsWorld) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    world.upstream_ca.issue_cert(NAME).configure_cert(context)
    return context


def _no_sni_client(world: TlsWorld) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@contextlib.asynccontextmanager
async def _transparent_pop3s(world: TlsWorld, monkeypatch, **values):  # type: ignore[no-untyped-def]
    """An implicit-TLS POP3 server whose certificate names NAME only, reached through the
    transparent listener: (upstream, engine, the listener's port)."""
    async with Pop3TestServer([infected_message(1)], tls=_name_only_upstream(world), implicit_tls=True) as up:
        settings = {**world.values, EC + "protocols.pop3s.ports": [up.port], **values}
        async with _Transparent(monkeypatch, ("127.0.0.1", up.port), settings) as server:
            yield up, server, server.config.transparent_listen[1]


def test_transparent_implicit_tls_uses_the_sni_name_for_a_name_only_certificate(tmp_path, monkeypatch) -> None:
    world = TlsWorld(tmp_path)

    async def scenario() -> None:
        async with _transparent_pop3s(world, monkeypatch) as (_, server, port):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=world.client_context, server_hostname=NAME)
            leaf = writer.get_extra_info("ssl_object").getpeercert()
            assert ("DNS", NAME) in leaf["subjectAltName"]
            body = await _pop3_retr(reader, writer)
            assert b"EICAR-STANDARD" not in body and b"X-MailGuard-Result: infected" in body
            assert server.snapshot()["counters"]["messages_scanned"] == 1

    run(scenario())


def test_transparent_implicit_tls_without_sni_is_refused_not_verified_by_ip(tmp_path, monkeypatch) -> None:
    world = TlsWorld(tmp_path)

    async def scenario() -> None:
        async with _transparent_pop3s(world, monkeypatch) as (up, _, port):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=_no_sni_client(world), server_hostname="")
            got = await _read_all(reader)
            writer.close()
            assert got.startswith(b"-ERR [SYS/PERM] mailguard: transparent mode: the client named no server")
            assert up.log == []

    run(scenario())


def test_transparent_sni_in_excluded_domains_is_relayed_untouched(tmp_path, monkeypatch) -> None:
    world = TlsWorld(tmp_path)

    async def scenario() -> None:
        excluded = {"web-and-email.ssl-tls.excluded-domains": ["*.example.test"]}
        async with _transparent_pop3s(world, monkeypatch, **excluded) as (_, server, port):
            direct = ssl.create_default_context(cafile=str(world.upstream_ca_file))
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=direct, server_hostname=NAME)
            body = await _pop3_retr(reader, writer)   # the real server's certificate, verified
            assert b"EICAR-STANDARD" in body
            assert server.snapshot()["counters"]["messages_scanned"] == 0

    run(scenario())


def test_a_route_naming_its_server_by_host_is_matched_by_the_connected_address() -> None:
    async def scenario() -> None:
        async with Pop3TestServer([infected_message(1)]) as up:
            listen = free_port()
            settings = Settings.from_values({
                PF + "routes": [f"127.0.0.1:{listen}=localhost:{up.port}"],
                PF + "excluded-ips": ["127.0.0.1/32"],
            })
            server = FilterServer(settings, resolve_paths(), pool_kind="thread", pool_workers=2)
            await server.start()
            try:
                # The client comes from another loopback address, so only the server side matches.
                reader, writer = await asyncio.open_connection("127.0.0.1", listen, local_addr=("127.0.0.3", 0))
                body = await _pop3_retr(reader, writer)
                assert b"EICAR-STANDARD" in body
                assert server.snapshot()["counters"]["messages_scanned"] == 0
            finally:
                await server.stop(2.0)

    run(scenario())


def _silent_then(greeting: bytes, delay: float, received: list[bytes]) -> Callable:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(delay)
        writer.write(greeting)
        try:
            received.append(await asyncio.wait_for(reader.read(100), 2))
        except asyncio.TimeoutError:
            pass
        writer.close()
    return handler


def test_a_greeting_time_out_on_a_mail_port_is_refused_not_relayed() -> None:
    received: list[bytes] = []

    async def scenario() -> None:
        upstream = await asyncio.start_server(_silent_then(b"+OK late\r\n", 3.0, received), "127.0.0.1", 0)
        up_port = upstream.sockets[0].getsockname()[1]
        async with filter_server(up_port, values={EC + "protocols.pop3.ports": [up_port]}) as (server, port):
            server.greeting_timeout = 0.3
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            got = await _read_all(reader)
            writer.close()
            assert got.startswith(b"-ERR [SYS/PERM] mailguard: no server greeting within 0.3s")
            assert server.snapshot()["counters"]["relayed"] == 0
        upstream.close()

    run(scenario())


def test_client_speaking_first_behind_our_tls_leaf_is_refused(tmp_path) -> None:
    world = TlsWorld(tmp_path)
    received: list[bytes] = []

    async def scenario() -> None:
        upstream = await asyncio.start_server(_silent_then(b"+OK late\r\n", 1.0, received), "127.0.0.1", 0,
                                              ssl=world.server_context)
        up_port = upstream.sockets[0].getsockname()[1]
        values = {**world.values, EC + "protocols.pop3s.ports": [up_port]}
        async with filter_server(up_port, values=values) as (server, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=world.client_context,
                                                           server_hostname="127.0.0.1")
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            got = await _read_all(reader)
            writer.close()
            assert got.startswith(b"-ERR [SYS/PERM] mailguard: the client spoke before the server greeted")
            assert server.snapshot()["counters"]["relayed"] == 0
        upstream.close()
        assert not any(b"GET" in r for r in received)

    run(scenario())
