"""IMAP sessions at their limits: a server that ignores partials, uploads streamed, not held."""

from __future__ import annotations

import pytest

from mailguard.proxy.imap import ImapContext
from tests.protocols.imap.messages import SIMPLE
from tests.protocols.imap.mock_server import MockImapServer
from tests.proxy.test_imap import INFECTED, Client, login_select, run, run_case

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("message", [SIMPLE, INFECTED])
def test_a_server_ignoring_the_partial_of_a_single_uid_fetch_still_serves_the_scanned_message(message: bytes) -> None:
    """A single-UID UID FETCH asks for the body in the same trip as ``BODY.PEEK[]<0.N>``; a
    server answering that with ``BODY[]`` made the client's FETCH end OK with no data at all."""
    server = MockImapServer([message], ignore_partial=True)
    out: list[bytes] = []

    async def body(client: Client, _: ImapContext) -> None:
        await login_select(client)
        out.append(await client.command(b"a", b"UID FETCH 1 (BODY.PEEK[])"))

    run(run_case(server, body))
    answer = out[0]
    assert b"a OK" in answer and b"FETCH (UID 1 BODY[] {" in answer, answer[:300]
    if message is SIMPLE:
        assert message in answer
    else:
        assert b"EICAR-STANDARD" not in answer and b"X-MailGuard-Result: infected" in answer


# --- uploads: APPEND streamed to the server, never held whole --------------------------------------

UPLOAD = b"From: me@example.org\r\nSubject: saved\r\n\r\n" + b"y" * 3_000_000 + b"\r\n"


@pytest.mark.parametrize("marker", [b"{%d}", b"{%d+}"])
def test_an_append_reaches_the_server_byte_for_byte(marker: bytes) -> None:
    server = MockImapServer([SIMPLE])
    out: list[bytes] = []

    async def body(client: Client, _: ImapContext) -> None:
        await login_select(client)
        await client.send(b"a APPEND Sent (\\Seen) " + marker % len(UPLOAD) + b"\r\n")
        if marker == b"{%d}":
            out.append(await client.reader.readline())  # the "+", given once the server gave one
        await client.send(UPLOAD + b"\r\n")
        out.append(await client.until(b"a"))
        out.append(await client.command(b"b", b"NOOP"))

    run(run_case(server, body))
    expected = b"a APPEND Sent (\\Seen) " + marker % len(UPLOAD) + b"\r\n" + UPLOAD + b"\r\n"
    assert expected in server.received
    assert out[-2].startswith(b"a OK [APPENDUID") and b"b OK" in out[-1]
    if marker == b"{%d}":
        assert out[0].startswith(b"+ ")


def test_an_append_the_server_refuses_before_the_literal_is_answered_and_not_sent() -> None:
    server = MockImapServer([SIMPLE], append_refusal=b"NO [TOOBIG] over quota\r\n")
    out: list[bytes] = []

    async def body(client: Client, _: ImapContext) -> None:
        await login_select(client)
        out.append(await client.command(b"a", b"APPEND Sent {%d}" % len(UPLOAD)))
        out.append(await client.command(b"b", b"NOOP"))

    run(run_case(server, body))
    assert out[0] == b"a NO [TOOBIG] over quota\r\n"
    assert b"b OK" in out[1]


# --- what sessions keep of served messages is bounded engine-wide ------------------------------------

def test_a_thousand_sessions_keep_no_more_served_messages_than_one_may() -> None:
    """Each session kept up to 64 MB of messages it served (for chunk loops): a thousand clients
    fetching many messages made that 64 GB. Their shares now add up to the engine's budget."""
    from mailguard.protocols.imap.memory import ENGINE_MEMORY_BYTES, SESSION_MEMORY_BYTES, SessionMemory

    alone = SessionMemory()
    assert alone.max_bytes == SESSION_MEMORY_BYTES  # one session keeps what it always could
    message = b"m" * 100_000
    memories = [alone] + [SessionMemory() for _ in range(999)]
    for memory in memories:
        for uid in range(20):
            memory.put((b"INBOX", 1, uid), message, True)
    kept = sum(memory._bytes for memory in memories)
    assert kept <= ENGINE_MEMORY_BYTES, f"{kept} bytes kept by 1,000 sessions"
    for memory in memories[1:]:
        memory.close()
    alone.put((b"INBOX", 1, 99), message, True)
    assert alone.max_bytes == SESSION_MEMORY_BYTES and (b"INBOX", 1, 99) in alone
    alone.close()


def test_an_append_before_login_is_refused_by_the_proxy_and_its_literal_never_read_as_commands() -> None:
    """APPEND is handed out in parts, but its first part still passes the allow-list: before
    LOGIN it is refused (its synchronising literal never asked for); with its literal already
    sent (non-synchronising) the session ends rather than read the literal as commands."""
    server = MockImapServer([SIMPLE])
    out: list[bytes] = []

    async def body(client: Client, _: ImapContext) -> None:
        await client.reader.readline()
        out.append(await client.command(b"a", b"APPEND INBOX {5}"))
        out.append(await client.command(b"b", b"NOOP"))
        await client.send(b"c APPEND INBOX {13+}\r\nd LOGOUT\r\n\r\n\r\n")
        out.append(await client.until(b"c"))

    run(run_case(server, body))
    assert out[0].startswith(b"a BAD APPEND is not valid in this state")
    assert b"b OK" in out[1]
    assert b"* BYE" in out[2] and b"d OK" not in out[2]
    assert not any(line.startswith(b"a APPEND") or line.startswith(b"c APPEND") for line in server.received)
