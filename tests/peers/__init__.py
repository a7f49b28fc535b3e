"""Finding the real peers (dovecot, fetchmail, clamd, openssl, nft...) that tests run against.

A missing peer skips the test with the install hint; in CI the skip becomes a failure
(see conftest.py), so a missing install step in scripts/test.sh cannot hide.
"""

from __future__ import annotations

import os
import shutil
import socket

import pytest

# program -> the Debian package scripts/test.sh installs it from
PACKAGES = {
    "dovecot": "dovecot-imapd dovecot-pop3d",
    "fetchmail": "fetchmail",
    "clamd": "clamav-daemon",
    "clamscan": "clamav",
    "sigtool": "clamav",
    "socat": "socat",
    "nft": "nftables",
    "ip": "iproute2",
    "openssl": "openssl",
    "7z": "p7zip-full",
    "xz": "xz-utils",
    "zstd": "zstd",
    "lzip": "lzip",
    "certutil": "libnss3-tools",
}

SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def require(program: str) -> str:
    """The program's path, or skip: 'needs dovecot (Debian package ...)'."""
    found = shutil.which(program, path=SEARCH_PATH)
    if found is None:
        package = PACKAGES.get(program, program)
        pytest.skip(f"needs {program} (Debian package {package}; 'bash scripts/test.sh' as root installs it)")
    return found


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nftables or the system trust store)")


CLAMAV_TESTFILES = "/usr/share/clamav-testfiles"


def require_clamav_testfiles() -> str:
    if not os.path.isdir(CLAMAV_TESTFILES):
        pytest.skip("needs Debian's clamav-testfiles ('bash scripts/test.sh' as root installs it)")
    return CLAMAV_TESTFILES


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: all sockets stay bound until every port is picked, or the
    kernel may hand out the same port twice (Dovecot then refuses a duplicate listener)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
