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
