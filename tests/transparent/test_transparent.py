"""Transparent mode: the generated nftables ruleset, installing and removing it, SO_MARK and
SO_ORIGINAL_DST, and (root) an unmodified client in a network namespace getting scanned mail."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from mailguard.errors import ServiceError
from mailguard.transparent import netfilter
from mailguard.transparent.plan import TransparentPlan, listening_socket
from mailguard.transparent.rules import UPSTREAM_MARK, build_ruleset, families_in
from mailguard.transparent.status import summary, transparent_section
from mailguard.settings import Settings
from tests import peers
from tests.peers.netns import Namespaces, link

EC = "web-and-email.email-client.protocols."
PF = "web-and-email.protocol-filtering."


def _plan(**values: str) -> TransparentPlan:
    return TransparentPlan.from_settings(Settings.from_values({PF + k.replace("_", "."): v for k, v in values.items()}))


# --- the plan: where the engine listens, what is redirected (no root) ----------------------------


def test_the_default_plan_is_a_desktop_on_loopback_in_both_families() -> None:
    plan = _plan()
    assert (plan.role, plan.local, plan.forwarded) == ("desktop", True, False)
    assert plan.mail_ports == (110, 143, 585, 993, 995)
    assert [plan.address(f) for f in ("ipv4", "ipv6")] == [("127.0.0.1", 8143), ("::1", 8143)]


@pytest.mark.parametrize("listen", ["0.0.0.0:9000", "[::]:9000"])
def test_every_address_in_either_spelling_means_both_families(listen: str) -> None:
    plan = _plan(**{"transparent.listen": listen})
    assert [plan.address(f) for f in ("ipv4", "ipv6")] == [("0.0.0.0", 9000), ("::", 9000)]


@pytest.mark.parametrize("listen", ["[::1]:8143", "localhost:8143"])
def test_loopback_in_either_spelling_means_both_families(listen: str) -> None:
    assert [_plan(**{"transparent.listen": listen}).address(f)[0] for f in ("ipv4", "ipv6")] == ["127.0.0.1", "::1"]


@pytest.mark.parametrize(("values", "said"), [
    ({"transparent.listen": "192.0.2.7:8143"}, "never on one chosen address"),
    ({"transparent.role": "gateway"}, "needs web-and-email.protocol-filtering.transparent.listen on every address"),
    ({"transparent.role": "both", "transparent.listen": "[::1]:8143"}, "0.0.0.0:8143 or [::]:8143"),
    ({"transparent.listen": "127.0.0.1:110"}, "port 110 is also a mail port"),
])
def test_plans_that_cannot_work_are_refused_with_the_fix(values: dict[str, str], said: str) -> None:
    with pytest.raises(ServiceError, match=re.escape(said)):
        _plan(**values)


def test_an_ipv6_listener_is_ipv6_only_on_purpose() -> None:
    sock = listening_socket("::1", 0, 8)
    if isinstance(sock, str):
        pytest.skip(f"no IPv6 loopback here: {sock}")
    with sock:
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1


def test_a_taken_port_stops_the_start() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        with pytest.raises(ServiceError, match="cannot listen on 127.0.0.1"):
            listening_socket("127.0.0.1", taken.getsockname()[1], 8)


# --- the ruleset (no root) ----------------------------------------------------------------------


def _rule_lines(ruleset: str, chain: str) -> list[str]:
    body = ruleset.split(f"chain {chain} {{", 1)[1].split("\n\t}", 1)[0]
    return [line.strip() for line in body.strip().splitlines()]


def test_a_desktop_redirects_its_own_connections_in_both_families_and_the_engine_is_exempt() -> None:
    ruleset = build_ruleset(_plan())
    lines = _rule_lines(ruleset, "output")
    assert lines[0] == "type nat hook output priority -100; policy accept;"
    # The engine's own upstream connections return before any redirect.
    assert lines[1] == f"meta mark {UPSTREAM_MARK:#x} return"
    ports = "{ 110, 143, 585, 993, 995 }"
    assert lines[-2:] == [
        f'meta nfproto ipv4 tcp dport {ports} redirect to :8143 comment "mailguard redirect ipv4 desktop"',
        f'meta nfproto ipv6 tcp dport {ports} redirect to :8143 comment "mailguard redirect ipv6 desktop"',
    ]
    assert "prerouting" not in ruleset and "reject" not in "".join(lines)
    assert families_in(ruleset) == {"ipv4": {"desktop": "redirect"}, "ipv6": {"desktop": "redirect"}}


def test_the_listener_port_takes_redirected_connections_only() -> None:
    assert _rule_lines(build_ruleset(_plan()), "listener")[1:] == [
        "ct direction original tcp dport 8143 ct status dnat accept",
        "ct direction original tcp dport 8143 reject with tcp reset",
    ]


@pytest.mark.parametrize(("role", "chains"), [
    ("gateway", {"prerouting"}), ("both", {"output", "prerouting"}), ("desktop", {"output"})])
def test_the_role_says_which_hooks_redirect(role: str, chains: set[str]) -> None:
    ruleset = build_ruleset(_plan(**{"transparent.role": role, "transparent.listen": "0.0.0.0:9000"}))
    found = {c for c in ("output", "prerouting") if f"chain {c} {{" in ruleset}
    assert found == chains
    if "prerouting" in chains:
        prerouting = _rule_lines(ruleset, "prerouting")
        assert prerouting[1] == "fib daddr type local return"  # this host's own addresses: not forwarded
        assert [line.split()[2] for line in prerouting if "redirect to :9000" in line] == ["ipv4", "ipv6"]


def test_a_family_without_a_listener_has_its_mail_ports_blocked_not_opened() -> None:
    plan = _plan(**{"transparent.role": "both", "transparent.listen": "0.0.0.0:9000"})
    ruleset = build_ruleset(plan, {"ipv6": "no ipv6 on this host"})
    assert "meta nfproto ipv6" not in "".join(_rule_lines(ruleset, "output") + _rule_lines(ruleset, "prerouting"))
    assert _rule_lines(ruleset, "block_output")[-1].startswith("meta nfproto ipv6 tcp dport { 110, 143, 585")
    assert "counter reject with tcp reset" in _rule_lines(ruleset, "block_output")[-1]
    assert "hook forward" in _rule_lines(ruleset, "block_forward")[0]
    assert families_in(ruleset) == {"ipv4": {"desktop": "redirect", "gateway": "redirect"},
                                    "ipv6": {"desktop": "block", "gateway": "block"}}


def test_the_ruleset_replaces_our_table_atomically_and_touches_nothing_else() -> None:
    ruleset = build_ruleset(_plan())
    first_lines = ruleset.splitlines()[:3]
    assert first_lines == ["table inet mailguard {}", "delete table inet mailguard", "table inet mailguard {"]
    tables = [line for line in ruleset.splitlines() if line.startswith("table ") or " table " in line]
    assert all("inet mailguard" in line for line in tables)


def test_changed_port_lists_are_followed() -> None:
    settings = Settings.from_values({EC + "pop3.ports": "110, 1110", EC + "imaps.ports": "993"})
    assert TransparentPlan.from_settings(settings).mail_ports == (110, 143, 993, 995, 1110)


# --- what status makes of the kernel's table (no root) ------------------------------------------


def test_status_after_a_crash_says_mail_is_refused_and_calls_it_a_problem() -> None:
    ruleset = build_ruleset(_plan())
    section = transparent_section(mode="transparent", role="desktop", running=False, listening=set(),
                                  blocked={}, ruleset=ruleset)
    assert section["installed"] is True
    assert section["families"] == {"ipv4": "refused", "ipv6": "refused"}
    assert "no engine runs" in section["problem"] and "mailguard start" in section["problem"]


def test_status_of_a_running_engine_whose_table_vanished_is_a_problem() -> None:
    section = transparent_section(mode="transparent", role="desktop", running=True,
                                  listening={"ipv4", "ipv6"}, blocked={}, ruleset="")
    assert section["families"] == {"ipv4": "unscanned", "ipv6": "unscanned"}
    assert "mail passes unscanned" in section["problem"]


def test_status_of_a_running_engine_missing_one_familys_rule_names_that_family() -> None:
    ruleset = "\n".join(line for line in build_ruleset(_plan()).splitlines() if "redirect ipv6" not in line)
    section = transparent_section(mode="transparent", role="desktop", running=True,
                                  listening={"ipv4", "ipv6"}, blocked={}, ruleset=ruleset)
    assert section["families"] == {"ipv4": "scanned", "ipv6": "unscanned"}
    assert section["problem"].startswith("IPv6 mail passes unscanned")


@pytest.mark.parametrize("gone", ["desktop", "gateway"])
def test_status_with_role_both_judges_each_roles_rule(gone: str) -> None:
    plan = _plan(transparent_role="both", transparent_listen="0.0.0.0:8143")
    ruleset = "\n".join(line for line in build_ruleset(plan).splitlines() if f"redirect ipv4 {gone}" not in line)
    section = transparent_section(mode="transparent", role="both", running=True,
                                  listening={"ipv4", "ipv6"}, blocked={}, ruleset=ruleset)
    assert section["families"] == {"ipv4": "unscanned", "ipv6": "scanned"}
    assert section["problem"].startswith("IPv4 mail passes unscanned")


def test_status_says_which_families_are_protected() -> None:
    blocked = {"ipv6": "no ipv6 on this host"}
    section = transparent_section(mode="transparent", role="desktop", running=True, listening={"ipv4"},
                                  blocked=blocked, ruleset=build_ruleset(_plan(), blocked))
    assert (section["families"], section["problem"]) == ({"ipv4": "scanned", "ipv6": "blocked"}, "")
    assert summary(section) == "transparent rules (role desktop): IPv4 scanned, IPv6 blocked (no ipv6 on this host)"


def test_original_destination_of_a_socket_that_was_not_redirected_is_an_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        with client, accepted, pytest.raises(OSError):
            netfilter.original_destination(accepted)


def test_a_kernel_that_refuses_the_ipv6_redirect_gets_ipv6_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    applied: list[str] = []

    def nft(args: list[str], stdin: str | None = None) -> str:
        if stdin and "redirect ipv6" in stdin:
            raise ServiceError("nft -f - failed: Error: Could not process rule: No such file or directory")
        applied.append(stdin or "")
        return ""

    monkeypatch.setattr(netfilter, "has_net_admin", lambda: True)
    monkeypatch.setattr(netfilter, "_nft", nft)
    ruleset, blocked = netfilter.install(Settings.defaults())
    assert list(blocked) == ["ipv6"] and "kernel refused the IPv6 redirect" in blocked["ipv6"]
    assert applied == [ruleset]
    assert families_in(ruleset) == {"ipv4": {"desktop": "redirect"}, "ipv6": {"desktop": "block"}}


def test_without_net_admin_the_error_says_root_is_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netfilter, "has_net_admin", lambda: False)
    with pytest.raises(ServiceError, match="needs root"):
        netfilter.install(Settings.defaults())


# --- in a network namespace (root) --------------------------------------------------------------


@pytest.fixture
def netns() -> Iterator[callable]:
    """Make network namespaces; every one is deleted at the end (with its nftables tables)."""
    made = Namespaces()
    try:
        yield made.make
    finally:
        made.close()


def _in_ns(ns: str, code: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=60, cwd=os.getcwd(), **kwargs,
    )


@pytest.mark.root
@pytest.mark.peer
def test_install_status_and_remove_in_a_namespace(netns) -> None:
    peers.require_root()
    peers.require("nft")
    peers.require("ip")
    ns = netns("rules")
    result = _in_ns(ns, """
        from mailguard.transparent import netfilter
        from mailguard.settings import Settings
        assert netfilter.current_ruleset() == ""
        applied = netfilter.install(Settings.defaults())
        listed = netfilter.current_ruleset()
        assert "redirect to :8143" in listed and "meta mark 0x00006d67 return" in listed, listed
        netfilter.install(Settings.defaults())          # a reload replaces, never duplicates
        assert netfilter.current_ruleset().count("redirect to :8143") == 2  # IPv4 and IPv6
        netfilter.remove()
        assert netfilter.current_ruleset() == ""
        netfilter.remove()                               # removing twice is fine
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# --- end to end: an unmodified client in a namespace, the server in another (root) ---------------

CLIENT_ADDRESS = "10.231.0.1"   # a private test range that exists only inside these namespaces
REMOTE_ADDRESS = "10.231.0.2"
CLIENT_ADDRESS6 = "fd00:231::1"  # a unique-local range, likewise
REMOTE_ADDRESS6 = "fd00:231::2"
# The remote server's certificate names this host only (no IP SAN), like every real provider's:
# transparent mode must verify it against the client's SNI, not the destination IP.
REMOTE_NAME = "mail.remote.test"


def _test_ca_and_server_cert(folder) -> tuple[str, str, str]:
    """A throw-away CA and a certificate for the remote server's host name (DNS name only)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailguard test remote CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, REMOTE_NAME)]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(REMOTE_NAME)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = folder / "remote-ca.pem", folder / "remote.pem", folder / "remote.key"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(ca_file), str(cert_file), str(key_file)


# The scripts take the remote server's address from MG_REMOTE (IPv4 or IPv6). The server is the
# demo's mailbox over POP3 on 110 (with STLS) and 995, and over IMAP on 143 (with STARTTLS).
REMOTE_SERVER = """
import asyncio, os, ssl, sys
from mailguard.demo.mailbox import sample_mailbox
from mailguard.demo.imap import DemoImapSession
from mailguard.demo.pop3 import Pop3Session

async def serve(pop3, tls, reader, writer):  # POP3 or IMAP; STLS / STARTTLS when tls is given
    session = Pop3Session(sample_mailbox()) if pop3 else DemoImapSession(sample_mailbox())
    writer.write(b"+OK ready\\r\\n" if pop3 else b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\\r\\n")
    try:
        while line := await reader.readline():
            tag, _, command = (b"", b"", line.strip()) if pop3 else line.strip().partition(b" ")
            command = command.upper()
            if command == b"CAPA":
                writer.write(b"+OK\\r\\nUSER\\r\\nTOP\\r\\nUIDL\\r\\n" + (b"STLS\\r\\n" if tls else b"") + b".\\r\\n")
            elif command == b"CAPABILITY":
                writer.write(b"* CAPABILITY IMAP4rev1" + (b" STARTTLS" if tls else b"") + b"\\r\\n" + tag + b" OK done\\r\\n")
            elif command in (b"STLS", b"STARTTLS") and tls:
                writer.write(b"+OK begin TLS\\r\\n" if pop3 else tag + b" OK begin TLS\\r\\n")
                await writer.drain()
                await writer.start_tls(tls)
                tls = None
            else:
                answer, close = session.answer(line.decode("utf-8", "replace"))
                writer.write(answer)
                if close:
                    break
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()

async def main():
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(sys.argv[1], sys.argv[2])
    imap = await asyncio.start_server(lambda r, w: serve(False, tls, r, w), os.environ["MG_REMOTE"], 143)
    plain = await asyncio.start_server(lambda r, w: serve(True, tls, r, w), os.environ["MG_REMOTE"], 110)
    secure = await asyncio.start_server(lambda r, w: serve(True, None, r, w), os.environ["MG_REMOTE"], 995, ssl=tls)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""

CLIENT = """
import json, os, poplib, ssl, sys
class NamedPOP3_SSL(poplib.POP3_SSL):
    # connects to the address, asks for (SNI) and verifies the name; "" = no SNI, no name check
    def _create_socket(self, timeout):
        sock = poplib.POP3._create_socket(self, timeout)
        return self.context.wrap_socket(sock, server_hostname=sys.argv[3] or None)
def fetch(port, ca):
    stls = len(sys.argv) > 4 and sys.argv[4] == "stls"
    if ca:
        context = ssl.create_default_context(cafile=ca)
        if not sys.argv[3]:
            context.check_hostname = False
    if ca and not stls:
        client = NamedPOP3_SSL(os.environ["MG_REMOTE"], port, context=context, timeout=30)
    else:
        client = poplib.POP3(os.environ["MG_REMOTE"], port, timeout=30)
    if stls:
        client.host = sys.argv[3] or None  # what poplib's stls() asks for (SNI) and verifies
        client.stls(context)
    client.user("demo"); client.pass_("demo")
    count, _ = client.stat()
    out = [(b"\\r\\n".join(client.retr(n)[1]) + b"\\r\\n").decode("latin-1") for n in range(1, count + 1)]
    client.quit()
    return out
print(json.dumps(fetch(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None)))
"""


IMAP_CLIENT = """
import imaplib, json, os, ssl, sys
context = ssl.create_default_context(cafile=sys.argv[1])
if not sys.argv[2]:
    context.check_hostname = False
client = imaplib.IMAP4(os.environ["MG_REMOTE"], 143, timeout=30)
client.host = sys.argv[2] or None  # what imaplib's starttls() asks for (SNI) and verifies
client.starttls(context)
client.login("demo", "demo")
count = int(client.select("INBOX")[1][0])
out = [client.fetch(str(n), "(BODY.PEEK[])")[1][0][1].decode("latin-1") for n in range(1, count + 1)]
client.logout()
print(json.dumps(out))
"""


def _fetch_imap(client_ns: str, remote: str, ca: str, name: str = REMOTE_NAME, refused: str = "") -> list[bytes]:
    """Every message over IMAP with STARTTLS on 143, as imaplib gets it."""
    return _run_client(client_ns, remote, IMAP_CLIENT, [ca, name], refused)


def _run_client(client_ns: str, remote: str, script: str, args: list[str], refused: str) -> list[bytes]:
    """Run a client script in ``client_ns``: the messages it printed, or (``refused``) its failure."""
    result = subprocess.run(
        ["ip", "netns", "exec", client_ns, sys.executable, "-c", script, *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, "MG_REMOTE": remote},
    )
    if refused:
        assert result.returncode != 0 and refused in result.stderr, (result.stdout, result.stderr)
        return []
    assert result.returncode == 0, result.stderr
    return [m.encode("latin-1") for m in __import__("json").loads(result.stdout)]


def _veth_pair(client_ns: str, remote_ns: str) -> None:
    link(client_ns, [f"{CLIENT_ADDRESS}/30", f"{CLIENT_ADDRESS6}/126"],
          remote_ns, [f"{REMOTE_ADDRESS}/30", f"{REMOTE_ADDRESS6}/126"])


MAILGUARD = str(__import__("pathlib").Path(sys.executable).with_name("mailguard"))


def _start_engine(ns: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], dict]:
    """``mailguard start --foreground`` in ``ns``, once its rules are in force: (process, status)."""
    import json
    import time

    engine = subprocess.Popen(["ip", "netns", "exec", ns, MAILGUARD, "start", "--foreground"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    status = None
    for _ in range(200):
        probe = subprocess.run(["ip", "netns", "exec", ns, MAILGUARD, "status", "--json"],
                               env=env, capture_output=True, text=True)
        status = json.loads(probe.stdout) if probe.returncode == 0 else None
        if status and status["running"] and status["transparent"]["installed"]:
            return engine, status
        assert engine.poll() is None, engine.stderr.read() if engine.stderr else ""
        time.sleep(0.05)
    raise AssertionError(f"the engine did not install its rules: {status}")


def _fetch(client_ns: str, remote: str, port: int, ca: str | None = None, name: str = REMOTE_NAME,
           refused: str = "", stls: bool = False) -> list[bytes]:
    args = [str(port)] + ([ca, name] if ca else []) + (["stls"] if stls else [])
    return _run_client(client_ns, remote, CLIENT, args, refused)


def _start_remote(remote_ns: str, remote: str, folder) -> tuple[subprocess.Popen[str], str]:
    """The remote mail server in ``remote_ns`` on ``remote``, ready: (process, its CA file)."""
    remote_ca, remote_cert, remote_key = _test_ca_and_server_cert(folder)
    server = subprocess.Popen(
        ["ip", "netns", "exec", remote_ns, sys.executable, "-c", REMOTE_SERVER, remote_cert, remote_key],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "MG_REMOTE": remote},
    )
    assert server.stdout is not None and server.stdout.readline().strip() == "ready", server.communicate()
    return server, remote_ca


def _transparent_home(home, listen: str, remote_ca: str, env: dict[str, str], role: str = "desktop") -> str:
    """Settings for transparent mode listening on ``listen`` and a CA; our CA's certificate file."""
    from mailguard.settings import Settings, save_settings
    from mailguard.tls.castore import CAStore

    home.mkdir()
    save_settings(Settings.from_values({
        "web-and-email.protocol-filtering.mode": "transparent",
        "web-and-email.protocol-filtering.transparent.listen": listen,
        "web-and-email.protocol-filtering.transparent.role": role,
        "web-and-email.ssl-tls.trusted-ca-file": remote_ca,
    }), home / "config.toml")
    subprocess.run([MAILGUARD, "ca", "init"], env=env, check=True, capture_output=True)
    return str(CAStore(home).active().cert_path)


def _assert_scanned(received: list[bytes], what: object) -> None:
    """The demo mailbox as a client of the engine gets it: clean messages whole, infected cleaned."""
    from mailguard.demo.mailbox import EICAR, sample_mailbox

    mailbox = sample_mailbox()
    assert len(received) == len(mailbox), what
    for original, got in zip(mailbox, received):
        if original.infected:
            assert EICAR not in got and b"X-MailGuard-Result: infected" in got, (what, got[:400])
        else:
            assert got == original.raw, what


@pytest.mark.root
@pytest.mark.peer
@pytest.mark.parametrize(("remote", "listen"), [
    (REMOTE_ADDRESS, "127.0.0.1:8143"),
    # IPv6: redirected to ::1, the original destination read with IP6T_SO_ORIGINAL_DST
    (REMOTE_ADDRESS6, "[::]:8143"),
], ids=["ipv4", "ipv6"])
def test_unmodified_client_gets_scanned_mail_on_110_and_995(netns, tmp_path, remote: str, listen: str) -> None:
    from mailguard.demo.mailbox import sample_mailbox

    peers.require_root()
    peers.require("nft")
    peers.require("ip")
    client_ns, remote_ns = netns("client"), netns("remote")
    _veth_pair(client_ns, remote_ns)
    server, remote_ca = _start_remote(remote_ns, remote, tmp_path)
    engine = None
    home = tmp_path / "home"
    env = {**os.environ, "MAILGUARD_HOME": str(home)}
    try:
        originals = [m.raw for m in sample_mailbox()]
        # Control: without the engine the client reaches the remote server directly, EICAR and all.
        assert _fetch(client_ns, remote, 110) == originals
        mailguard_ca = _transparent_home(home, listen, remote_ca, env)
        engine, status = _start_engine(client_ns, env)
        assert "redirect to :8143" in status["transparent"]["ruleset"]
        # 110 plain, 110 with STLS (verified against the name the client asks for after STLS), 995
        for port, ca, stls in ((110, None, False), (110, mailguard_ca, True), (995, mailguard_ca, False)):
            _assert_scanned(_fetch(client_ns, remote, port, ca, stls=stls), (port, stls))
        # IMAP STARTTLS: the server's waits for the client's, and is verified against its SNI
        _assert_scanned(_fetch_imap(client_ns, remote, mailguard_ca), "imap")
        # Without SNI there is no name to verify the server against: refused, never checked by IP.
        _fetch(client_ns, remote, 995, mailguard_ca, name="", refused="the client named no server")
        # After STARTTLS/STLS too, and readably: inside TLS, as the client's next answer.
        _fetch_imap(client_ns, remote, mailguard_ca, name="", refused="mailguard: transparent mode: the client named no server")
        _fetch(client_ns, remote, 110, mailguard_ca, name="", stls=True,
               refused="-ERR [SYS/PERM] mailguard: transparent mode: the client named no server")
        # A server the client names after STLS that is an excluded domain: the two legs are joined
        # and shake hands with each other, end to end (the client sees the server's own certificate).
        subprocess.run([MAILGUARD, "config", "set", "web-and-email.ssl-tls.excluded-domains", REMOTE_NAME],
                       env=env, check=True, capture_output=True)
        assert _fetch(client_ns, remote, 110, remote_ca, stls=True) == originals
        assert _fetch_imap(client_ns, remote, remote_ca) == originals

        stopped = subprocess.run(["ip", "netns", "exec", client_ns, MAILGUARD, "stop"],
                                 env=env, capture_output=True, text=True, timeout=60)
        assert stopped.returncode == 0, stopped.stderr
        _, logged = engine.communicate(timeout=30)
        # The refusals are in the log with the connection they concern: [#N client->server:port]
        tag = r"\[#\d+ [0-9a-f.:]+:\d+->[0-9a-f.:]+:{port}\] "
        assert re.search(tag.format(port=143) + "IMAP session refused: transparent mode: the client named no server",
                         logged), logged[-3000:]
        assert re.search(tag.format(port=110) + "POP3 session ended: TLS with the client failed: transparent mode: "
                         "the client named no server", logged), logged[-3000:]
        listed = subprocess.run(["ip", "netns", "exec", client_ns, "nft", "list", "table", "inet", "mailguard"],
                                capture_output=True, text=True)
        assert listed.returncode != 0  # the rules went with the engine
        assert _fetch(client_ns, remote, 110) == originals  # and traffic goes direct again
    finally:
        for process in (engine, server):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)


@pytest.mark.root
@pytest.mark.peer
def test_a_gateway_scans_the_mail_it_forwards(netns, tmp_path) -> None:
    """The engine on a router (role gateway, listen 0.0.0.0): a client behind it, routed through
    it to the server, gets scanned mail without knowing the engine exists (the prerouting chain)."""
    from mailguard.demo.mailbox import sample_mailbox

    peers.require_root()
    peers.require("nft")
    peers.require("ip")
    client_ns, router_ns, remote_ns = netns("client"), netns("router"), netns("remote")
    client, router_inside, router_outside, remote = "10.232.0.1", "10.232.0.2", "10.232.1.1", "10.232.1.2"
    link(client_ns, [f"{client}/30"], router_ns, [f"{router_inside}/30"])
    link(router_ns, [f"{router_outside}/30"], remote_ns, [f"{remote}/30"])
    subprocess.run(["ip", "-n", client_ns, "route", "add", "default", "via", router_inside], check=True)
    subprocess.run(["ip", "-n", remote_ns, "route", "add", "default", "via", router_outside], check=True)
    subprocess.run(["ip", "netns", "exec", router_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
    server, remote_ca = _start_remote(remote_ns, remote, tmp_path)
    engine = None
    home = tmp_path / "home"
    env = {**os.environ, "MAILGUARD_HOME": str(home)}
    try:
        originals = [m.raw for m in sample_mailbox()]
        assert _fetch(client_ns, remote, 110) == originals  # routed through, unscanned: the control
        mailguard_ca = _transparent_home(home, "0.0.0.0:8143", remote_ca, env, role="gateway")
        engine, status = _start_engine(router_ns, env)
        assert "chain prerouting" in status["transparent"]["ruleset"]
        for port, ca in ((110, None), (995, mailguard_ca)):
            _assert_scanned(_fetch(client_ns, remote, port, ca), port)
    finally:
        for process in (engine, server):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)
