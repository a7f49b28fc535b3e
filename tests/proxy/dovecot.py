"""A throwaway Dovecot POP3 server on 127.0.0.1 (POP3 with STLS, and POP3S) for real-peer tests
and bench/pop3.py. Same layout as tests/protocols/imap/dovecot.py (the IMAP one): any user logs
in with ``PASSWORD``; mail lives in Maildirs under a temporary folder; as root, mail is owned by
``nobody`` and the login processes run as ``dovenull``."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.protocols.imap.dovecot import PASSWORD, _wait_port, free_port

__all__ = ["PASSWORD", "Pop3Dovecot", "running_pop3_dovecot"]


@dataclass
class Pop3Dovecot:
    root: Path
    pop3_port: int
    pop3s_port: int
    ca_file: Path
    mail_uid: int
    mail_gid: int

    def deliver(self, user: str, messages: list[bytes]) -> None:
        """Put ``messages`` into the user's INBOX in this order (POP3 numbers follow it)."""
        box = self.root / "home" / user / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (box / sub).mkdir(parents=True, exist_ok=True)
        base = int(time.time())
        for index, message in enumerate(messages):
            (box / "cur" / f"{base}.M{index:08d}P1.mailguardtest:2,").write_bytes(message)
        for path in [self.root / "home" / user, *(self.root / "home" / user).rglob("*")]:
            os.chown(path, self.mail_uid, self.mail_gid)

    def stored(self, user: str) -> list[bytes]:
        box = self.root / "home" / user / "Maildir"
        return [p.read_bytes() for p in sorted([*(box / "cur").iterdir(), *(box / "new").iterdir()])]


def _config(root: Path, pop3_port: int, pop3s_port: int, cert: Path, key: Path, uid: int) -> str:
    me = pwd.getpwuid(os.getuid()).pw_name
    users = "" if os.getuid() == 0 else f"default_internal_user = {me}\ndefault_login_user = {me}\n"
    return f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
first_valid_uid = {uid}
last_valid_uid = 0
pop3_uidl_format = %08Xu%08Xv
# room for the 1,000-idle-connections figure of bench/pop3.py
default_client_limit = 4000
{users}
passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = uid={uid} gid={uid} home={root}/home/%u
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {pop3s_port}
    ssl = yes
  }}
  # High-performance login mode (one process serves many connections): in the default mode
  # each pending login holds a process of its own, and default_process_limit (100) turned
  # away most of bench/pop3.py's 1,000 idle connections.
  service_count = 0
  process_min_avail = 1
  client_limit = 3000
  chroot =
}}
service anvil {{
  chroot =
}}
protocol pop3 {{
  mail_max_userip_connections = 2000
}}
"""


@contextmanager
def running_pop3_dovecot(tmp: Path, ca) -> Iterator[Pop3Dovecot]:  # type: ignore[no-untyped-def]
    """Start ``dovecot -F`` with its own configuration; stop it and remove its files after."""
    binary = shutil.which("dovecot", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    assert binary is not None
    if os.getuid() == 0:
        root = Path(tempfile.mkdtemp(prefix="mailguard-dovecot-pop3-"))
        os.chmod(root, 0o755)
        nobody = pwd.getpwnam("nobody")
        uid, gid = nobody.pw_uid, nobody.pw_gid
    else:
        root = tmp / "dovecot-pop3"
        uid, gid = os.getuid(), os.getgid()
    for sub in ("run", "state", "home"):
        (root / sub).mkdir(parents=True, exist_ok=True, mode=0o755)
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    cert, key = root / "cert.pem", root / "key.pem"
    cert.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    ca_file = root / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    pop3_port, pop3s_port = free_port(), free_port()
    conf = root / "dovecot.conf"
    conf.write_text(_config(root, pop3_port, pop3s_port, cert, key, uid))
    process = subprocess.Popen([binary, "-F", "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        _wait_port(pop3_port, deadline)
        _wait_port(pop3s_port, deadline)
        yield Pop3Dovecot(root, pop3_port, pop3s_port, ca_file, uid, gid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if os.getuid() == 0:
            shutil.rmtree(root, ignore_errors=True)
