"""The settings the engine runs under, read once per (re)load into plain fields.

Sessions hold the ``RunConfig`` that was current when they started for their connection-level
choices (route, TLS), and ask the server for the current one before each message, so
``mailguard disable`` or a reload reaches sessions that are already open.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailguard.proxy.limits import SessionLimits
from mailguard.scan.policy import Policy
from mailguard.settings.types import parse_address_range, parse_hostport

if TYPE_CHECKING:
    from mailguard.settings import Paths, Settings

__all__ = ["Route", "RunConfig"]

_PF = "web-and-email.protocol-filtering."
_EC = "web-and-email.email-client."
_TLS = "web-and-email.ssl-tls."
PROTOCOLS = ("imap", "imaps", "pop3", "pop3s")


@dataclass(frozen=True)
class Route:
    """``LISTEN=UPSTREAM`` from protocol-filtering.routes."""

    listen: tuple[str, int]
    upstream: tuple[str, int]

    @classmethod
    def parse(cls, text: str) -> "Route":
        listen, _, upstream = text.partition("=")
        return cls(parse_hostport(listen), parse_hostport(upstream))

    def __str__(self) -> str:
        return f"{_show(self.listen)}={_show(self.upstream)}"


def _show(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class RunConfig:
    settings: Any
    mode: str
    routes: tuple[Route, ...]
    transparent_listen: tuple[str, int]
    filtering: bool                      # protocol-filtering.enabled
    protection: bool                     # …protocols.enabled (mailguard enable/disable)
    protocols: dict[str, bool]           # pop3/pop3s/imap/imaps .enabled
    ports: dict[str, tuple[int, ...]]    # pop3/pop3s/imap/imaps .ports
    ssl_enabled: bool
    unrecognized: str                    # protocol-filtering.unrecognized: "block" or "relay"
    excluded_ranges: tuple[tuple[Any, Any], ...]
    excluded_domains: tuple[str, ...]
    policy: Policy
    quarantine_dir: Path | None
    #: transparent mode's plan (transparent/plan.py); None in explicit mode
    transparent: Any = None
    limits: SessionLimits = field(default_factory=SessionLimits)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_settings(cls, settings: "Settings", paths: "Paths | None") -> "RunConfig":
        g = settings.get
        policy = Policy.from_settings(settings)
        quarantine_dir = paths.quarantine_dir(settings) if paths is not None else None
        mode = g(_PF + "mode")
        transparent = None
        if mode == "transparent":  # refused here, so at start and on reload, when it cannot work
            from mailguard.transparent.plan import TransparentPlan

            transparent = TransparentPlan.from_settings(settings)
        return cls(
            settings=settings,
            mode=mode,
            routes=tuple(Route.parse(r) for r in g(_PF + "routes")),
            transparent_listen=parse_hostport(g(_PF + "transparent.listen")),
            filtering=g(_PF + "enabled"),
            protection=g(_EC + "protocols.enabled"),
            protocols={p: g(_EC + f"protocols.{p}.enabled") for p in PROTOCOLS},
            ports={p: tuple(g(_EC + f"protocols.{p}.ports")) for p in PROTOCOLS},
            ssl_enabled=g(_TLS + "enabled"),
            unrecognized=g(_PF + "unrecognized"),
            excluded_ranges=tuple(parse_address_range(a) for a in g(_PF + "excluded-ips")),
            excluded_domains=tuple(d.lower() for d in g(_TLS + "excluded-domains")),
            policy=policy,
            quarantine_dir=quarantine_dir,
            transparent=transparent,
            limits=SessionLimits.from_settings(settings),
        )

    @property
    def scanning(self) -> bool:
        """Protection on: filtering enabled and email protection enabled."""
        return self.filtering and self.protection

    def implicit_tls_protocol(self, port: int) -> str | None:
        """``pop3s``/``imaps`` when ``port`` is in that implicit-TLS port list."""
        for name in ("pop3s", "imaps"):
            if port in self.ports[name]:
                return name
        return None

    def protocol_of_port(self, port: int) -> str | None:
        """The protocol whose port list holds ``port`` (pop3, pop3s, imap, imaps), if any: on
        those ports the protocol is known, not guessed from the greeting (proxy/session.py)."""
        return next((name for name in PROTOCOLS if port in self.ports[name]), None)

    def excluded_ip(self, *addresses: str) -> bool:
        for text in addresses:
            try:
                address = ipaddress.ip_address(text.split("%", 1)[0])
            except ValueError:
                continue
            if getattr(address, "ipv4_mapped", None):
                address = address.ipv4_mapped
            for first, last in self.excluded_ranges:
                if first.version == address.version and first <= address <= last:
                    return True
        return False

    def excluded_domain(self, *names: str | None) -> bool:
        """ssl-tls.excluded-domains: host globs, matched case-insensitively."""
        for name in names:
            if name and any(fnmatch.fnmatchcase(name.lower().rstrip("."), g) for g in self.excluded_domains):
                return True
        return False
