"""``mailguard demo`` (through the real console script) and the demo's POP3/IMAP server."""

from __future__ import annotations

import imaplib
import json
import os
import poplib
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mailguard.demo.imap import parse_sequence_set
from mailguard.demo.mailbox import EICAR, sample_mailbox
from mailguard.demo.pop3 import dot_stuff, top
from mailguard.demo.server import DemoServer

MAILGUARD = str(Path(sys.executable).with_name("mailguard"))


# --- the demo server ----------------------------------------------------------------------------




def test_the_sample_mailbox_has_clean_and_infected_mail_and_is_stable() -> None:
    mailbox = sample_mailbox()
    assert [m.infected for m in mailbox].count(True) == 3
    assert [m.infected for m in mailbox].count(False) == 2
    assert any(b"Content-Disposition: attachment" in m.raw for m in mailbox if not m.infected)
    assert [m.raw for m in mailbox] == [m.raw for m in sample_mailbox()]
    assert all(b"\n" not in m.raw.replace(b"\r\n", b"") for m in mailbox)  # CRLF only, as on the wire
    assert EICAR.startswith(b"X5O!P%@AP") and len(EICAR) == 68


def test_dot_stuffing_and_top() -> None:
    assert dot_stuff(b"a\r\n.b\r\n..c\r\n") == b"a\r\n..b\r\n...c\r\n.\r\n"
    assert dot_stuff(b"no final newline") == b"no final newline\r\n.\r\n"
    message = b"H: 1\r\n\r\nl1\r\nl2\r\n"
    assert top(message, 0) == b"H: 1\r\n\r\n"
    assert top(message, 1) == b"H: 1\r\n\r\nl1\r\n"
    assert top(message, 999) == message  # RFC 1939 §7: more lines than the body is the whole message


def test_sequence_sets() -> None:
    assert parse_sequence_set("1:*", 3) == [1, 2, 3]
    assert parse_sequence_set("3,1", 5) == [1, 3]
    assert parse_sequence_set("*:2", 4) == [2, 3, 4]
    assert parse_sequence_set("9", 3) == []


def test_poplib_fetches_every_message_byte_for_byte(demo_server: DemoServer) -> None:
    client = poplib.POP3("127.0.0.1", demo_server.pop3_port, timeout=10)
    try:
        client.user("anyone")
        client.pass_("anything")
        count, size = client.stat()
        assert count == len(demo_server.mailbox)
        assert size == sum(len(m.raw) for m in demo_server.mailbox)
        assert client.uidl(1).split()[-1] == b"demo-0001"
        for number, original in enumerate(demo_server.mailbox, 1):
            response, lines, octets = client.retr(number)
            assert response == f"+OK {len(original.raw)} octets".encode()
            assert b"\r\n".join(lines) + b"\r\n" == original.raw
        assert client.top(1, 0)[1][-1] == b""
        with pytest.raises(poplib.error_proto, match="read-only"):
            client.dele(1)
    finally:
        client.quit()


def test_imaplib_fetches_every_message_byte_for_byte(demo_server: DemoServer) -> None:
    client = imaplib.IMAP4("127.0.0.1", demo_server.imap_port, timeout=10)
    try:
        client.login("anyone", "anything")
        status, data = client.select("INBOX")
        assert (status, data) == ("OK", [str(len(demo_server.mailbox)).encode()])
        status, data = client.fetch("1:*", "(RFC822.SIZE BODY.PEEK[])")
        literals = [item[1] for item in data if isinstance(item, tuple)]
        assert literals == [m.raw for m in demo_server.mailbox]
        status, data = client.uid("FETCH", "2", "(BODY.PEEK[HEADER])")
        assert data[0][1] == demo_server.mailbox[1].raw.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
        with pytest.raises(imaplib.IMAP4.error, match="not supported"):
            client.fetch("1", "(ENVELOPE)")
    finally:
        client.logout()


# --- mailguard demo -----------------------------------------------------------------------------


def _refused(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        return True
    return False


def test_demo_catches_the_infected_pop3_mail_and_leaves_nothing_running(tmp_path: Path) -> None:
    home = tmp_path / "demo-home"
    result = subprocess.run(
        [MAILGUARD, "demo", "--home", str(home), "--json"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["errors"] == {}
    pop3 = [r for r in report["received"] if r["protocol"] == "pop3"]
    assert len(pop3) == 5
    for row in pop3:
        if row["sent_infected"]:
            assert row["caught"] and not row["eicar_reached_client"]
            assert row["result"].startswith("infected")
        else:
            assert row["unchanged"] and row["result"] == ""  # tag-received = infected (default)
    # IMAP is fetched too; whatever the engine does with it, the report must not claim a catch
    # that did not happen.
    imap = [r for r in report["received"] if r["protocol"] == "imap"]
    assert len(imap) == 5
    assert all(r["caught"] == (r["sent_infected"] and not r["eicar_reached_client"]) for r in imap)
    # The originals of the changed messages are in the quarantine, which --home keeps.
    assert report["kept"] is True
    infected_subjects = {m.subject for m in sample_mailbox() if m.infected}
    assert {entry["subject"] for entry in report["quarantine"]} == infected_subjects
    assert all("Eicar-Test-Signature" in entry["detections"] for entry in report["quarantine"])
    # What the demo showed is what the store holds: the quarantine command sees the same entries.
    listed = subprocess.run([MAILGUARD, "quarantine", "list", "--json"], capture_output=True, text=True,
                            env={**os.environ, "MAILGUARD_HOME": str(home)})
    assert listed.returncode == 0, listed.stderr
    stored = json.loads(listed.stdout)["entries"]
    assert sorted(e["id"] for e in report["quarantine"]) == sorted(e["id"] for e in stored)
    # Nothing is left listening.
    for address in [*report["engine_listeners"].values(), *(f"127.0.0.1:{p}" for p in report["server_ports"].values())]:
        assert _refused(address)
    assert not (home / "mailguard.pid").exists()


def test_demo_table_output(tmp_path: Path) -> None:
    result = subprocess.run([MAILGUARD, "demo"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "What the POP3 client (poplib) received" in result.stdout
    assert "Caught " in result.stdout and "infected messages fetched" in result.stdout
    # Subjects come from mail and are shown literally, not read as Rich markup.
    assert "[detection Eicar-Test-Signature" in result.stdout
    assert "now removed" in result.stdout
