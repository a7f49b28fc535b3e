"""Recognition that fails closed, through the real engine: a greeting the proxy would not have
called POP3 or IMAP, or a client that speaks before the server greets, once turned the session
into an unscanned byte relay. poplib and imaplib accept these greetings; whatever they hand
their caller must have been scanned, on a port in a protocol's list and on any other port.
"""

from __future__ import annotations

import asyncio
import imaplib
import poplib
from typing import Any

import pytest

from mailguard.scan.engine import Engine
from mailguard.scan.policy import Policy
from mailguard.settings import Settings
from tests.protocols.imap.mock_server import MockImapServer
from tests.proxy.harness import EC, EICAR, filter_server, infected_message, run
from tests.proxy.scripted_pop3 import ScriptedPop3

_ENGINE = Engine(Policy.from_settings(Settings.from_values({})))
INFECTED = infected_message(1)


def _infected(message: bytes) -> bool:
    return _ENGINE.scan(message).status.value == "infected"


def _port_values(protocol: str | None, port: int) -> dict[str, Any]:
    """Settings putting the upstream port into ``protocol``'s list (None: in no list)."""
    return {EC + f"protocols.{protocol}.ports": [port]} if protocol else {}


def _poplib_retr(port: int) -> bytes:
    client = poplib.POP3("127.0.0.1", port, timeout=20)
    try:
        client.user("u")
        client.pass_("p")
        _, lines, _ = client.retr(1)
        client.quit()
        return b"".join(line + b"\r\n" for line in lines)
    finally:
        client.close()


@pytest.mark.parametrize("greeting", [b"+OK<1.2@x>\r\n", b"+ok ready\r\n", b"+OK\tready\r\n"])
@pytest.mark.parametrize("protocol", [None, "pop3"])
def test_pop3_greetings_poplib_accepts_are_scanned(greeting: bytes, protocol: str | None) -> None:
    answers = {b"RETR 1": b"+OK\r\n" + INFECTED + b".\r\n"}
    assert not INFECTED.count(b"\r\n.")  # nothing to stuff

    async def scenario() -> bytes:
        async with ScriptedPop3(answers, greeting=greeting) as upstream, \
                filter_server(upstream.port, values=_port_values(protocol, upstream.port)) as (server, port):
            got = await asyncio.to_thread(_poplib_retr, port)
            counters = server.snapshot()["counters"]
            assert counters["infected"] == 1 and counters["relayed"] == 0
            return got

    got = run(scenario())
    assert EICAR not in got and not _infected(got)


def _imaplib_fetch(port: int) -> bytes:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=20)
    try:
        client.login("alice", "pass")
        client.select("INBOX")
        _, data = client.fetch("1", "(BODY.PEEK[])")
        client.logout()
        return b"".join(part[1] for part in data if isinstance(part, tuple))
    finally:
        if client.state != "LOGOUT":
            client.shutdown()


@pytest.mark.parametrize("protocol", [None, "imap"])
def test_an_imap_greeting_imaplib_accepts_is_scanned(protocol: str | None) -> None:
    greeting = b"* OK[CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n"
    server = MockImapServer([INFECTED], greeting=greeting)

    async def scenario() -> bytes:
        upstream = await server.start()
        try:
            async with filter_server(server.port, values=_port_values(protocol, server.port)) as (engine, port):
                got = await asyncio.to_thread(_imaplib_fetch, port)
                assert engine.snapshot()["counters"]["relayed"] == 0
                return got
        finally:
            upstream.close()

    got = run(scenario())
    assert got and EICAR not in got and not _infected(got)


async def _speak_first(port: int, first: bytes) -> bytes:
    """A client that sends before any greeting; everything it receives until the close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(first)
    got = await reader.read()
    writer.close()
    return got


@pytest.mark.parametrize(("protocol", "refusal"), [
    (None, b""),
    ("pop3", b"-ERR [SYS/PERM] mailguard: the client spoke before the server greeted\r\n"),
])
def test_a_pop3_client_that_speaks_first_gets_no_relay(protocol: str | None, refusal: bytes) -> None:
    """The server holds its greeting until the client has spoken (a slow greeting); then it
    answers the client's pipelined commands with an infected message."""
    answers = {b"RETR 1": b"+OK\r\n" + INFECTED + b".\r\n"}

    async def scenario() -> bytes:
        async with ScriptedPop3(answers, greet_after_client=True) as upstream, \
                filter_server(upstream.port, values=_port_values(protocol, upstream.port)) as (server, port):
            got = await _speak_first(port, b"USER u\r\nPASS p\r\nRETR 1\r\nQUIT\r\n")
            counters = server.snapshot()["counters"]
            assert counters["relayed"] == 0
            assert counters["unrecognized" if protocol is None else "errors"] == 1
            return got

    got = run(scenario())
    assert EICAR not in got
    assert got == refusal


@pytest.mark.parametrize(("protocol", "refusal"), [
    (None, b""),
    ("imap", b"* BYE [UNAVAILABLE] mailguard: the client spoke before the server greeted\r\n"),
])
def test_an_imap_client_that_speaks_first_gets_no_relay(protocol: str | None, refusal: bytes) -> None:
    literal = b"* 1 FETCH (BODY[] {%d}\r\n" % len(INFECTED) + INFECTED + b")\r\n"
    # greeting and answer sent together once the client has spoken
    upstream_bytes = b"* OK hi\r\n" + literal + b"a OK done\r\n"

    async def scenario() -> bytes:
        async with ScriptedPop3({}, greeting=upstream_bytes, greet_after_client=True) as upstream, \
                filter_server(upstream.port, values=_port_values(protocol, upstream.port)) as (server, port):
            got = await _speak_first(port, b"a FETCH 1 BODY[]\r\n")
            assert server.snapshot()["counters"]["relayed"] == 0
            return got

    got = run(scenario())
    assert EICAR not in got
    assert got == refusal


def test_on_a_pop3_port_the_greeting_does_not_choose_the_protocol() -> None:
    """An IMAP greeting on a port in the pop3 list is a POP3 server that greets wrongly: the
    client is told so, and nothing is relayed."""
    answers = {b"RETR 1": b"+OK\r\n" + INFECTED + b".\r\n"}

    async def scenario() -> bytes:
        async with ScriptedPop3(answers, greeting=b"* OK IMAP4rev1 ready\r\n") as upstream, \
                filter_server(upstream.port, values=_port_values("pop3", upstream.port)) as (server, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"USER u\r\nPASS p\r\nRETR 1\r\n")
            got = await reader.read()
            writer.close()
            counters = server.snapshot()["counters"]
            assert counters["relayed"] == 0 and counters["unrecognized"] == 0
            return got

    got = run(scenario())
    assert got.startswith(b"-ERR") and b"not a POP3 greeting" in got and EICAR not in got
