"""Cleaning a Maildir that a real Dovecot serves, while an IMAP client keeps changing flags.

A flag change renames the message file in ``cur/`` (``...:2,S`` to ``...:2,FS``). ``mailguard scan
--action clean`` swaps each cleaned file in under the name it read (rewrite.py) and leaves a file
that was renamed meanwhile to the client. Through IMAP afterwards: every message is there once,
under the UID it had, readable by Dovecot (which runs as another user than the cleaner), and
once the client stops, a last pass leaves no infected message.
"""

from __future__ import annotations

import imaplib
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailguard.mailbox.atomic import MOVED_AWAY
from tests.mailbox.fixtures import EICAR, message
from tests.peers import require
from tests.peers.dovecot import PASSWORD, Dovecot, running_dovecot

pytestmark = [pytest.mark.peer]

MAILGUARD = str(Path(sys.executable).with_name("mailguard"))
MESSAGES = 300
INFECTED_EVERY = 3
USER = "alice"


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[Dovecot]:
    require("dovecot")
    trustme = pytest.importorskip("trustme")
    with running_dovecot(tmp_path, trustme.CA(), tls=False) as server:
        server.deliver(USER, [message(i, EICAR + b"\n" if i % INFECTED_EVERY == 0 else b"body\n")
                              for i in range(MESSAGES)])
        yield server


def _session(server: Dovecot) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=60)
    client.login(USER, PASSWORD)
    client.select("INBOX")
    return client


def _uids_and_bodies(server: Dovecot) -> dict[int, bytes]:
    client = _session(server)
    try:
        status, data = client.uid("FETCH", "1:*", "(BODY.PEEK[])")
        assert status == "OK", data
        found = {}
        for item in data:
            if isinstance(item, tuple):
                uid = int(re.search(rb"UID (\d+)", item[0]).group(1))
                found[uid] = item[1]
        return found
    finally:
        client.logout()


def _message_id(raw: bytes) -> bytes:
    return re.search(rb"(?im)^Message-ID: (<[^>]+>)", raw).group(1)


def test_cleaning_a_served_maildir_while_flags_change_keeps_every_message_once(dovecot: Dovecot, tmp_path: Path):
    served = _uids_and_bodies(dovecot)
    before = {uid: _message_id(raw) for uid, raw in served.items()}
    assert len(before) == MESSAGES
    stop = threading.Event()
    flag_errors: list[str] = []
    flag_changes = [0]

    def change_flags() -> None:
        client = _session(dovecot)
        try:
            while not stop.is_set():
                for command in ("+FLAGS", "-FLAGS"):
                    status, data = client.store("1:*", command, r"(\Seen \Flagged)")
                    if status != "OK":
                        flag_errors.append(f"{command}: {data}")
                    flag_changes[0] += 1
        except Exception as exc:  # noqa: BLE001 - reported by the test below
            flag_errors.append(repr(exc))
        finally:
            client.logout()

    def clean() -> subprocess.CompletedProcess:
        return subprocess.run([MAILGUARD, "scan", "--action", "clean", "--quiet", "--format", "jsonl",
                               str(dovecot.maildir(USER))], capture_output=True, timeout=300,
                              env=dict(os.environ, MAILGUARD_HOME=str(tmp_path / "mailguard-home")))

    flagger = threading.Thread(target=change_flags)
    flagger.start()
    try:
        racing = [clean() for _ in range(3)]
    finally:
        stop.set()
        flagger.join(60)
    final = clean()
    assert not flag_errors, flag_errors[:3]
    assert flag_changes[0] >= 2  # the flags really changed while the cleaner ran
    for run in [*racing, final]:
        assert run.returncode in (0, 1), run.stderr
        for line in run.stdout.splitlines()[:-1]:
            result = json.loads(line)
            # A renamed file is followed; one still moving after FOLLOW_RENAMES renames is left
            # to the client, and said so. Nothing else may fail.
            assert result["write_error"] in (None, f"not rewritten: {MOVED_AWAY}"), result
            assert result["error"] is None, result
    summary = json.loads(final.stdout.splitlines()[-1])["summary"]
    assert summary["messages"] == MESSAGES and summary["write_errors"] == 0

    after = _uids_and_bodies(dovecot)
    assert {uid: _message_id(raw) for uid, raw in after.items()} == before  # every message once, same UID
    for uid, raw in after.items():
        number = int(before[uid][1:].split(b"@")[0])
        if number % INFECTED_EVERY == 0:
            assert EICAR not in raw and b"Eicar-Test-Signature" in raw, raw  # cleaned, and says why
        else:
            assert raw == served[uid]  # clean ones untouched, byte for byte
    owner = {(path.stat().st_uid, path.stat().st_gid) for path in (dovecot.maildir(USER) / "cur").iterdir()}
    assert owner == {(dovecot.mail_uid, dovecot.mail_gid)}

