"""Transparent mode deployed as a user would (root): a real Dovecot in a "remote" network
namespace, real clients (poplib, imaplib, fetchmail), the engine started with ``mailguard
start``, over IPv4 and IPv6, on a desktop (client and engine in one namespace) and on a gateway
(the client routed through the engine's namespace).

Every namespace, link and address is made here and removed at the end (tests/peers/netns.py);
nothing is sent anywhere else. Conditions are waited on, never slept through.
"""

from __future__ import annotations

import contextlib
import imaplib
import json
import os
import poplib
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme

from mailguard.demo.mailbox import EICAR, sample_mailbox
from mailguard.processes import process_alive
from tests import peers
from tests.peers.dovecot import PASSWORD, Dovecot, running_dovecot
from tests.peers.netns import Namespaces, link, run_in
from tests.transparent.test_transparent import _assert_scanned

pytestmark = [pytest.mark.root, pytest.mark.peer]

PF = "web-and-email.protocol-filtering."
MAILGUARD = str(Path(sys.executable).with_name("mailguard"))
# The server's certificate names this host only, like real providers' (no IP address in it):
# transparent mode verifies it against the name the client asks for (SNI).
REMOTE_NAME = "mail.remote.test"
USER = "alice"
MAILBOX = sample_mailbox()
ORIGINALS = [m.raw for m in MAILBOX]
FAMILIES = ("ipv4", "ipv6")
# (protocol, port, TLS: "plain" | "starttls" | "implicit")
TRANSPORTS = [("pop3", 110, "plain"), ("pop3", 110, "starttls"), ("pop3", 995, "implicit"),
              ("imap", 143, "plain"), ("imap", 143, "starttls"), ("imap", 993, "implicit")]


# --- the clients, run inside the client's namespace ---------------------------------------------


class _NamedPOP3_SSL(poplib.POP3_SSL):
    """Connects to an address but asks for (SNI) and verifies REMOTE_NAME, as a client that
    resolved the name would."""

    def _create_socket(self, timeout):  # type: ignore[no-untyped-def]
        return self.context.wrap_socket(poplib.POP3._create_socket(self, timeout), server_hostname=REMOTE_NAME)


class _NamedIMAP4_SSL(imaplib.IMAP4_SSL):
    def _create_socket(self, timeout):  # type: ignore[no-untyped-def]
        return self.ssl_context.wrap_socket(imaplib.IMAP4._create_socket(self, timeout), server_hostname=REMOTE_NAME)


def _pop3(address: str, port: int, tls: str, ca: str) -> list[bytes]:
    context = ssl.create_default_context(cafile=ca)
    if tls == "implicit":
        client: poplib.POP3 = _NamedPOP3_SSL(address, port, context=context, timeout=30)
    else:
        client = poplib.POP3(address, port, timeout=30)
        if tls == "starttls":
            client.host = REMOTE_NAME  # what poplib's stls() asks for and verifies
            client.stls(context)
    client.user(USER)
    client.pass_(PASSWORD)
    count, _ = client.stat()
    got = [b"\r\n".join(client.retr(n)[1]) + b"\r\n" for n in range(1, count + 1)]
    client.quit()
    return got


def _imap(address: str, port: int, tls: str, ca: str) -> list[bytes]:
    context = ssl.create_default_context(cafile=ca)
    if tls == "implicit":
        client: imaplib.IMAP4 = _NamedIMAP4_SSL(address, port, ssl_context=context, timeout=30)
    else:
        client = imaplib.IMAP4(address, port, timeout=30)
        if tls == "starttls":
            client.host = REMOTE_NAME
            client.starttls(context)
    client.login(USER, PASSWORD)
    count = int(client.select("INBOX")[1][0])
    got = []
    for n in range(1, count + 1):
        data = client.fetch(str(n), "(BODY.PEEK[])")[1]
        got.append(data[0][1])
    client.logout()
    return got


# --- the world: namespaces, Dovecot, the engine's home ------------------------------------------


@dataclass
class World:
    client: str                  # the mail client's namespace
    engine: str                  # where the engine runs: the client's on a desktop, the router's on a gateway
    remote: dict[str, str]       # address family -> the server's address
    engine_addresses: list[str]  # the engine namespace's own addresses (besides loopback)
    home: Path
    ca: str = ""                 # mailguard's CA certificate, which the clients trust
    env: dict[str, str] = field(default_factory=dict)

    def mailguard(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.engine, MAILGUARD, *args], env=self.env,
                              capture_output=True, text=True, timeout=90)

    def configure(self, **values: str) -> None:
        for key, value in values.items():
            done = self.mailguard("config", "set", PF + key, value)
            assert done.returncode == 0, done.stderr

    def start(self) -> dict:
        started = self.mailguard("start")
        assert started.returncode == 0, started.stderr
        return self.status()

    def status(self, expect: int = 0) -> dict:
        done = self.mailguard("status", "--json")
        assert done.returncode == expect, (done.stdout, done.stderr)
        return json.loads(done.stdout)

    def fetch(self, family: str, protocol: str, port: int, tls: str) -> list[bytes]:
        fetch = _pop3 if protocol == "pop3" else _imap
        return run_in(self.client, fetch, self.remote[family], port, tls, self.ca)

    def fetchmail(self, family: str, tmp: Path) -> list[bytes]:
        """fetchmail over POP3S, keeping the mail on the server; the messages as delivered."""
        fetchmail = peers.require("fetchmail")
        out = tmp / f"fetchmail-{family}"
        out.mkdir()
        rc = out / "fetchmailrc"
        rc.write_text(
            f'poll {REMOTE_NAME} via "{self.remote[family]}" service 995 protocol pop3 auth password\n'
            f'  user "{USER}" password "{PASSWORD}" keep ssl sslproto tls1.2+ sslcertck\n'
            f'  sslcertfile "{self.ca}" sslcommonname "{REMOTE_NAME}"\n'
            f'  mda "/bin/sh -c \'cat > {out}/msg.$$$$; mv {out}/msg.$$$$ {out}/got-$(ls {out} | wc -l)\'"\n')
        rc.chmod(0o600)
        done = subprocess.run(["ip", "netns", "exec", self.client, fetchmail, "-f", str(rc), "--nodetach",
                               "--nosyslog", "-s", "--idfile", str(out / "ids"), "--pidfile", str(out / "fetchmail.pid")],
                              capture_output=True, text=True, timeout=90,
                              env={"HOME": str(out), "PATH": "/usr/bin:/bin"})
        assert done.returncode == 0, done.stdout + done.stderr
        return [p.read_bytes() for p in out.glob("got-*")]


def _assert_fetchmail_scanned(delivered: list[bytes], what: object) -> None:
    """As ``_assert_scanned``, for fetchmail: it hands each message to its MDA with LF line
    ends and its own Received: line on top; below that, a clean message is the original."""
    assert len(delivered) == len(MAILBOX), what
    assert not any(EICAR in d for d in delivered), what
    assert sum(b"X-MailGuard-Result: infected" in d for d in delivered) == sum(m.infected for m in MAILBOX)
    for original in (m.raw for m in MAILBOX if not m.infected):
        assert any(d.endswith(original.replace(b"\r\n", b"\n")) for d in delivered), what


def _mailguard_ca(world: World, dovecot: Dovecot) -> None:
    """Transparent mode trusting the test server's CA; mailguard's own CA made."""
    world.home.mkdir()
    world.env = {**os.environ, "MAILGUARD_HOME": str(world.home)}
    world.configure(**{"mode": "transparent"})
    done = subprocess.run([MAILGUARD, "config", "set", "web-and-email.ssl-tls.trusted-ca-file", str(dovecot.ca_file)],
                          env=world.env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    subprocess.run([MAILGUARD, "ca", "init"], env=world.env, check=True, capture_output=True)
    world.ca = str(world.home / "mailguard-ca.pem")
    subprocess.run([MAILGUARD, "ca", "export", "--output", world.ca], env=world.env, check=True, capture_output=True)


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    peers.require_root()
    peers.require("nft")
    peers.require("ip")
    peers.require("dovecot")
    made = Namespaces()
    try:
        yield made
    finally:
        made.close()


@contextlib.contextmanager
def _remote_dovecot(namespaces: Namespaces, tmp_path: Path, remote_ns: str, addresses: list[str]) -> Iterator[Dovecot]:
    with running_dovecot(tmp_path, trustme.CA(), netns=remote_ns, addresses=tuple(addresses),
                         ports=(143, 993, 110, 995), names=(REMOTE_NAME,)) as dovecot:
        dovecot.deliver(USER, ORIGINALS)
        yield dovecot


def _stop_engine(world: World) -> None:
    stopped = world.mailguard("stop")
    assert stopped.returncode == 0, stopped.stderr


@pytest.fixture
def desktop(namespaces: Namespaces, tmp_path: Path) -> Iterator[World]:
    """The mail client and the engine on one host (namespace), the server behind a link."""
    client, remote = namespaces.make("desk"), namespaces.make("remote")
    link(client, ["10.233.0.1/30", "fd00:233::1/126"], remote, ["10.233.0.2/30", "fd00:233::2/126"])
    world = World(client, client, {"ipv4": "10.233.0.2", "ipv6": "fd00:233::2"},
                  ["10.233.0.1", "fd00:233::1"], tmp_path / "home")
    with _remote_dovecot(namespaces, tmp_path, remote, list(world.remote.values())) as dovecot:
        _mailguard_ca(world, dovecot)
        try:
            yield world
        finally:
            world.mailguard("stop")


@pytest.fixture
def gateway(namespaces: Namespaces, tmp_path: Path) -> Iterator[World]:
    """The client routed through a gateway (the engine's namespace) to the server."""
    client, router, remote = namespaces.make("lan"), namespaces.make("gw"), namespaces.make("remote")
    link(client, ["10.234.0.1/30", "fd00:234::1/126"], router, ["10.234.0.2/30", "fd00:234::2/126"])
    link(router, ["10.234.1.1/30", "fd00:234:1::1/126"], remote, ["10.234.1.2/30", "fd00:234:1::2/126"])
    for ns, via4, via6 in ((client, "10.234.0.2", "fd00:234::2"), (remote, "10.234.1.1", "fd00:234:1::1")):
        subprocess.run(["ip", "-n", ns, "route", "add", "default", "via", via4], check=True)
        subprocess.run(["ip", "-n", ns, "-6", "route", "add", "default", "via", via6], check=True)
    for knob in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
        subprocess.run(["ip", "netns", "exec", router, "sysctl", "-qw", knob], check=True)
    world = World(client, router, {"ipv4": "10.234.1.2", "ipv6": "fd00:234:1::2"},
                  ["10.234.0.2", "fd00:234::2", "10.234.1.1", "fd00:234:1::1"], tmp_path / "home")
    with _remote_dovecot(namespaces, tmp_path, remote, list(world.remote.values())) as dovecot:
        _mailguard_ca(world, dovecot)
        world.configure(**{"transparent.role": "gateway", "transparent.listen": "0.0.0.0:8143"})
        try:
            yield world
        finally:
            world.mailguard("stop")


# --- the tests ----------------------------------------------------------------------------------


def test_a_desktop_scans_every_transport_over_ipv4_and_ipv6(desktop: World, tmp_path: Path) -> None:
    for family in FAMILIES:  # the control: without the engine the virus arrives, over either family
        assert desktop.fetch(family, "pop3", 110, "plain") == ORIGINALS
    status = desktop.start()
    assert status["transparent"]["families"] == {"ipv4": "scanned", "ipv6": "scanned"}
    assert status["transparent"]["role"] == "desktop" and status["transparent"]["problem"] == ""
    for family in FAMILIES:
        for protocol, port, tls in TRANSPORTS:
            _assert_scanned(desktop.fetch(family, protocol, port, tls), (family, protocol, port, tls))
        _assert_fetchmail_scanned(desktop.fetchmail(family, tmp_path), (family, "fetchmail"))
    text = desktop.mailguard("status")
    assert text.returncode == 0 and "transparent rules (role desktop): IPv4 scanned, IPv6 scanned" in text.stdout
    _stop_engine(desktop)
    assert desktop.status()["transparent"]["installed"] is False  # stop takes the rules away
    assert desktop.fetch("ipv6", "pop3", 110, "plain") == ORIGINALS


def test_a_gateway_scans_the_mail_it_forwards_over_ipv4_and_ipv6(gateway: World, tmp_path: Path) -> None:
    for family in FAMILIES:  # routed through, unscanned: the control
        assert gateway.fetch(family, "imap", 143, "plain") == ORIGINALS
    status = gateway.start()
    assert status["transparent"]["families"] == {"ipv4": "scanned", "ipv6": "scanned"}
    assert "chain prerouting" in status["transparent"]["ruleset"]
    assert "chain output" not in status["transparent"]["ruleset"]  # the gateway's own mail is its own
    for family in FAMILIES:
        for protocol, port, tls in TRANSPORTS:
            _assert_scanned(gateway.fetch(family, protocol, port, tls), (family, protocol, port, tls))
        _assert_fetchmail_scanned(gateway.fetchmail(family, tmp_path), (family, "fetchmail"))


def _outcome(address: str, port: int) -> str:
    """How a connection to ``address:port`` ends: "refused", "closed" (accepted, then closed with
    nothing said) or "open" (it stays up: something relays it)."""
    try:
        sock = socket.create_connection((address, port), timeout=10)
    except ConnectionRefusedError:
        return "refused"
    with sock:
        sock.settimeout(10)
        try:
            return "closed" if sock.recv(100) == b"" else "open"
        except ConnectionResetError:
            return "closed"
        except socket.timeout:
            return "open"


def test_connections_straight_to_the_listener_are_refused_and_the_engine_keeps_serving(gateway: World) -> None:
    gateway.start()
    from_router = ["127.0.0.1", "::1", *gateway.engine_addresses]
    assert run_in(gateway.engine, lambda: {a: _outcome(a, 8143) for a in from_router}) == dict.fromkeys(from_router, "refused")
    from_lan = gateway.engine_addresses
    assert run_in(gateway.client, lambda: {a: _outcome(a, 8143) for a in from_lan}) == dict.fromkeys(from_lan, "refused")
    status = gateway.status()
    assert status["counters"]["connections"] == 0  # the kernel refused them: nothing looped
    for family in FAMILIES:
        _assert_scanned(gateway.fetch(family, "pop3", 995, "implicit"), family)


def test_the_engine_refuses_a_connection_whose_destination_is_its_own_listener(namespaces: Namespaces) -> None:
    """The second line of defence, behind the table's guard: a connection whose original
    destination is the listener's port on one of this host's addresses is refused (relaying it
    would connect the engine to itself), judged against the socket's real addresses, for each
    local address of both families. Here a rule of the test's own redirects such connections."""
    from mailguard.transparent.netfilter import NotRedirected, redirected_destination

    ns = namespaces.make("loop")
    link(ns, ["10.235.0.1/30", "fd00:235::1/126"], namespaces.make("peer"), ["10.235.0.2/30", "fd00:235::2/126"])
    subprocess.run(["ip", "netns", "exec", ns, "nft", "add table inet t; add chain inet t c { type nat hook output "
                    "priority -100; }; add rule inet t c tcp dport 8143 redirect to :8143"], check=True)

    def attempt() -> dict[str, str]:
        outcome = {}
        for family, wildcard, addresses in ((socket.AF_INET, "0.0.0.0", ["127.0.0.1", "10.235.0.1"]),
                                            (socket.AF_INET6, "::", ["::1", "fd00:235::1"])):
            with socket.socket(family) as listener:
                if family == socket.AF_INET6:
                    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                listener.bind((wildcard, 8143))
                listener.listen()
                for address in addresses:
                    with socket.create_connection((address, 8143)):
                        accepted, _ = listener.accept()
                        with accepted:
                            try:
                                outcome[address] = repr(redirected_destination(accepted))
                            except NotRedirected as exc:
                                outcome[address] = str(exc)
        return outcome

    outcome = run_in(ns, attempt)
    assert sorted(outcome) == sorted(["127.0.0.1", "10.235.0.1", "::1", "fd00:235::1"])
    for address, said in outcome.items():
        assert "engine's own listener" in said, (address, said)


def test_after_sigkill_mail_is_refused_status_says_so_and_start_repairs(desktop: World) -> None:
    pid = desktop.start()["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while process_alive(pid):  # the signal is delivered asynchronously; the engine is not our child
        assert time.monotonic() < deadline
        time.sleep(0.05)
    status = desktop.status(expect=2)  # rules without an engine: a problem, in the exit code too
    assert status["running"] is False and status["transparent"]["installed"] is True
    assert status["transparent"]["families"] == {"ipv4": "refused", "ipv6": "refused"}
    assert "no engine runs" in status["transparent"]["problem"]
    text = desktop.mailguard("status")
    assert text.returncode == 2 and "IPv4 refused, IPv6 refused" in text.stdout and "mailguard start" in text.stderr
    for family in FAMILIES:  # fail closed: nothing passes unscanned while the engine is down
        with pytest.raises(ConnectionRefusedError):
            desktop.fetch(family, "pop3", 110, "plain")
    status = desktop.start()
    assert status["transparent"]["families"] == {"ipv4": "scanned", "ipv6": "scanned"}
    assert status["transparent"]["problem"] == ""
    for family in FAMILIES:
        _assert_scanned(desktop.fetch(family, "imap", 143, "starttls"), family)


@pytest.mark.parametrize("listen", ["[::]:8143", "0.0.0.0:8143"])
def test_every_address_in_either_spelling_serves_both_families(desktop: World, listen: str) -> None:
    desktop.configure(**{"transparent.listen": listen})
    status = desktop.start()
    listening = sorted(item["listen"] for item in status["listeners"])
    assert listening == ["0.0.0.0:8143", "[::]:8143"]
    for family in FAMILIES:
        _assert_scanned(desktop.fetch(family, "pop3", 110, "starttls"), (listen, family))
    # Every address, yet only redirected connections reach it.
    outcome = run_in(desktop.client, lambda: {a: _outcome(a, 8143) for a in desktop.engine_addresses})
    assert outcome == dict.fromkeys(desktop.engine_addresses, "refused")


def test_a_family_the_engine_cannot_listen_in_is_blocked_not_passed(desktop: World) -> None:
    # No ::1 in the engine's namespace: no IPv6 listener is possible, yet IPv6 mail still flows.
    subprocess.run(["ip", "-n", desktop.engine, "addr", "del", "::1/128", "dev", "lo"], check=True)
    assert desktop.fetch("ipv6", "pop3", 110, "plain") == ORIGINALS  # the control
    status = desktop.start()
    assert status["transparent"]["families"] == {"ipv4": "scanned", "ipv6": "blocked"}
    assert "::1" in status["transparent"]["blocked"]["ipv6"]
    text = desktop.mailguard("status")
    assert text.returncode == 0 and "IPv4 scanned, IPv6 blocked (cannot listen on [::1]:8143" in text.stdout
    with pytest.raises(ConnectionRefusedError):
        desktop.fetch("ipv6", "pop3", 110, "plain")
    _assert_scanned(desktop.fetch("ipv4", "pop3", 110, "plain"), "ipv4")


def test_a_running_engine_whose_rules_were_flushed_is_a_problem_until_reload(desktop: World) -> None:
    desktop.start()
    subprocess.run(["ip", "netns", "exec", desktop.engine, "nft", "delete", "table", "inet", "mailguard"], check=True)
    status = desktop.status(expect=2)  # read from the kernel, not from the engine's memory
    assert status["running"] is True and status["transparent"]["installed"] is False
    assert status["transparent"]["families"] == {"ipv4": "unscanned", "ipv6": "unscanned"}
    assert "mail passes unscanned" in status["transparent"]["problem"]
    reloaded = desktop.mailguard("reload")
    assert reloaded.returncode == 0, reloaded.stderr
    assert desktop.status()["transparent"]["families"] == {"ipv4": "scanned", "ipv6": "scanned"}
    _assert_scanned(desktop.fetch("ipv6", "pop3", 995, "implicit"), "after reload")


def test_role_both_applied_live_takes_the_gateways_own_mail_too(gateway: World) -> None:
    gateway.start()
    own = run_in(gateway.engine, _pop3, gateway.remote["ipv6"], 110, "plain", gateway.ca)
    assert own == ORIGINALS  # role gateway: the gateway's own connections are its own business
    gateway.configure(**{"transparent.role": "both"})  # a running engine applies it at once
    status = gateway.status()
    assert status["transparent"]["role"] == "both"
    assert "chain output" in status["transparent"]["ruleset"] and "chain prerouting" in status["transparent"]["ruleset"]
    for family in FAMILIES:
        _assert_scanned(run_in(gateway.engine, _imap, gateway.remote[family], 143, "starttls", gateway.ca),
                        ("own", family))
        _assert_scanned(gateway.fetch(family, "imap", 993, "implicit"), ("forwarded", family))
