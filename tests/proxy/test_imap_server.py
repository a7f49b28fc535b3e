"""IMAP through the whole engine (FilterServer, its CA, its routes) in front of a real Dovecot."""

from __future__ import annotations

import asyncio
import imaplib

import pytest
import trustme

from tests.peers import require
from tests.peers.dovecot import PASSWORD, running_dovecot
from tests.proxy.harness import EC, TlsWorld, clean_message, filter_server, infected_message, run

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

MESSAGES = [clean_message(1), infected_message(2), clean_message(3, body_lines=3000)]


def _fetch_all(port: int, context, *, implicit: bool) -> tuple[list[bytes], list[bytes]]:  # type: ignore[no-untyped-def]
    client = (imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=context, timeout=30) if implicit
              else imaplib.IMAP4("127.0.0.1", port, timeout=30))
    if not implicit:
        assert "STARTTLS" in client.capabilities  # offered on, with our CA's leaf
        client.starttls(context)
    client.login("alice", PASSWORD)
    client.select("INBOX")
    _, data = client.uid("FETCH", "1:*", "(UID RFC822.SIZE BODY.PEEK[])")
    bodies = [piece[1] for piece in data if isinstance(piece, tuple)]
    capabilities = [word.encode() for word in client.capabilities]
    client.logout()
    return bodies, capabilities


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "imaps"])
def test_dovecot_through_the_engine(tmp_path, mailguard_home, implicit: bool) -> None:  # type: ignore[no-untyped-def]
    require("dovecot")
    world = TlsWorld(tmp_path)
    with running_dovecot(tmp_path, trustme.CA()) as dovecot:
        dovecot.deliver("alice", MESSAGES)
        upstream = dovecot.imaps_port if implicit else dovecot.imap_port
        values = {"web-and-email.ssl-tls.trusted-ca-file": str(dovecot.ca_file), EC + "response.quarantine": False}
        if implicit:
            values[EC + "protocols.imaps.ports"] = [upstream]

        async def scenario() -> tuple[list[bytes], list[bytes]]:
            async with filter_server(upstream, values=values) as (_, port):
                return await asyncio.to_thread(_fetch_all, port, world.client_context, implicit=implicit)

        bodies, capabilities = run(scenario())
    assert bodies[0] == MESSAGES[0] and bodies[2] == MESSAGES[2]
    assert b"EICAR-STANDARD" not in bodies[1] and b"X-MailGuard-Result: infected" in bodies[1]
    assert not any(word.startswith(b"COMPRESS") for word in capabilities)
    cache = mailguard_home / "imap-cache"
    # records in the cache's log, a rewritten message's bytes in a file (imap_cache.py)
    assert cache.is_dir() and (cache / "records.log").stat().st_size > 0 and any(cache.rglob("*.rewritten"))
    assert not any(cache.rglob("*.blob"))  # no copy of a clean message on disk
