from __future__ import annotations

import asyncio
import imaplib
import ssl

import pytest

from mailguard.protocols.imap.memory import SessionMemory
from tests.protocols.imap.messages import SIMPLE
from tests.protocols.imap.mock_server import MockImapServer
from tests.proxy.harness import EC, TlsWorld, filter_server, run


def test_memory_keeps_the_servers_size_once_known_and_evicts_oldest_first() -> None:
    memory = SessionMemory(max_bytes=10)
    memory.put((b"INBOX", 1, 1), b"abcd", True)
    assert memory.get((b"INBOX", 1, 1)) == (b"abcd", True, None)
    memory.put((b"INBOX", 1, 1), b"abcd", True, 4)  # the size learnt later is kept
    assert memory.get((b"INBOX", 1, 1)) == (b"abcd", True, 4)
    memory.put((b"INBOX", 1, 2), b"efgh", False)
    memory.get((b"INBOX", 1, 1))  # used last: kept
    memory.put((b"INBOX", 1, 3), b"ijkl", True)
    assert (b"INBOX", 1, 2) not in memory and (b"INBOX", 1, 1) in memory and (b"INBOX", 1, 3) in memory
    memory.put((b"INBOX", 1, 4), b"x" * 11, True)  # larger than the whole memory: not kept
    assert (b"INBOX", 1, 4) not in memory


# --- issue 5: a certificate policy let through tags every message of that connection ------------

TLS_FIELD = b"X-MailGuard-TLS: upstream certificate accepted by policy despite: wrong-host\r\n"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad", [True, False], ids=["wrong-host", "good"])
def test_certificate_accepted_despite_problems_tags_fetched_messages(tmp_path, bad: bool) -> None:  # type: ignore[no-untyped-def]
    world = TlsWorld(tmp_path)
    upstream_tls = world.server_context
    if bad:  # a certificate for another host, from the trusted upstream CA
        upstream_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        world.upstream_ca.issue_cert("mail.elsewhere.example").configure_cert(upstream_tls)
    server = MockImapServer([SIMPLE], greeting=b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] mock\r\n",
                            tls=upstream_tls)

    async def scenario() -> tuple[bytes, int]:
        listener = await server.start()
        try:
            async with filter_server(server.port, values={
                EC + "response.quarantine": False,
                "web-and-email.ssl-tls.certificate-validity.corrupted": "allow",
                **world.values,
            }) as (_, port):
                def session() -> tuple[bytes, int]:
                    client = imaplib.IMAP4("127.0.0.1", port, timeout=20)
                    client.starttls(world.client_context)
                    client.login("alice", "pass")
                    client.select("INBOX")
                    _, data = client.fetch("1", "(RFC822.SIZE BODY.PEEK[])")
                    client.logout()
                    head, body = next(piece for piece in data if isinstance(piece, tuple))
                    return body, int(head.split(b"RFC822.SIZE ")[1].split()[0].rstrip(b")"))

                return await asyncio.to_thread(session)
        finally:
            listener.close()

    body, size = run(scenario())
    if bad:
        head_end = SIMPLE.index(b"\r\n\r\n") + 2
        assert body == SIMPLE[:head_end] + TLS_FIELD + SIMPLE[head_end:]
    else:
        assert body == SIMPLE  # byte for byte
    assert size == len(body)  # the size describes what is delivered
