"""A throwaway Dovecot on 127.0.0.1 for the real-peer tests and the benches (bench/imap.py, bench/pop3.py).

One configuration serves IMAP (STARTTLS, and IMAPS) and POP3 (STLS, and POP3S) with a server
certificate from a test CA; any user logs in with ``PASSWORD``; mail lives in Maildirs under a
temporary folder (with ``mail_location=MBOX``, in one mbox file per user). As root, mail is
owned by ``nobody`` (the folder is a fresh 0755 one outside pytest's 0700 temporary folders,
which ``nobody`` cannot enter) and the login processes run as ``dovenull``; as another user,
everything runs as that user.

Options, for the benches:

- ``tls=False``: no TLS at all (no STARTTLS/STLS, no IMAPS/POP3S listeners, their ports are 0),
  so bench/imap.py compares plain IMAP through mailguard with plain IMAP direct, like for like.
- ``high_performance_login=True``: login processes in Dovecot's high-performance mode
  (``service_count = 0``: one process serves many connections). In the default mode each
  pending login holds a process of its own (bench/pop3.py opens 1,000 idle connections).
- ``process_limit``: the limit on login and mail processes of each protocol (default 1,200:
  in the default login mode each TLS connection keeps its login process, which proxies the TLS,
  and bench/imap.py holds 1,000 IDLE sessions, one imap process each).

For the transparent-mode tests, a "remote" server in a network namespace (tests/peers/netns.py):
``netns`` runs it there, ``addresses`` are what it listens on (IPv4 and IPv6), ``ports`` are
(imap, imaps, pop3, pop3s) instead of free ones, and ``names`` what its certificate names.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.peers import free_port, free_ports

__all__ = ["MAILDIR", "MBOX", "PASSWORD", "Dovecot", "free_port", "running_dovecot"]

PASSWORD = "pass"
MAILDIR = "maildir:~/Maildir"  # the default ``mail_location``; ``MBOX`` keeps each user's INBOX in one mbox file
MBOX = "mbox:~/mail:INBOX=~/inbox"

PROCESS_LIMIT = 1200  # bench/imap.py: 1,000 IDLE sessions, one login (TLS) and one imap process each
CLIENT_LIMIT = 4000  # default_client_limit: room for bench/pop3.py's 1,000 idle connections
HIGH_PERFORMANCE_LOGIN_CLIENTS = 3000  # connections one login process serves in high-performance mode
USERIP_CONNECTIONS = 2000  # every bench session logs in as the same user from 127.0.0.1


def _wait_port(port: int, deadline: float, address: str = "127.0.0.1", netns: str | None = None) -> None:
    if netns is not None:
        from tests.peers.netns import wait_listening

        try:
            wait_listening(netns, address, port, max(deadline - time.monotonic(), 0.1))
            return
        except OSError:
            raise RuntimeError(f"dovecot did not listen on {port}") from None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"dovecot did not listen on {port}")


@dataclass
class Dovecot:
    root: Path
    imap_port: int
    imaps_port: int  # 0 with tls=False
    pop3_port: int
    pop3s_port: int  # 0 with tls=False
    ca_file: Path  # the test CA that issued the server certificate
    mail_uid: int
    mail_gid: int

    def maildir(self, user: str, folder: str = "") -> Path:
        return self.root / "home" / user / "Maildir" / (("." + folder) if folder else "")

    def deliver(self, user: str, messages: list[bytes], folder: str = "") -> None:
        """Put ``messages`` into the user's INBOX (or ``.folder``) after what it holds, in this
        order (IMAP UIDs and POP3 message numbers follow it)."""
        box = self.maildir(user, folder)
        for sub in ("cur", "new", "tmp"):
            (box / sub).mkdir(parents=True, exist_ok=True)
        base = int(time.time())
        existing = len(list((box / "cur").iterdir())) + len(list((box / "new").iterdir()))
        for index, message in enumerate(messages, start=existing):
            (box / "cur" / f"{base}.M{index:08d}P1.mailguardtest:2,").write_bytes(message)
        self.own(user)

    def mbox(self, user: str) -> Path:
        """The user's INBOX file with ``mail_location=MBOX`` (its other mailboxes go in ``~/mail``)."""
        return self.root / "home" / user / "inbox"

    def own(self, user: str) -> None:
        """Give the user's home to the mail user (files put there by a test)."""
        home = self.root / "home" / user
        for path in [home, *home.rglob("*")]:
            os.chown(path, self.mail_uid, self.mail_gid)

    def stored(self, user: str, folder: str = "") -> list[bytes]:
        """The messages the server holds for ``user`` (in INBOX or ``.folder``), in file name order."""
        box = self.maildir(user, folder)
        return [p.read_bytes() for p in sorted([*(box / "cur").iterdir(), *(box / "new").iterdir()])]


def _login_service(protocol: str, plain_port: int, tls_port: int, tls: bool, high_performance: bool,
                   process_limit: int, listen: str = "127.0.0.1") -> str:
    mode = (f"  service_count = 0\n  client_limit = {HIGH_PERFORMANCE_LOGIN_CLIENTS}\n" if high_performance
            else f"  process_limit = {process_limit}\n")
    return f"""
service {protocol}-login {{
  inet_listener {protocol} {{
    address = {listen}
    port = {plain_port}
  }}
  inet_listener {protocol}s {{
    address = {listen}
    # port 0: no implicit-TLS listener (a server without TLS at all)
    port = {tls_port if tls else 0}
    ssl = {"yes" if tls else "no"}
  }}
  process_min_avail = 1
{mode}  chroot =
}}
service {protocol} {{
  process_limit = {process_limit}
}}
protocol {protocol} {{
  mail_max_userip_connections = {USERIP_CONNECTIONS}
}}
"""


def _config(root: Path, dovecot: Dovecot, cert: Path, key: Path, *, tls: bool, high_performance_login: bool,
            process_limit: int, mail_location: str, listen: str = "127.0.0.1") -> str:
    me = pwd.getpwuid(os.getuid()).pw_name
    users = "" if os.getuid() == 0 else f"default_internal_user = {me}\ndefault_login_user = {me}\n"
    uid, gid = dovecot.mail_uid, dovecot.mail_gid
    return f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap pop3
listen = {listen}
ssl = {"yes" if tls else "no"}
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = {mail_location}
first_valid_uid = {uid}
last_valid_uid = 0
pop3_uidl_format = %08Xu%08Xv
default_client_limit = {CLIENT_LIMIT}
{users}
passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service anvil {{
  chroot =
}}
""" + "".join(
        _login_service(protocol, plain, implicit, tls, high_performance_login, process_limit, listen)
        for protocol, plain, implicit in (("imap", dovecot.imap_port, dovecot.imaps_port),
                                          ("pop3", dovecot.pop3_port, dovecot.pop3s_port)))


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def running_dovecot(tmp: Path, ca, *, tls: bool = True, high_performance_login: bool = False,  # type: ignore[no-untyped-def]
                    process_limit: int = PROCESS_LIMIT, mail_location: str = MAILDIR, netns: str | None = None,
                    addresses: tuple[str, ...] = ("127.0.0.1",), ports: tuple[int, int, int, int] | None = None,
                    names: tuple[str, ...] = ("localhost", "127.0.0.1")) -> Iterator[Dovecot]:
    """Start ``dovecot -F`` under a fresh folder (in ``tmp`` unless root) with a server
    certificate from the trustme CA ``ca``; stop it and, as root, remove its folder after.
    Several can run at once (bench/imap.py starts a TLS one and a ``tls=False`` one)."""
    binary = shutil.which("dovecot", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    assert binary is not None
    if os.getuid() == 0:
        # Mail is accessed as "nobody", which cannot enter pytest's 0700 temporary folders.
        root = Path(tempfile.mkdtemp(prefix="mailguard-dovecot-"))
        os.chmod(root, 0o755)
        nobody = pwd.getpwnam("nobody")
        uid, gid = nobody.pw_uid, nobody.pw_gid
    else:
        root = Path(tempfile.mkdtemp(prefix="dovecot-", dir=tmp))
        uid, gid = os.getuid(), os.getgid()
    try:
        for sub in ("run", "state", "home"):
            (root / sub).mkdir(parents=True, exist_ok=True, mode=0o755)
        leaf = ca.issue_cert(*names)
        cert, key = root / "cert.pem", root / "key.pem"
        cert.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        ca_file = root / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        imap, imaps, pop3, pop3s = ports or free_ports(4)
        dovecot = Dovecot(root, imap, imaps if tls else 0, pop3, pop3s if tls else 0, ca_file, uid, gid)
        conf = root / "dovecot.conf"
        conf.write_text(_config(root, dovecot, cert, key, tls=tls, high_performance_login=high_performance_login,
                                process_limit=process_limit, mail_location=mail_location,
                                listen=", ".join(addresses)))
        output = root / "dovecot.out"
        with open(output, "wb") as sink:
            in_netns = ["ip", "netns", "exec", netns] if netns else []
            process = subprocess.Popen([*in_netns, binary, "-F", "-c", str(conf)], stdout=sink,
                                       stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 20
            try:
                for port in (dovecot.imap_port, dovecot.imaps_port, dovecot.pop3_port, dovecot.pop3s_port):
                    if port:
                        for address in addresses:
                            _wait_port(port, deadline, address, netns)
            except RuntimeError as exc:
                log = root / "dovecot.log"
                said = output.read_text(errors="replace") + (log.read_text(errors="replace") if log.exists() else "")
                raise RuntimeError(f"{exc}; dovecot said:\n{said[-4000:]}") from None
            yield dovecot
        finally:
            _stop(process)
    finally:
        if os.getuid() == 0:
            shutil.rmtree(root, ignore_errors=True)
