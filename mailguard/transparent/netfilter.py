"""Transparent mode (Linux): the sockets' side of it, and running ``nft``.

What is redirected and where the engine listens: plan.py; the nftables table:
rules.py. Here:

- The engine's own upstream connections carry the socket mark ``UPSTREAM_MARK`` (SO_MARK, set by
  ``create_upstream_socket`` / ``mark_upstream_socket`` before connecting), which the rules let
  through, so they are not redirected back to the engine.
- ``redirected_destination``: where a connection the listener accepted was going, read with
  SO_ORIGINAL_DST (IPv4 and IPv6). A connection that was not redirected, made straight to the
  listener on any of this host's addresses, is refused: relaying it would connect the engine to
  itself, again and again. That is judged against the socket's real local address, not the
  configured one (``0.0.0.0`` is nobody's destination).
- ``install`` / ``remove`` / ``current_ruleset``: the table, through ``nft``. When the kernel
  refuses the IPv6 half of the rules (no IPv6 NAT), the rules are installed again with IPv6's mail
  ports blocked rather than failing or passing IPv6 mail unscanned.
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import socket
import struct
import subprocess
from typing import TYPE_CHECKING

from mailguard.errors import ServiceError
from mailguard.transparent.plan import TransparentPlan, show_address
from mailguard.transparent.rules import TABLE, UPSTREAM_MARK, build_ruleset, removal_script

if TYPE_CHECKING:
    from mailguard.settings import Settings

__all__ = ["TABLE", "UPSTREAM_MARK", "NotRedirected", "create_upstream_socket", "current_ruleset",
           "has_net_admin", "install", "mark_upstream_socket", "original_destination",
           "redirected_destination", "remove"]

log = logging.getLogger("mailguard.engine")

NFT_TIMEOUT_SECONDS = 15.0

# Linux constants the socket module does not export.
SO_ORIGINAL_DST = 80          # <linux/netfilter_ipv4.h>
IP6T_SO_ORIGINAL_DST = 80     # <linux/netfilter_ipv6/ip6_tables.h>
_SOL_IPV6 = getattr(socket, "SOL_IPV6", 41)
_SO_MARK = getattr(socket, "SO_MARK", 36)
_CAP_NET_ADMIN = 12


class NotRedirected(ServiceError):
    """A connection reached the transparent listener without being redirected to it."""


# --- the sockets' side --------------------------------------------------------------------------


def mark_upstream_socket(sock: socket.socket) -> None:
    """Mark a socket as the engine's own upstream leg, so the redirect rules let it through.

    Call before ``connect``. Needs CAP_NET_ADMIN, which transparent mode has anyway.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_MARK, UPSTREAM_MARK)
    except PermissionError as exc:
        raise ServiceError(
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


def redirected_destination(sock: socket.socket) -> tuple[str, int]:
    """Where a connection the transparent listener accepted was going; ``NotRedirected`` when it
    was made straight to the listener (on any local address), ``OSError`` when the kernel has no
    record of it."""
    destination = original_destination(sock)
    local_host, local_port = sock.getsockname()[:2]
    host, port = destination
    # Without a redirect the "original" destination is simply where the client connected: this
    # socket's own address. Any of this host's addresses with the listener's port is the same
    # listener (0.0.0.0 is reached on every one of them), so relaying there would loop.
    if port == local_port and (_same_address(host, local_host) or _is_local(host)):
        raise NotRedirected(f"a connection made to the engine's own listener ({show_address(host, port)}) was refused")
    return destination


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a.split("%", 1)[0]) == ipaddress.ip_address(b.split("%", 1)[0])
    except ValueError:
        return a == b


def _is_local(host: str) -> bool:
    """Whether ``host`` is one of this host's addresses: only those can be bound to."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
    except OSError:
        return False
    return True


# --- nft ----------------------------------------------------------------------------------------


def install(settings: Settings, blocked: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """Install (or replace) the rules for these settings, with the ``blocked`` families' mail
    ports refused; returns the ruleset applied and the families blocked (with why)."""
    plan = TransparentPlan.from_settings(settings)
    blocked = dict(blocked or {})
    ruleset = build_ruleset(plan, blocked)
    try:
        _nft(["-f", "-"], stdin=ruleset)
    except ServiceError as exc:
        if "ipv6" in blocked or not has_net_admin():
            raise
        # A kernel without IPv6 NAT refuses the whole transaction: block IPv6 instead.
        blocked["ipv6"] = f"the kernel refused the IPv6 redirect ({exc})"
        ruleset = build_ruleset(plan, blocked)
        try:
            _nft(["-f", "-"], stdin=ruleset)
        except ServiceError:
            raise exc from None
        log.warning("IPv6 mail ports are blocked: %s", blocked["ipv6"])
    return ruleset, blocked


def remove() -> None:
    """Remove our table; nothing to remove is fine."""
    _nft(["-f", "-"], stdin=removal_script())


def current_ruleset() -> str:
    """The rules in force (``nft list table inet mailguard``), or "" when there are none."""
    try:
        return _nft(["list", "table", *TABLE.split()])
    except ServiceError as exc:
        if "No such file or directory" in str(exc):
            return ""
        raise


def _nft(args: list[str], stdin: str | None = None) -> str:
    nft = shutil.which("nft") or next(
        (p for p in ("/usr/sbin/nft", "/sbin/nft") if shutil.which(p)), None
    )
    if nft is None:
        raise ServiceError("transparent mode needs nftables: the 'nft' program was not found")
    if not has_net_admin():
        raise ServiceError(
            "transparent mode needs root (or CAP_NET_ADMIN) to manage nftables rules; "
            "run the engine as root or use explicit mode"
        )
    try:
        done = subprocess.run(
            [nft, *args], input=stdin, capture_output=True, text=True, timeout=NFT_TIMEOUT_SECONDS
        )
    except subprocess.TimeoutExpired as exc:
        raise ServiceError(f"nft {' '.join(args)} did not finish within {NFT_TIMEOUT_SECONDS:g}s") from exc
    if done.returncode != 0:
        raise ServiceError(f"nft {' '.join(args)} failed: {done.stderr.strip()}")
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
