"""Transparent mode (Linux): nftables rules that send mail connections to the engine.

The engine installs a table of its own, ``inet mailguard``, and nothing else, so removing it
(``nft delete table inet mailguard``) removes exactly what we added and leaves the administrator's
firewall alone. The table is replaced atomically: one ``nft -f -`` transaction creates, deletes and
re-creates it, so a reload never leaves a moment without rules or with two sets of them.

Which traffic is redirected (the decision asked for in issue 6):

- ``output`` hook, always: connections opened by programs on this host (the mail client on a
  desktop, or any process in the network namespace the engine runs in) to the configured
  imap/imaps/pop3/pop3s ports are redirected to ``transparent.listen``. Loopback destinations are
  left alone: a local server is not "remote mail", and the explicit-mode listeners live there.
- ``prerouting`` hook, only when ``transparent.listen`` is not a loopback address (e.g.
  ``0.0.0.0:8143``): connections forwarded through this host (a router, containers, other
  namespaces) are redirected too. nftables' ``redirect`` sends forwarded packets to the primary
  address of the interface they arrived on, which a listener bound to 127.0.0.1 cannot accept
  (route_localnet is off, and turning it on is a security hazard), so a loopback listener gets no
  prerouting chain.
- The engine's own upstream connections must not be redirected back to itself. They carry the
  socket mark ``UPSTREAM_MARK`` (SO_MARK, set by ``create_upstream_socket`` /
  ``mark_upstream_socket`` before connecting) and the first rule returns them. A uid exemption
  would not do: the engine usually runs as root, and so may the user's own mail fetcher.

The original destination of a redirected connection is read back with SO_ORIGINAL_DST
(``original_destination``), for IPv4 and IPv6.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import struct
import subprocess
from typing import TYPE_CHECKING

from mailguard.errors import EngineError

if TYPE_CHECKING:
    from mailguard.settings import Settings

TABLE = "inet mailguard"
# "mg": the mark on the engine's upstream sockets. Any value works as long as nothing else on the
# host uses it for policy routing; it is one constant so the rules and the sockets agree.
UPSTREAM_MARK = 0x6D67
# Before the kernel's own DNAT (-100 is "dstnat" in nft's names; numeric for older nft).
_NAT_PRIORITY = -100
NFT_TIMEOUT_SECONDS = 15.0

# Linux constants the socket module does not export.
SO_ORIGINAL_DST = 80          # <linux/netfilter_ipv4.h>
IP6T_SO_ORIGINAL_DST = 80     # <linux/netfilter_ipv6/ip6_tables.h>
_SOL_IPV6 = getattr(socket, "SOL_IPV6", 41)
_SO_MARK = getattr(socket, "SO_MARK", 36)
_CAP_NET_ADMIN = 12

_EC = "web-and-email.email-client.protocols."
PORT_KEYS = tuple(_EC + f"{name}.ports" for name in ("imap", "imaps", "pop3", "pop3s"))
LISTEN_KEY = "web-and-email.protocol-filtering.transparent.listen"


# --- the sockets' side --------------------------------------------------------------------------


def mark_upstream_socket(sock: socket.socket) -> None:
    """Mark a socket as the engine's own upstream leg, so the redirect rules let it through.

    Call before ``connect``. Needs CAP_NET_ADMIN, which transparent mode has anyway.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_MARK, UPSTREAM_MARK)
    except PermissionError as exc:
        raise EngineError(
            "marking the upstream connection needs root (CAP_NET_ADMIN) in transparent mode"
        ) from exc


def create_upstream_socket(family: int) -> socket.socket:
    """A non-blocking TCP socket, marked, ready for ``loop.sock_connect`` and then
    ``asyncio.open_connection(sock=...)``."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        mark_upstream_socket(sock)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """The address a redirected connection was meant for (SO_ORIGINAL_DST)."""
    if sock.family == socket.AF_INET6:
        # struct sockaddr_in6: family, port (network order), flowinfo, 16-byte address, scope id
        raw = sock.getsockopt(_SOL_IPV6, IP6T_SO_ORIGINAL_DST, 28)
        port = struct.unpack_from("!H", raw, 2)[0]
        host = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        mapped = ipaddress.IPv6Address(host).ipv4_mapped
        return (str(mapped) if mapped else host), port
    # struct sockaddr_in: family, port (network order), 4-byte address, padding
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack_from("!H", raw, 2)[0]
    return socket.inet_ntop(socket.AF_INET, raw[4:8]), port


# --- the ruleset --------------------------------------------------------------------------------


def parse_listen(value: str) -> tuple[str, int]:
    """``127.0.0.1:8143``, ``[::1]:8143`` or ``0.0.0.0:8143`` -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise EngineError(f"{LISTEN_KEY}: expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def redirected_ports(settings: Settings) -> list[int]:
    ports: set[int] = set()
    for key in PORT_KEYS:
        ports.update(int(p) for p in settings.get(key))
    return sorted(ports)


def build_ruleset(listen: tuple[str, int], ports: list[int]) -> str:
    """The nft script that (re)creates ``inet mailguard`` atomically."""
    host, listen_port = listen
    families = _families_for(host)
    port_set = "{ " + ", ".join(str(p) for p in ports) + " }"
    redirects = [
        f"\t\tmeta nfproto {family} tcp dport {port_set} redirect to :{listen_port}" for family in families
    ]
    lines = [
        # Creating then deleting makes the delete succeed whether or not the table existed; the
        # whole script is one transaction, applied completely or not at all.
        f"table {TABLE} {{}}",
        f"delete table {TABLE}",
        f"table {TABLE} {{",
        "\tchain output {",
        f"\t\ttype nat hook output priority {_NAT_PRIORITY}; policy accept;",
        f"\t\tmeta mark {UPSTREAM_MARK:#x} return",
        "\t\tip daddr 127.0.0.0/8 return",
        "\t\tip6 daddr ::1 return",
        *redirects,
        "\t}",
    ]
    if not _is_loopback(host):
        lines += [
            "\tchain prerouting {",
            f"\t\ttype nat hook prerouting priority {_NAT_PRIORITY}; policy accept;",
            # Connections to this host's own addresses are not forwarded traffic.
            "\t\tfib daddr type local return",
            *redirects,
            "\t}",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _families_for(host: str) -> list[str]:
    """Redirect only the address families the listener can accept: redirect rewrites IPv4 to
    127.0.0.1 and IPv6 to ::1 (output hook), so an IPv4 listener must not get IPv6 traffic."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return ["ipv4", "ipv6"]  # a name: assume it resolves to both
    if address.version == 4:
        return ["ipv4"]
    return ["ipv4", "ipv6"] if address.is_unspecified else ["ipv6"]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# --- nft ----------------------------------------------------------------------------------------


def install(settings: Settings) -> str:
    """Install (or replace) the rules for these settings; returns the ruleset applied."""
    ports = redirected_ports(settings)
    if not ports:
        raise EngineError("transparent mode: no imap/imaps/pop3/pop3s ports are configured")
    ruleset = build_ruleset(parse_listen(settings.get(LISTEN_KEY)), ports)
    _nft(["-f", "-"], stdin=ruleset)
    return ruleset


def remove() -> None:
    """Remove our table; nothing to remove is fine."""
    _nft(["-f", "-"], stdin=f"table {TABLE} {{}}\ndelete table {TABLE}\n")


def current_ruleset() -> str:
    """The rules in force (``nft list table inet mailguard``), or "" when there are none."""
    try:
        return _nft(["list", "table", *TABLE.split()])
    except EngineError as exc:
        if "No such file or directory" in str(exc):
            return ""
        raise


def _nft(args: list[str], stdin: str | None = None) -> str:
    nft = shutil.which("nft") or next(
        (p for p in ("/usr/sbin/nft", "/sbin/nft") if shutil.which(p)), None
    )
    if nft is None:
        raise EngineError("transparent mode needs nftables: the 'nft' program was not found")
    if not has_net_admin():
        raise EngineError(
            "transparent mode needs root (or CAP_NET_ADMIN) to manage nftables rules; "
            "run the engine as root or use explicit mode"
        )
    try:
        done = subprocess.run(
            [nft, *args], input=stdin, capture_output=True, text=True, timeout=NFT_TIMEOUT_SECONDS
        )
    except subprocess.TimeoutExpired as exc:
        raise EngineError(f"nft {' '.join(args)} did not finish within {NFT_TIMEOUT_SECONDS:g}s") from exc
    if done.returncode != 0:
        raise EngineError(f"nft {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def has_net_admin() -> bool:
    """Whether this process may change nftables rules (CapEff has CAP_NET_ADMIN)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_NET_ADMIN & 1)
    except OSError:
        pass
    import os

    return os.geteuid() == 0
