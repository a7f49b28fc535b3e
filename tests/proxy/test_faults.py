"""Faults under a running engine: the server killed mid-answer, the disk full under the quarantine and
under the IMAP cache, a scan worker killed. Each time the session ends cleanly (the client told in
its protocol), nothing is delivered unscanned as if scanned, nothing in the mailbox is lost, and the
engine goes on serving other sessions.

Disks are really full: a tiny tmpfs mounted by the test (root), filled up before the engine starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import os
import poplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.peers import require, require_root
from tests.peers.dovecot import PASSWORD, running_dovecot
from tests.proxy.harness import EC, clean_message, filter_server, infected_message, run
from tests.scanpool.test_scanprocs import _kill_worker_mid_scan

MESSAGES = [clean_message(1), infected_message(2), clean_message(3)]
QUARANTINE = "tools.quarantine.path"


@contextlib.contextmanager
def full_disk(path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs at ``path``, filled to the last byte: every write there fails with ENOSPC."""
    require_root()
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(path)], check=True)
    try:
        fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _pop3_fetch_and_delete(port: int) -> tuple[list[bytes], list[str]]:
    """A delete-after-download client: RETR every message, DELE what came, QUIT; (messages, errors)."""
    client = poplib.POP3("127.0.0.1", port, timeout=30)
    client.user("alice")
    client.pass_(PASSWORD)
    count, _ = client.stat()
    got, errors = [], []
    for number in range(1, count + 1):
        try:
            got.append(b"\r\n".join(client.retr(number)[1]) + b"\r\n")
        except poplib.error_proto as exc:
            errors.append(str(exc))
            continue
        client.dele(number)
    client.quit()
    return got, errors


def _imap_fetch(port: int) -> tuple[list[bytes], list[str]]:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    client.login("alice", PASSWORD)
    client.select("INBOX")
    got, errors = [], []
    for uid in client.uid("SEARCH", "ALL")[1][0].split():  # type: ignore[index, union-attr]
        status, data = client.uid("FETCH", uid.decode(), "(BODY.PEEK[])")
        if status != "OK":
            errors.append(repr(data))
            continue
        got.append(data[0][1])  # type: ignore[index]
    client.logout()
    return got, errors


def _delivered_as_scanned(message: bytes) -> bool:
    return b"EICAR-STANDARD" not in message or b"X-MailGuard-Result: unscanned" in message


@pytest.mark.peer
@pytest.mark.root
def test_the_quarantine_disk_full_withholds_the_infected_message_and_loses_nothing(tmp_path: Path) -> None:
    require("dovecot")
    with full_disk(tmp_path / "quarantine") as quarantine, running_dovecot(tmp_path, trustme.CA(), tls=False) as dovecot:
        dovecot.deliver("alice", MESSAGES)

        async def scenario() -> None:
            async with filter_server(dovecot.pop3_port, values={QUARANTINE: str(quarantine)}) as (server, port):
                got, errors = await asyncio.to_thread(_pop3_fetch_and_delete, port)
                assert got == [MESSAGES[0], MESSAGES[2]]
                assert len(errors) == 1 and "[SYS/TEMP]" in errors[0] and "quarantine" in errors[0]
                # the infected one is still on the server, the engine still serves
                got, errors = await asyncio.to_thread(_pop3_fetch_and_delete, port)
                assert got == [] and len(errors) == 1
            async with filter_server(dovecot.imap_port, values={QUARANTINE: str(quarantine)}) as (server, port):
                got, errors = await asyncio.to_thread(_imap_fetch, port)
                assert got == [] and len(errors) == 1 and "UNAVAILABLE" in errors[0]

        run(scenario(), timeout=120)
        assert dovecot.stored("alice") == [MESSAGES[1]]


@pytest.mark.peer
@pytest.mark.root
def test_the_imap_cache_disk_full_still_serves_scanned_messages(tmp_path: Path, mailguard_home: Path) -> None:
    require("dovecot")
    mailguard_home.mkdir(parents=True, exist_ok=True)
    with full_disk(mailguard_home / "imap-cache"), running_dovecot(tmp_path, trustme.CA(), tls=False) as dovecot:
        dovecot.deliver("alice", MESSAGES)

        async def scenario() -> None:
            async with filter_server(dovecot.imap_port, values={QUARANTINE: str(tmp_path / "q")}) as (server, port):
                for _ in range(2):  # a second session: nothing cached, all scanned again
                    got, errors = await asyncio.to_thread(_imap_fetch, port)
                    assert errors == [] and len(got) == 3
                    assert got[0] == MESSAGES[0] and got[2] == MESSAGES[2]
                    assert b"EICAR-STANDARD" not in got[1] and b"X-MailGuard-Result: infected" in got[1]

        run(scenario(), timeout=120)
        assert dovecot.stored("alice") == MESSAGES


@pytest.mark.peer
def test_a_scan_worker_killed_costs_only_its_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every worker dies on the infected message: it is never delivered as if scanned (tagged
    unscanned under pass; withheld under block), and the session and engine go on."""
    require("dovecot")
    with running_dovecot(tmp_path, trustme.CA(), tls=False) as dovecot:
        dovecot.deliver("alice", MESSAGES)

        async def scenario() -> None:
            async with filter_server(dovecot.pop3_port, pool_kind="process", values={
                EC + "response.on-scan-error": "block", QUARANTINE: str(tmp_path / "q"),
            }) as (server, port):
                server.pool.loop_is_idle = lambda: False  # scans go to the worker processes
                killed = _kill_worker_mid_scan(monkeypatch, times=2)  # both tries of the first message
                client = await asyncio.to_thread(poplib.POP3, "127.0.0.1", port, 30)
                await asyncio.to_thread(client.user, "alice")
                await asyncio.to_thread(client.pass_, PASSWORD)
                first = b"\r\n".join((await asyncio.to_thread(client.retr, 2))[1])
                assert len(killed) == 2
                assert b"EICAR-STANDARD" not in first  # blocked: never the unscanned bytes
                rest = [b"\r\n".join((await asyncio.to_thread(client.retr, n))[1]) + b"\r\n" for n in (1, 3)]
                assert rest == [MESSAGES[0], MESSAGES[2]]
                await asyncio.to_thread(client.quit)

        run(scenario(), timeout=120)
        assert dovecot.stored("alice") == MESSAGES


class _DiesMidAnswer:
    """A server whose first session dies in the middle of its answer to a fetch; later ones serve."""

    def __init__(self, protocol: str, message: bytes) -> None:
        self.protocol, self.message, self.sessions = protocol, message, 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        dies = self.sessions == 1
        pop3 = self.protocol == "pop3"
        writer.write(b"+OK ready\r\n" if pop3 else b"* OK [CAPABILITY IMAP4rev1] ready\r\n")
        while line := await reader.readline():
            tag, _, rest = line.partition(b" ")
            verb = (line if pop3 else rest).split(b" ")[0].strip().upper()
            if pop3 and verb == b"RETR":
                writer.write(b"+OK %d octets\r\n" % len(self.message))
                body = self.message
                if dies:
                    writer.write(body[: len(body) // 2])
                    await writer.drain()
                    writer.transport.abort()  # killed: no FIN, no rest
                    return
                writer.write(body + b".\r\n")
            elif not pop3 and verb == b"UID" and b"FETCH" in rest.upper():
                head = b"* 1 FETCH (UID 1 RFC822.SIZE %d BODY[] {%d}\r\n" % (len(self.message), len(self.message))
                if dies:
                    writer.write(head + self.message[: len(self.message) // 2])
                    await writer.drain()
                    writer.transport.abort()
                    return
                writer.write(head + self.message + b")\r\n" + tag + b" OK done\r\n")
            elif not pop3 and verb == b"SELECT":
                writer.write(b"* 1 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n" + tag + b" OK done\r\n")
            elif pop3 and verb == b"QUIT":
                writer.write(b"+OK bye\r\n")
                return
            elif not pop3 and verb == b"LOGOUT":
                writer.write(b"* BYE bye\r\n" + tag + b" OK done\r\n")
                return
            else:
                writer.write(b"+OK\r\n" if pop3 else tag + b" OK done\r\n")


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_the_server_killed_mid_answer_ends_the_session_and_the_engine_serves_on(protocol: str) -> None:
    from tests.proxy.test_limits import scripted_server

    message = infected_message(1) + b"x" * 1000 + b"\r\n" * 200
    server_side = _DiesMidAnswer(protocol, message)

    def pop3_session(port: int) -> bytes:
        client = poplib.POP3("127.0.0.1", port, timeout=30)
        client.user("alice")
        client.pass_(PASSWORD)
        return b"\r\n".join(client.retr(1)[1])

    def imap_session(port: int) -> bytes:
        client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
        client.login("alice", PASSWORD)
        client.select("INBOX")
        status, data = client.uid("FETCH", "1", "(BODY.PEEK[])")
        assert status == "OK"
        return data[0][1]  # type: ignore[index]

    session = pop3_session if protocol == "pop3" else imap_session

    async def scenario() -> None:
        async with scripted_server(server_side) as upstream, filter_server(upstream) as (server, port):
            with pytest.raises((poplib.error_proto, imaplib.IMAP4.abort, imaplib.IMAP4.error, EOFError,
                                ConnectionError)) as failed:
                await asyncio.to_thread(session, port)
            assert "EICAR" not in str(failed.value)
            again = await asyncio.to_thread(session, port)
            assert b"EICAR-STANDARD" not in again and b"X-MailGuard-Result: infected" in again

    run(scenario(), timeout=120)
    assert os.environ.get("MAILGUARD_HOME")  # the test's own home: nothing shared with others
