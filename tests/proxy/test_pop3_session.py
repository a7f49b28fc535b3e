"""POP3 through the engine on loopback: poplib and raw sockets against the test server."""

from __future__ import annotations

import asyncio
import poplib
import socket
import ssl

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


def test_messages_retrieved_in_order_are_read_ahead_and_arrive_whole() -> None:
    messages = [clean_message(1), infected_message(2), clean_message(3), clean_message(4)]

    async def scenario() -> None:
        async with Pop3TestServer(messages) as upstream, filter_server(upstream.port) as (_, port):
            def session() -> list[bytes]:
                client = poplib.POP3("127.0.0.1", port, timeout=20)
                client.user("u")
                client.pass_("p")
                client.list()
                got = [b"\r\n".join(client.retr(n)[1]) + b"\r\n" for n in range(1, 5)]
                client.quit()
                return got

            got = await asyncio.to_thread(session)
            assert got[0] == messages[0] and got[2] == messages[2] and got[3] == messages[3]
            assert b"EICAR-STANDARD" not in got[1] and b"X-MailGuard-Result: infected" in got[1]
            # 2, 3 and 4 came from our read-ahead: fetched with TOP (no \Seen), never RETR'd
            assert b"RETR 1\r\n" in upstream.log
            for n in (2, 3, 4):
                assert b"TOP %d 2147483647\r\n" % n in upstream.log and b"RETR %d\r\n" % n not in upstream.log

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


# --- hostile peers: each gets a clear error, and a clean session alongside is unaffected -------


import pytest  # noqa: E402


@pytest.mark.parametrize("behaviour", ["endless-line", "huge-claim", "garbage", "drop-mid-message"])
def test_hostile_server(behaviour: str) -> None:
    messages = [clean_message(1, body_lines=2000)]

    async def scenario() -> None:
        async with Pop3TestServer(messages, hostile=behaviour) as bad, \
                Pop3TestServer(messages) as good, \
                filter_server(bad.port, values={EC + "threatsense.limits.max-object-size": "1MB"}) as (server, bad_port):
            # a second route to a well-behaved server on the same engine
            from mailguard.settings import Settings
            from tests.proxy.harness import free_port
            good_port = free_port()
            await server.reload(Settings.from_values({"web-and-email.protocol-filtering.routes": [
                f"127.0.0.1:{bad_port}=127.0.0.1:{bad.port}", f"127.0.0.1:{good_port}=127.0.0.1:{good.port}",
                ], EC + "threatsense.limits.max-object-size": "1MB"}))

            def hostile_session() -> bytes | Exception:
                client = poplib.POP3("127.0.0.1", bad_port, timeout=20)
                client.user("u")
                client.pass_("p")
                try:
                    return b"\r\n".join(client.retr(1)[1]) + b"\r\n"
                except (poplib.error_proto, OSError) as exc:
                    return exc

            outcome, clean = await asyncio.gather(
                asyncio.to_thread(hostile_session), asyncio.to_thread(fetch_all, good_port)
            )
            assert clean == messages
            if behaviour == "huge-claim":
                assert outcome == messages[0]  # the count in +OK is not trusted, the dot is
            else:
                assert isinstance(outcome, Exception), outcome
                if behaviour != "endless-line":
                    assert "-ERR" in str(outcome)
            assert server.snapshot()["counters"]["errors"] >= (0 if behaviour == "huge-claim" else 1)

    run(scenario())


def _raw_session(port: int, payload: bytes, read_for: float = 2.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=read_for) as sock:
        assert sock.recv(1024).startswith(b"+OK")
        sock.sendall(payload)
        got = b""
        try:
            while chunk := sock.recv(65536):
                got += chunk
        except TimeoutError:
            pass
        return got


def test_stls_injection_through_the_engine(tmp_path) -> None:
    from tests.proxy.harness import TlsWorld

    world = TlsWorld(tmp_path)

    async def scenario() -> None:
        async with Pop3TestServer([clean_message(1)], tls=world.server_context) as upstream, \
                filter_server(upstream.port, values=world.values) as (_, port):
            got = await asyncio.to_thread(_raw_session, port, b"STLS\r\nUSER evil\r\n")
            assert got.startswith(b"-ERR") and b"Begin TLS" not in got
            assert all(not c.startswith((b"STLS", b"USER")) for c in upstream.log)

    run(scenario())


def _stls_finished_and_capa_in_one_write(port: int, context: ssl.SSLContext) -> bytes:
    """STLS, then a TLS handshake whose last flight (the client's Finished) carries CAPA too."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        assert sock.recv(1024).startswith(b"+OK")
        sock.sendall(b"STLS\r\n")
        line = b""
        while not line.endswith(b"\r\n"):
            line += sock.recv(1)
        assert line.startswith(b"+OK")
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    sock.sendall(outgoing.read())
                incoming.write(sock.recv(65536))
        tls.write(b"CAPA\r\n")
        sock.sendall(outgoing.read())  # Finished and the first command in one write
        got = b""
        while not got.endswith(b"\r\n.\r\n"):
            try:
                chunk = tls.read(65536)
                if not chunk:
                    break  # the proxy closed the session
                got += chunk
            except ssl.SSLWantReadError:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                incoming.write(chunk)
        return got


def test_stls_client_finished_and_first_command_in_one_write(tmp_path) -> None:
    from tests.proxy.harness import TlsWorld

    world = TlsWorld(tmp_path)

    async def scenario() -> None:
        async with Pop3TestServer([clean_message(1)], tls=world.server_context) as upstream, \
                filter_server(upstream.port, values=world.values) as (_, port):
            got = await asyncio.to_thread(_stls_finished_and_capa_in_one_write, port, world.client_context)
            assert got.startswith(b"+OK") and got.endswith(b"\r\n.\r\n") and b"STLS" not in got
            at = upstream.log.index(b"STLS\r\n")
            assert upstream.log[at + 1] == b"CAPA\r\n"

    run(scenario())


def test_stls_response_injection_from_server(tmp_path) -> None:
    from tests.proxy.harness import TlsWorld

    world = TlsWorld(tmp_path)

    async def scenario() -> None:
        async with Pop3TestServer([clean_message(1)], tls=world.server_context,
                                  hostile="inject-after-stls") as upstream, \
                filter_server(upstream.port, values=world.values) as (_, port):
            got = await asyncio.to_thread(_raw_session, port, b"STLS\r\n")
            assert got.startswith(b"-ERR") and b"injected" not in got

    run(scenario())


def test_hostile_clients_endless_line_junk_and_idle() -> None:
    async def scenario() -> None:
        async with Pop3TestServer([clean_message(1)]) as upstream, \
                filter_server(upstream.port, idle_timeout=1.0) as (server, port):
            endless = asyncio.to_thread(_raw_session, port, b"USER " + b"a" * 200_000)
            junk = asyncio.to_thread(_raw_session, port, b"\x00\x01junk\r\nXYZZY\r\n" * 100 + b"QUIT\r\n")
            idle = asyncio.to_thread(_raw_session, port, b"", 5.0)
            clean = asyncio.to_thread(fetch_all, port)
            endless_out, junk_out, idle_out, clean_out = await asyncio.gather(endless, junk, idle, clean)
            assert endless_out.startswith(b"-ERR") and b"line longer" in endless_out
            assert junk_out.count(b"-ERR") == 200 and junk_out.endswith(b"+OK bye\r\n")
            assert idle_out.startswith(b"-ERR") and b"idle" in idle_out
            assert clean_out == [clean_message(1)]
            assert not any(c.startswith(b"XYZZY") for c in upstream.log)

    run(scenario())


# --- issue 5: a certificate policy let through tags every message of that connection ------------


@pytest.mark.parametrize("bad", [True, False])
def test_certificate_accepted_despite_problems_tags_the_messages(tmp_path, bad: bool) -> None:
    from tests.proxy.harness import TlsWorld

    world = TlsWorld(tmp_path)
    if bad:  # a certificate for another host, from the trusted upstream CA
        world.server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        world.upstream_ca.issue_cert("mail.elsewhere.example").configure_cert(world.server_context)
    messages = [clean_message(1), infected_message(2)]

    async def scenario() -> None:
        async with Pop3TestServer(messages, tls=world.server_context, implicit_tls=True) as upstream, \
                filter_server(upstream.port, values={
                    EC + "response.quarantine": False, EC + "protocols.pop3s.ports": [upstream.port],
                    "web-and-email.ssl-tls.certificate-validity.corrupted": "allow",
                    **world.values,
                }) as (_, port):
            def session() -> list[bytes]:
                client = poplib.POP3_SSL("127.0.0.1", port, context=world.client_context, timeout=20)
                client.user("u")
                client.pass_("p")
                got = [b"\r\n".join(client.retr(n)[1]) + b"\r\n" for n in (1, 2)]
                client.quit()
                return got

            got = await asyncio.to_thread(session)
            field = b"X-MailGuard-TLS: upstream certificate accepted by policy despite: wrong-host\r\n"
            if bad:
                head_end = messages[0].index(b"\r\n\r\n") + 2
                assert got[0] == messages[0][:head_end] + field + messages[0][head_end:]
                assert field in got[1] and b"X-MailGuard-Result: infected" in got[1]
                assert b"EICAR-STANDARD" not in got[1]
            else:
                assert got[0] == messages[0]  # byte for byte
                assert b"X-MailGuard-TLS" not in got[1]

    run(scenario())


def test_the_idle_clock_counts_from_the_start_of_each_wait() -> None:
    """One timer per session (pop3_session._Wakeup): busy time is never counted as idle, data
    wakes the session at once, and a wait with nothing heard ends after the idle time-out."""
    import time

    from mailguard.proxy.pop3_session import _Wakeup

    async def scenario() -> tuple[bool, float, bool, float]:
        wakeup = _Wakeup(0.3)
        try:
            time.sleep(0.4)  # busy (a scan, say) for longer than the time-out: not idle
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, wakeup.heard)
            started = time.monotonic()
            heard = await wakeup.wait()
            heard_after = time.monotonic() - started
            started = time.monotonic()
            idle = await wakeup.wait()
            return heard, heard_after, idle, time.monotonic() - started
        finally:
            wakeup.close()

    heard, heard_after, idle, idle_after = run(scenario())
    assert heard is True and heard_after < 0.25
    assert idle is False and 0.25 <= idle_after < 1.0


def test_a_client_that_stops_reading_does_not_hold_its_session() -> None:
    # The client asks for a message far larger than the socket buffers between us and it, then
    # never reads: the session must end after the idle time (small here), not wait on it for
    # good. The bound below is a safety net only.
    big = clean_message(1, body_lines=400_000)  # ~11 MB
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

    async def scenario() -> None:
        async with Pop3TestServer([big]) as upstream, \
                filter_server(upstream.port, idle_timeout=0.5) as (server, port):
            await asyncio.to_thread(sock.connect, ("127.0.0.1", port))
            sock.sendall(b"USER u\r\nPASS p\r\nRETR 1\r\n")  # and never reads again
            async with asyncio.timeout(30):
                while not server._sessions:
                    await asyncio.sleep(0.01)
                sessions = set(server._sessions)
                await asyncio.wait(sessions)
            assert server.snapshot()["active_sessions"] == 0

    try:
        run(scenario())
    finally:
        sock.close()
