"""Hostile POP3 servers behind the real engine, poplib as the client: answers framed so that a
client could read them otherwise than the proxy (bare LF, bare CR, a dot line not stuffed),
junk in listings. Whatever the server does, nothing poplib hands its caller may be something
the scanner did not see: here, no message it returns is one the engine finds infected, and no
listing line it returns is anything but a listing line.
"""

from __future__ import annotations

import asyncio
import base64
import poplib
import re
from typing import Any

import pytest

from mailguard.scan.engine import Engine
from mailguard.scan.policy import Policy
from mailguard.settings import Settings
from tests.proxy.harness import EC, EICAR, filter_server, run
from tests.proxy.scripted_pop3 import ScriptedPop3

_ENGINE = Engine(Policy.from_settings(Settings.from_values({})))

HARMLESS = b"From: a@example.org\r\nSubject: harmless\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
# What a server smuggles behind a line that poplib takes for the end of the first answer: the
# status line of a second answer and a message with the test virus attached (base64, so the
# scan of the whole first answer as one text/plain message finds nothing in it).
SMUGGLED = (
    b"+OK 400 octets\r\nFrom: a@example.org\r\nSubject: smuggled\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\n"
    b"Content-Type: application/octet-stream; name=eicar.com\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes(EICAR).replace(b"\n", b"\r\n") + b"--XX--\r\n"
)
SECOND = b"Subject: second\r\n\r\nthe real second message\r\n"


def _infected(message: bytes) -> bool:
    return _ENGINE.scan(message).status.value == "infected"


def _retrieve(port: int, numbers: tuple[int, ...]) -> list[bytes]:
    """What poplib hands its caller for each RETR, until the session fails."""
    got: list[bytes] = []
    client = poplib.POP3("127.0.0.1", port, timeout=20)
    try:
        client.user("u")
        client.pass_("p")
        for number in numbers:
            _, lines, _ = client.retr(number)
            got.append(b"".join(line + b"\r\n" for line in lines))
        client.quit()
    except (poplib.error_proto, OSError):
        pass  # a session the engine ended: whatever came before is what the caller has
    finally:
        client.close()
    return got


@pytest.mark.parametrize("end", [
    pytest.param(b"hello\n.\r\n", id="bare-LF-dot-CRLF"),
    pytest.param(b"hello\r\n.\n", id="dot-bare-LF"),
    pytest.param(b"hello\n.\n", id="bare-LF-dot-bare-LF"),
    pytest.param(b"hello\r\n\r.\n", id="CR-dot-LF"),
])
def test_a_line_poplib_takes_for_the_end_does_not_smuggle_a_second_message(end: bytes) -> None:
    first = b"+OK\r\nFrom: a@example.org\r\nSubject: harmless\r\nContent-Type: text/plain\r\n\r\n" + end
    answers = {
        b"RETR 1": first + SMUGGLED + b"\r\n.\r\n",
        b"RETR 2": b"+OK\r\n" + SECOND + b".\r\n",
        b"RETR 3": b"+OK\r\n" + SECOND + b".\r\n",
    }

    async def scenario() -> list[bytes]:
        async with ScriptedPop3(answers) as upstream, filter_server(upstream.port) as (server, port):
            got = await asyncio.to_thread(_retrieve, port, (1, 2, 3))
            assert server.snapshot()["counters"]["messages_scanned"] >= 1
            return got

    got = run(scenario())
    assert got, "poplib got nothing at all"
    assert not any(_infected(message) for message in got)
    assert not any(b"Subject: smuggled" in message.split(b"\r\n\r\n")[0] for message in got)
    # each later RETR gets the server's answer to it: the client and the server stay in step
    assert got[1:] == [SECOND, SECOND]


def _fetchmail_reading(wire_body: bytes) -> bytes:
    """How an RFC 1939 §3 reader (fetchmail) reads a body: the dot of any dot line goes."""
    return re.sub(rb"(?m)^\.", b"", wire_body)


def test_a_dot_line_the_server_did_not_stuff_reaches_every_client_alike() -> None:
    # ".TVqQ..." read by poplib keeps its dot, read as RFC 1939 says loses it: two clients, two
    # messages. The client must get one message every reader reads the same.
    answers = {b"RETR 1": b"+OK\r\nSubject: dots\r\n\r\n.leading\r\n..stuffed\r\n.\r\n"}
    wire: list[bytes] = []

    async def scenario() -> None:
        async with ScriptedPop3(answers) as upstream, filter_server(upstream.port) as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await reader.readline()
            writer.write(b"USER u\r\nPASS p\r\nRETR 1\r\n")
            for _ in range(3):
                await reader.readline()
            wire.append(await reader.readuntil(b"\r\n.\r\n"))
            writer.write(b"QUIT\r\n")
            await reader.readline()
            writer.close()

    run(scenario())
    body_wire = wire[0][:-3]
    poplib_reading = b"".join(
        (line[1:] if line.startswith(b"..") else line) + b"\r\n" for line in body_wire.split(b"\r\n")[:-1]
    )
    assert poplib_reading == _fetchmail_reading(body_wire)
    assert poplib_reading == b"Subject: dots\r\n\r\n.leading\r\n.stuffed\r\n"


def test_an_over_size_message_streamed_unscanned_cannot_smuggle_a_second_one() -> None:
    """Too large to scan and passed on tagged "unscanned": a bare-LF end inside must not let a
    second, untagged message out of it."""
    filler = b"".join(b"filler line %d\r\n" % i for i in range(400))
    first = b"+OK\r\nSubject: big\r\n\r\n" + filler + b"hello\n.\r\n"
    answers = {b"RETR 1": first + SMUGGLED + b"\r\n.\r\n", b"RETR 2": b"+OK\r\n" + SECOND + b".\r\n"}
    values: dict[str, Any] = {EC + "threatsense.limits.max-object-size": "4KB"}

    async def scenario() -> list[bytes]:
        async with ScriptedPop3(answers) as upstream, filter_server(upstream.port, values=values) as (_, port):
            return await asyncio.to_thread(_retrieve, port, (1, 2))

    got = run(scenario())
    for message in got:
        assert message.startswith(b"X-MailGuard-Result: unscanned") or message == SECOND
        assert not _infected(message)


@pytest.mark.parametrize(("command", "answer", "good"), [
    (b"UIDL", b"+OK\r\n1 uid-1\r\nFrom: evil\r\n" + EICAR + b"\r\n2 uid-2\r\n.\r\n", [b"1 uid-1", b"2 uid-2"]),
    (b"UIDL", b"+OK\r\n1 uid-1\n.\r\n+OK\r\n2 uid-2\r\n.\r\n", [b"1 uid-1", b"2 uid-2"]),
    (b"LIST", b"+OK\r\n1 120\r\n\r\nnot a listing\r\n2 300 extra words\r\n.\r\n", [b"1 120", b"2 300 extra words"]),
    (b"LIST", b"+OK\r\n1 120\r\x002 300\r\n.\r\n", [b"1 120"]),
])
def test_junk_lines_in_a_listing_are_not_relayed(command: bytes, answer: bytes, good: list[bytes]) -> None:
    def listing(port: int) -> list[bytes]:
        client = poplib.POP3("127.0.0.1", port, timeout=20)
        try:
            client.user("u")
            client.pass_("p")
            _, lines, _ = client.uidl() if command == b"UIDL" else client.list()
            client.quit()
            return lines
        finally:
            client.close()

    async def scenario() -> list[bytes]:
        async with ScriptedPop3({command: answer}) as upstream, filter_server(upstream.port) as (_, port):
            return await asyncio.to_thread(listing, port)

    assert run(scenario()) == good
