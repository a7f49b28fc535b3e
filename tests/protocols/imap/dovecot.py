"""A throwaway Dovecot IMAP server on 127.0.0.1 for real-peer tests (and bench/imap.py).

Plain IMAP with STARTTLS, and IMAPS, with a certificate from a test CA; any user logs in
with the password ``pass``; mail lives in Maildirs under a temporary folder.
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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

PASSWORD = "pass"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"dovecot did not listen on {port}")


@dataclass
class Dovecot:
    root: Path
    imap_port: int
    imaps_port: int
    ca_file: Path
    mail_uid: int
    mail_gid: int

    def maildir(self, user: str) -> Path:
        return self.root / "home" / user / "Maildir"

    def deliver(self, user: str, messages: list[bytes], folder: str = "") -> None:
        """Put ``messages`` into the user's INBOX (or ``.folder``) in this order (UIDs follow it)."""
        box = self.maildir(user) / (("." + folder) if folder else "")
        for sub in ("cur", "new", "tmp"):
            (box / sub).mkdir(parents=True, exist_ok=True)
        base = int(time.time())
        existing = len(list((box / "cur").iterdir())) + len(list((box / "new").iterdir()))
        for index, message in enumerate(messages, start=existing):
            path = box / "cur" / f"{base}.M{index:08d}P1.mailguardtest:2,"
            path.write_bytes(message)
        for path in [self.root / "home" / user, *self.root.joinpath("home", user).rglob("*")]:
            os.chown(path, self.mail_uid, self.mail_gid)


def _config(root: Path, imap_port: int, imaps_port: int, cert: Path, key: Path, uid: int, gid: int,
            tls: bool = True) -> str:
    me = pwd.getpwuid(os.getuid()).pw_name
    as_root = os.getuid() == 0
    users = "" if as_root else f"default_internal_user = {me}\ndefault_login_user = {me}\n"
    return f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = {"yes" if tls else "no"}
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
first_valid_uid = {uid}
last_valid_uid = 0
{users}
passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    # port 0: no IMAPS listener (a server without TLS at all)
    port = {imaps_port if tls else 0}
    ssl = {"yes" if tls else "no"}
  }}
  process_min_avail = 1
  # one login process per TLS connection (it keeps proxying the TLS): bench/imap.py opens 1,000
  process_limit = 1200
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
service imap {{
  # bench/imap.py holds 1,000 IDLE sessions, one imap process each
  process_limit = 1200
}}
default_client_limit = 2500
protocol imap {{
  mail_max_userip_connections = 2000
}}
"""


@contextmanager
def running_dovecot(tmp: Path, ca, *, tls: bool = True) -> Iterator[Dovecot]:  # type: ignore[no-untyped-def]
    """Start dovecot under ``tmp`` with a server certificate from the trustme CA ``ca``.

    ``tls=False``: no STARTTLS and no IMAPS (``imaps_port`` is 0), a plaintext-only server, so
    bench/imap.py can compare plain IMAP through mailguard with plain IMAP direct, like for like."""
    binary = shutil.which("dovecot", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    assert binary is not None
    if os.getuid() == 0:
        # Mail is accessed as "nobody", which cannot enter pytest's 0700 temporary folders.
        root = Path(tempfile.mkdtemp(prefix="mailguard-dovecot-"))
        os.chmod(root, 0o755)
        nobody = pwd.getpwnam("nobody")
        uid, gid = nobody.pw_uid, nobody.pw_gid
    else:
        root = tmp / "dovecot"
        uid, gid = os.getuid(), os.getgid()
    for sub in ("run", "state", "home"):
        (root / sub).mkdir(parents=True, exist_ok=True, mode=0o755)
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    cert, key = root / "cert.pem", root / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    for extra in leaf.cert_chain_pems[1:]:
        with open(cert, "ab") as handle:
            handle.write(extra.bytes())
    leaf.private_key_pem.write_to_path(str(key))
    ca_file = root / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    imap_port, imaps_port = free_port(), (free_port() if tls else 0)
    conf = root / "dovecot.conf"
    conf.write_text(_config(root, imap_port, imaps_port, cert, key, uid, gid, tls))
    process = subprocess.Popen([binary, "-F", "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        _wait_port(imap_port, deadline)
        if tls:
            _wait_port(imaps_port, deadline)
        yield Dovecot(root, imap_port, imaps_port, ca_file, uid, gid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if os.getuid() == 0:
            shutil.rmtree(root, ignore_errors=True)
