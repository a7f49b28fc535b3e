"""POP3 through the engine on loopback: poplib and raw sockets against the test server."""

from __future__ import annotations

import asyncio
import poplib

from tests.proxy.harness import EC, clean_message, filter_server, infected_message, run
from tests.proxy.pop3server import Pop3TestServer


def fetch_all(port: int, *, delete: bool = False) -> list[bytes]:
    client = poplib.POP3("127.0.0.1", port, timeout=20)
    try:
        client.user("u")
        client.pass_("p")
        count, _ = client.stat()
        out = []
        for n in range(1, count + 1):
            _, lines, _ = client.retr(n)
            out.append(b"\r\n".join(lines) + b"\r\n")
            if delete:
                client.dele(n)
        return out
    finally:
        client.quit()


def test_clean_mail_arrives_identical_and_infected_mail_cleaned() -> None:
    messages = [clean_message(1), infected_message(2), clean_message(3)]

    async def scenario() -> None:
        async with Pop3TestServer(messages) as upstream, filter_server(
            upstream.port, values={EC + "response.quarantine": False}
        ) as (server, port):
            got = await asyncio.to_thread(fetch_all, port)
            assert got[0] == messages[0] and got[2] == messages[2]
            assert b"EICAR-STANDARD" not in got[1]
            assert b"X-MailGuard-Result: infected" in got[1]
            assert b"Subject: [detection" in got[1]
            counters = server.snapshot()["counters"]
            assert counters["messages_scanned"] == 3 and counters["infected"] == 1
            assert counters["connections"] == 1

    run(scenario())


def test_top_and_sizes_follow_the_rewritten_message() -> None:
    messages = [infected_message(1)]

    async def scenario() -> None:
        async with Pop3TestServer(messages) as upstream, filter_server(
            upstream.port, values={EC + "response.quarantine": False}
        ) as (_, port):
            def session() -> None:
                client = poplib.POP3("127.0.0.1", port, timeout=20)
                client.user("u")
                client.pass_("p")
                _, head, _ = client.top(1, 0)
                resp, lines, octets = client.retr(1)
                delivered = b"\r\n".join(lines) + b"\r\n"
                assert int(resp.split()[1]) == len(delivered)
                # TOP 1 0 = the header of what RETR delivers, then the blank line
                assert head == lines[: lines.index(b"") + 1]
                assert b"[detection" in b"\r\n".join(head)
                assert client.list(1).split()[2] == b"%d" % len(delivered)
                client.quit()
                # TOP went upstream as a whole-message TOP, never as RETR (no \Seen side effect)
                assert b"RETR 1\r\n" in upstream.log and any(c.startswith(b"TOP 1 2147483647") for c in upstream.log)

            await asyncio.to_thread(session)

    run(scenario())


def test_stls_is_intercepted_on_both_legs(tmp_path) -> None:
    from tests.proxy.harness import TlsWorld

    world = TlsWorld(tmp_path)
    messages = [clean_message(1), infected_message(2)]

    async def scenario() -> None:
        async with Pop3TestServer(messages, tls=world.server_context) as upstream, filter_server(
            upstream.port, values={EC + "response.quarantine": False, **world.values}
        ) as (_, port):
            def session() -> list[bytes]:
                client = poplib.POP3("127.0.0.1", port, timeout=20)
                assert "STLS" in client.capa()
                assert "PIPELINING" not in client.capa()
                client.stls(world.client_context)
                assert "STLS" not in client.capa()
                client.user("u")
                client.pass_("p")
                got = [b"\r\n".join(client.retr(n)[1]) + b"\r\n" for n in (1, 2)]
                client.quit()
                return got

            got = await asyncio.to_thread(session)
            assert got[0] == messages[0]
            assert b"EICAR-STANDARD" not in got[1] and b"X-MailGuard-Result: infected" in got[1]
            # the server saw STLS, then (over TLS) the client's CAPA, USER, PASS, RETR...
            at = upstream.log.index(b"STLS\r\n")
            assert upstream.log[at + 1:at + 4] == [b"CAPA\r\n", b"USER u\r\n", b"PASS p\r\n"]

    run(scenario())


def test_pop3s_is_intercepted(tmp_path) -> None:
    from tests.proxy.harness import TlsWorld

    world = TlsWorld(tmp_path)
    messages = [clean_message(1), infected_message(2)]

    async def scenario() -> None:
        async with Pop3TestServer(messages, tls=world.server_context, implicit_tls=True) as upstream, \
                filter_server(upstream.port, values={
                    EC + "response.quarantine": False, EC + "protocols.pop3s.ports": [upstream.port],
                    **world.values,
                }) as (server, port):
            def session() -> list[bytes]:
                client = poplib.POP3_SSL("127.0.0.1", port, context=world.client_context, timeout=20)
                client.user("u")
                client.pass_("p")
                got = [b"\r\n".join(client.retr(n)[1]) + b"\r\n" for n in (1, 2)]
                client.quit()
                return got

            got = await asyncio.to_thread(session)
            assert got[0] == messages[0]
            assert b"EICAR-STANDARD" not in got[1]
            assert server.snapshot()["counters"]["infected"] == 1

    run(scenario())


def test_upstream_certificate_refused_gives_client_an_error(tmp_path) -> None:
    from tests.proxy.harness import TlsWorld

    world = TlsWorld(tmp_path)

    async def scenario() -> None:
        # the engine is NOT told to trust the upstream CA: unverifiable -> block
        async with Pop3TestServer([clean_message(1)], tls=world.server_context, implicit_tls=True) as upstream, \
                filter_server(upstream.port, values={EC + "protocols.pop3s.ports": [upstream.port]}) as (_, port):
            def session() -> None:
                try:
                    poplib.POP3_SSL("127.0.0.1", port, context=world.client_context, timeout=20)
                except poplib.error_proto as exc:
                    assert b"refused" in exc.args[0] or b"certificate" in exc.args[0]
                else:
                    raise AssertionError("the session should have been refused")

            await asyncio.to_thread(session)

    run(scenario())
