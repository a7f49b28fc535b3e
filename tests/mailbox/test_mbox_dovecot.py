"""Cleaning an mbox that a real Dovecot serves: IMAP clients keep their UIDs and see the cleaned mail.

Dovecot keeps an mbox's IMAP state in the file itself (``X-IMAPbase`` on the first message with
the UIDVALIDITY, ``X-UID`` on each), and its index refers to byte offsets in the file. A rewrite
that dropped those headers, or that Dovecot could not resync from, would give every message a new
UID (clients download everything again) or fail the mailbox. So: one IMAP session reads the
mbox (Dovecot writes its headers), ``mailguard scan --action clean`` rewrites it, and a new
session must see the same UIDVALIDITY, the same UIDs for the same messages, the infected ones
cleaned and the rest unchanged. Then the same while a session stays open across the rewrite.
"""

from __future__ import annotations

import imaplib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mailbox.fixtures import EICAR, mbox_bytes, message
from tests.peers import require
from tests.peers.dovecot import MBOX, PASSWORD, Dovecot, running_dovecot

pytestmark = [pytest.mark.peer]

MAILGUARD = str(Path(sys.executable).with_name("mailguard"))
USER = "alice"
MESSAGES = 40
INFECTED_EVERY = 4


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[Dovecot]:
    require("dovecot")
    trustme = pytest.importorskip("trustme")
    with running_dovecot(tmp_path, trustme.CA(), tls=False, mail_location=MBOX) as server:
        inbox = server.mbox(USER)
        (inbox.parent / "mail").mkdir(parents=True)
        inbox.write_bytes(mbox_bytes([message(i, EICAR + b"\n" if i % INFECTED_EVERY == 0 else b"body\n")
                                      for i in range(MESSAGES)]))
        server.own(USER)
        yield server


def _session(server: Dovecot) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=60)
    client.login(USER, PASSWORD)
    status, data = client.select("INBOX")
    assert status == "OK", data
    return client


def _served(client: imaplib.IMAP4) -> tuple[int, dict[int, bytes]]:
    """UIDVALIDITY, and every message by UID."""
    status, data = client.status("INBOX", "(UIDVALIDITY)")
    assert status == "OK", data
    validity = int(re.search(rb"UIDVALIDITY (\d+)", data[0]).group(1))
    status, data = client.uid("FETCH", "1:*", "(BODY.PEEK[])")
    assert status == "OK", data
    messages = {int(re.search(rb"UID (\d+)", item[0]).group(1)): item[1] for item in data if isinstance(item, tuple)}
    return validity, messages


def _number(raw: bytes) -> int:
    return int(re.search(rb"(?im)^Message-ID: <(\d+)@", raw).group(1))


def _clean(server: Dovecot, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([MAILGUARD, "scan", "--action", "clean", "--quiet", "--format", "jsonl",
                           str(server.mbox(USER))], capture_output=True, timeout=300,
                          env=dict(os.environ, MAILGUARD_HOME=str(home)))


def _check(before: tuple[int, dict[int, bytes]], after: tuple[int, dict[int, bytes]]) -> None:
    assert after[0] == before[0]  # UIDVALIDITY kept: clients need not download everything again
    assert {uid: _number(raw) for uid, raw in after[1].items()} == \
           {uid: _number(raw) for uid, raw in before[1].items()}  # every message once, same UID
    for uid, raw in after[1].items():
        if _number(raw) % INFECTED_EVERY == 0:
            assert EICAR not in raw and b"Eicar-Test-Signature" in raw, raw
        else:
            assert raw == before[1][uid]


def test_a_rewritten_mbox_keeps_its_uids_in_dovecot(dovecot: Dovecot, tmp_path: Path):
    client = _session(dovecot)
    before = _served(client)
    client.logout()  # Dovecot writes its X-IMAPbase and X-UID headers into the file
    assert len(before[1]) == MESSAGES
    run = _clean(dovecot, tmp_path / "home")
    assert run.returncode == 1, run.stderr
    client = _session(dovecot)
    try:
        _check(before, _served(client))
    finally:
        client.logout()
    assert b"X-IMAPbase:" in dovecot.mbox(USER).read_bytes()[:4096]


def test_a_session_open_across_the_rewrite_sees_the_cleaned_mail(dovecot: Dovecot, tmp_path: Path):
    client = _session(dovecot)
    try:
        before = _served(client)
        run = _clean(dovecot, tmp_path / "home")
        assert run.returncode == 1, run.stderr
        client.noop()  # Dovecot notices the new file and resyncs
        _check(before, _served(client))
    finally:
        client.logout()
