"""Real peers: Dovecot POP3 (STLS and POP3S) fetched through mailguard by poplib and fetchmail.

Each checks the whole promise: clean messages byte-identical, the infected one cleaned and
tagged, its original kept byte-identical in the quarantine, and the server still holding all."""

from __future__ import annotations

import asyncio
import poplib
import subprocess

import pytest
import trustme

from mailguard.quarantine import Quarantine
from tests.peers import require
from tests.peers.dovecot import PASSWORD, running_dovecot
from tests.proxy.harness import EC, TlsWorld, clean_message, filter_server, infected_message, run

pytestmark = pytest.mark.peer

MESSAGES = [clean_message(1), infected_message(2), clean_message(3, body_lines=3000)]


def assert_quarantine_holds_the_infected_original(folder) -> None:  # type: ignore[no-untyped-def]
    assert folder is not None
    quarantine = Quarantine(folder)
    entries = quarantine.list()
    assert len(entries) == 1
    _, original = quarantine.get(entries[0].id)
    assert original == MESSAGES[1]


def _poplib_fetch(port: int, context, *, implicit: bool) -> list[bytes]:  # type: ignore[no-untyped-def]
    client = (poplib.POP3_SSL("127.0.0.1", port, context=context, timeout=30) if implicit
              else poplib.POP3("127.0.0.1", port, timeout=30))
    if not implicit:
        client.stls(context)
    client.user("alice")
    client.pass_(PASSWORD)
    count, _ = client.stat()
    got = [b"\r\n".join(client.retr(n)[1]) + b"\r\n" for n in range(1, count + 1)]
    client.quit()
    return got


@pytest.mark.parametrize("implicit", [False, True], ids=["stls", "pop3s"])
def test_dovecot_through_mailguard_with_poplib(tmp_path, implicit: bool) -> None:
    require("dovecot")
    world = TlsWorld(tmp_path)
    with running_dovecot(tmp_path, trustme.CA()) as dovecot:
        dovecot.deliver("alice", MESSAGES)
        upstream = dovecot.pop3s_port if implicit else dovecot.pop3_port
        values = {"web-and-email.ssl-tls.trusted-ca-file": str(dovecot.ca_file)}
        if implicit:
            values[EC + "protocols.pop3s.ports"] = [upstream]

        async def scenario():  # type: ignore[no-untyped-def]
            async with filter_server(upstream, values=values) as (server, port):
                got = await asyncio.to_thread(_poplib_fetch, port, world.client_context, implicit=implicit)
                return got, server.config.quarantine_dir, server.snapshot()["counters"]

        got, quarantine_dir, counters = run(scenario())
        # Dovecot's LIST sizes and TOP answers agree with RETR: read-ahead served message 3 at
        # least (poplib asks STAT, not LIST, so our own LIST may let the client's RETR 2 pass first)
        assert counters["read_ahead"] >= 1
        assert got[0] == MESSAGES[0] and got[2] == MESSAGES[2]
        assert b"EICAR-STANDARD" not in got[1] and b"X-MailGuard-Result: infected" in got[1]
        assert_quarantine_holds_the_infected_original(quarantine_dir)
        assert len(dovecot.stored("alice")) == 3  # the server still holds every message


def test_dovecot_through_mailguard_with_fetchmail(tmp_path) -> None:
    require("dovecot")
    fetchmail = require("fetchmail")
    TlsWorld(tmp_path)  # creates the engine's CA, which fetchmail's sslcertfile trusts below
    ca_file = tmp_path / "mailguard-ca.pem"
    from mailguard.settings import resolve_paths
    from mailguard.tls.castore import CAStore

    ca_file.write_bytes(CAStore(resolve_paths().state_dir).active().cert_path.read_bytes())
    with running_dovecot(tmp_path, trustme.CA()) as dovecot:
        dovecot.deliver("alice", MESSAGES)
        values = {"web-and-email.ssl-tls.trusted-ca-file": str(dovecot.ca_file)}

        async def scenario():  # type: ignore[no-untyped-def]
            async with filter_server(dovecot.pop3_port, values=values) as (server, port):
                out = tmp_path / "mbox"
                rc = tmp_path / "fetchmailrc"
                rc.write_text(
                    f'poll localhost service {port} protocol pop3 auth password\n'
                    f'  user "alice" password "{PASSWORD}" keep sslproto tls1.2+ sslcertck\n'
                    f'  sslcertfile "{ca_file}"\n'
                    f'  mda "/bin/sh -c \'cat > {tmp_path}/msg.$$$$; mv {tmp_path}/msg.$$$$ {tmp_path}/got-$(ls {tmp_path} | wc -l)\'"\n'
                )
                rc.chmod(0o600)
                result = await asyncio.to_thread(
                    subprocess.run, [fetchmail, "-f", str(rc), "--nodetach", "--nosyslog", "-s",
                                      "--pidfile", str(tmp_path / "fetchmail.pid")],
                    capture_output=True, text=True, timeout=60,
                    env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
                )
                assert result.returncode == 0, result.stdout + result.stderr
                del out
                return server.config.quarantine_dir

        quarantine_dir = run(scenario())
        got = sorted(tmp_path.glob("got-*"), key=lambda p: p.stat().st_mtime_ns)
        assert len(got) == 3
        bodies = [p.read_bytes() for p in got]
        assert sum(b"EICAR-STANDARD" in b for b in bodies) == 0
        assert sum(b"X-MailGuard-Result: infected" in b for b in bodies) == 1
        assert_quarantine_holds_the_infected_original(quarantine_dir)
        assert len(dovecot.stored("alice")) == 3  # fetchmail "keep": nothing deleted
