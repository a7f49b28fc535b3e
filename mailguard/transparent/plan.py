"""Transparent mode's plan: which connections are redirected, where the engine listens for them.

Two settings decide it, and ``TransparentPlan.from_settings`` refuses the combinations that
cannot work, at ``start`` (and on reload) rather than with mail silently going around the engine:

- ``transparent.role``: ``desktop`` redirects the connections this host opens (the ``output``
  hook), ``gateway`` those it forwards for other machines (``prerouting``), ``both`` both.
- ``transparent.listen``: the port, and how far the listener reaches. nftables' ``redirect``
  rewrites a connection's destination to 127.0.0.1 / ::1 in the output hook and to the address
  of the interface the connection came in on in prerouting, so the listener must be either on
  loopback (``127.0.0.1``, ``[::1]``, ``localhost``: desktop only) or on every address
  (``0.0.0.0``, ``[::]``). Either spelling means that place in BOTH families: IPv4 and IPv6 are
  redirected alike (clients that prefer IPv6 are common), so the engine listens on
  127.0.0.1 and ::1, or on 0.0.0.0 and :: (each IPv6 socket with IPV6_V6ONLY set, so the two
  sockets of one port do not collide and each family has a listener of its own).
  Any other address is refused: the kernel would redirect connections to where it is not.

Every address is not an open door: the ruleset lets only connections the rules redirected reach
the listener's port (rules.py), and the engine refuses any that was not
(netfilter.py), so a connection made straight to the listener cannot loop back into it.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailguard.errors import ServiceError

if TYPE_CHECKING:
    from mailguard.settings import Settings

__all__ = ["FAMILIES", "LISTEN_KEY", "PORT_KEYS", "ROLE_KEY", "TransparentPlan", "family_of", "listening_socket",
           "show_address"]

_PF = "web-and-email.protocol-filtering."
LISTEN_KEY = _PF + "transparent.listen"
ROLE_KEY = _PF + "transparent.role"
PORT_KEYS = tuple(f"web-and-email.email-client.protocols.{name}.ports" for name in ("imap", "imaps", "pop3", "pop3s"))

#: nftables' names for the address families, in the order they are reported
FAMILIES = ("ipv4", "ipv6")
_SOCKET_FAMILY = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
_LOOPBACK = {"ipv4": "127.0.0.1", "ipv6": "::1"}
_EVERY_ADDRESS = {"ipv4": "0.0.0.0", "ipv6": "::"}
# A family whose listener cannot exist here (IPv6 disabled, no ::1, a kernel without IPv6):
# these errors make that family "blocked", any other bind error stops the start.
_FAMILY_UNAVAILABLE = {errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT}


@dataclass(frozen=True)
class TransparentPlan:
    role: str                      # desktop | gateway | both
    port: int                      # the listener's port, in both families
    everywhere: bool               # on every address (0.0.0.0 / ::) rather than loopback
    mail_ports: tuple[int, ...]    # the imap/imaps/pop3/pop3s ports, redirected

    @classmethod
    def from_settings(cls, settings: Settings) -> TransparentPlan:
        from mailguard.settings.types import parse_hostport

        listen = settings.get(LISTEN_KEY)
        host, port = parse_hostport(listen)
        role = settings.get(ROLE_KEY)
        mail_ports = tuple(sorted({int(p) for key in PORT_KEYS for p in settings.get(key)}))
        if not mail_ports:
            raise ServiceError("transparent mode: no imap/imaps/pop3/pop3s ports are configured")
        if port in mail_ports:
            raise ServiceError(f"{LISTEN_KEY} = {listen}: port {port} is also a mail port, and the rules "
                              "would redirect the engine's listener to itself; choose another port")
        everywhere = _every_address(host)
        if not everywhere and not _loopback(host):
            raise ServiceError(
                f"{LISTEN_KEY} = {listen}: redirected connections arrive on loopback (role desktop) or on "
                "the address of the interface they came in on (role gateway), never on one chosen "
                f"address; use 127.0.0.1:{port} (desktop) or 0.0.0.0:{port} (every address)")
        if role != "desktop" and not everywhere:
            raise ServiceError(
                f"{ROLE_KEY} = {role} needs {LISTEN_KEY} on every address (0.0.0.0:{port} or [::]:{port}): "
                f"forwarded connections are redirected to the address of the interface they arrive on, "
                f"which a listener on {host} cannot accept")
        return cls(role=role, port=port, everywhere=everywhere, mail_ports=mail_ports)

    @property
    def local(self) -> bool:
        """Redirect the connections this host opens (output hook)."""
        return self.role in ("desktop", "both")

    @property
    def forwarded(self) -> bool:
        """Redirect the connections this host forwards (prerouting hook)."""
        return self.role in ("gateway", "both")

    def address(self, family: str) -> tuple[str, int]:
        """Where this family's listener binds."""
        return (_EVERY_ADDRESS if self.everywhere else _LOOPBACK)[family], self.port


def family_of(host: str) -> str:
    return "ipv6" if ":" in host else "ipv4"


def listening_socket(host: str, port: int, backlog: int) -> socket.socket | str:
    """A listening, non-blocking socket on ``(host, port)``, or (a string) why this address
    family cannot have one here. Other failures (the port is taken) raise ServiceError."""
    family = family_of(host)
    try:
        sock = socket.socket(_SOCKET_FAMILY[family], socket.SOCK_STREAM)
    except OSError as exc:
        if exc.errno in _FAMILY_UNAVAILABLE:
            return f"no {family} on this host ({exc.strerror})"
        raise ServiceError(f"cannot listen on {show_address(host, port)}: {exc.strerror or exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == "ipv6":
            # Deliberately IPv6 only: IPv4 has a socket of its own, and a dual-stack socket on ::
            # would collide with it (EADDRINUSE) or, alone, make the IPv4 side depend on the
            # host's net.ipv6.bindv6only.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno in _FAMILY_UNAVAILABLE:
            return f"cannot listen on {show_address(host, port)} ({exc.strerror})"
        raise ServiceError(f"cannot listen on {show_address(host, port)}: {exc.strerror or exc}") from exc
    return sock


def show_address(host: str, port: int) -> str:
    """``host:port``, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return str(ipaddress.ip_address(host)) in _LOOPBACK.values()
    except ValueError:
        return False


def _every_address(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False
