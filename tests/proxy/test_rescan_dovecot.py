"""Repeat scan after update, over a real Dovecot: a message served clean is fetched again after the
signatures learn it, and what the client gets then (README, "Repeat scan after update")."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import imaplib

import pytest
import trustme

from mailguard.quarantine import Quarantine
from tests.peers import require
from tests.peers.clamd import Clamd
from tests.peers.dovecot import PASSWORD, running_dovecot
from tests.proxy.harness import EC, TlsWorld, clean_message, filter_server, run

pytestmark = [pytest.mark.peer, pytest.mark.timeout(180)]

PAYLOAD = b"Quarterly figures, nothing to see here.\r\n" * 40


def with_attachment(data: bytes) -> bytes:
    body = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: figures\r\nMessage-ID: <f1@example.org>\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
            b"--XX\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
            b"--XX\r\nContent-Type: application/octet-stream; name=figures.dat\r\n"
            b"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=figures.dat\r\n\r\n"
            + body + b"--XX--\r\n")


VICTIM = with_attachment(PAYLOAD)
CLEAN = clean_message(2)


def open_session(port: int, context) -> imaplib.IMAP4:  # type: ignore[no-untyped-def]
    client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    client.starttls(context)
    client.login("alice", PASSWORD)
    client.select("INBOX")
    return client


def fetch(client: imaplib.IMAP4, uid: int) -> bytes:
    status, data = client.uid("FETCH", str(uid), "(BODY.PEEK[])")
    assert status == "OK", data
    (body,) = [piece[1] for piece in data if isinstance(piece, tuple)]
    return body


@pytest.mark.parametrize("update", ["noticed-while-running", "reload", "clamd-database"])
def test_a_message_served_clean_is_scanned_again_after_an_update(tmp_path, update: str) -> None:
    require("dovecot")
    world = TlsWorld(tmp_path)
    clamd = Clamd(tmp_path / "clamd")
    clamd.write_daily({"Test.Other": b"something else entirely"}, version=27001)
    signatures = tmp_path / "signatures"
    signatures.mkdir()
    database = signatures / "local.hdb"
    database.write_text(f"{hashlib.md5(b'something else').hexdigest()}:14:Local.Other\n")
    with running_dovecot(tmp_path, trustme.CA()) as dovecot:
        dovecot.deliver("alice", [VICTIM, CLEAN])
        values = {"web-and-email.ssl-tls.trusted-ca-file": str(dovecot.ca_file),
                  "detection-engine.signatures.paths": [str(signatures)],
                  "detection-engine.clamd.enabled": update == "clamd-database",
                  "detection-engine.clamd.address": clamd.address}

        async def scenario():  # type: ignore[no-untyped-def]
            async with filter_server(dovecot.imap_port, values=values) as (server, port):
                client = await asyncio.to_thread(open_session, port, world.client_context)
                first = [await asyncio.to_thread(fetch, client, uid) for uid in (1, 2)]
                generation = server.config.policy.generation
                # The update: the signatures learn the attachment (as freshclam or a rule feed would).
                if update == "clamd-database":  # freshclam's next daily, and clamd restarted with it
                    clamd.write_daily({"Test.Other": b"something else entirely", "Local.Figures": PAYLOAD},
                                      version=27002)
                    clamd.stop()
                    clamd.start()
                else:
                    database.write_text(database.read_text()
                                        + f"{hashlib.md5(PAYLOAD).hexdigest()}:{len(PAYLOAD)}:Local.Figures\n")
                if update == "reload":
                    await server.reload(server.config.settings)
                else:
                    await server.detection.check()  # what the engine does every minute, now
                assert server.config.policy.generation != generation
                # Fetched again in the same session, then in a new one.
                second = [await asyncio.to_thread(fetch, client, uid) for uid in (1, 2)]
                await asyncio.to_thread(client.logout)
                client = await asyncio.to_thread(open_session, port, world.client_context)
                third = [await asyncio.to_thread(fetch, client, uid) for uid in (1, 2)]
                await asyncio.to_thread(client.logout)
                return first, second, third, server.config.quarantine_dir, server.snapshot()

        with clamd if update == "clamd-database" else contextlib.nullcontext():
            first, second, third, quarantine_dir, snapshot = run(scenario(), timeout=150)
    assert first == [VICTIM, CLEAN]  # clean under the first signatures: byte for byte
    infected = second[0]
    # Never served as it was: the attachment is replaced by a notice (response.action = clean) ...
    assert PAYLOAD not in infected and base64.b64encode(PAYLOAD[:60]) not in infected
    if update == "clamd-database":
        # clamd judges the whole message: it is replaced by a notice (rewrite.py)
        assert b'X-MailGuard-Result: infected; detections="Local.Figures' in infected
        assert b"This message was replaced by mailguard." in infected
    else:
        assert b'X-MailGuard-Result: infected; detections="Local.Figures"' in infected
        assert b"This part was removed by mailguard." in infected and b"see attachment" in infected
    # ... the message with nothing new keeps its bytes (RFC 9051 §2.3.1.1) ...
    assert second[1] == CLEAN
    # ... and a new session gets what the last one got, from the rewrite cache.
    assert third == second
    assert snapshot["counters"]["infected"] == 1
    (entry,) = Quarantine(quarantine_dir).list()
    assert Quarantine(quarantine_dir).get(entry.id)[1] == VICTIM
    assert snapshot["detection"]["generation"] != ""
