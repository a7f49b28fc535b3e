"""Host names on certificates: normalising, matching, name constraints, cache keys.

Everything here is pure string work, shared by leaf minting (which names go into a SAN) and
upstream checking (does a certificate name the host we meant to reach).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: RFC 1035 §2.3.4: a name is at most 253 characters in text form, a label at most 63.
MAX_NAME_LENGTH = 253
MAX_LABEL_LENGTH = 63
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def parse_ip(name: str) -> IPAddress | None:
    """The address when ``name`` is an IP literal (brackets allowed for IPv6), else None."""
    try:
        return ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return None


def normalise_dns_name(name: str) -> str | None:
    """Lower-case A-label form of a DNS name, or None when it is not a usable host name.

    A single leading ``*.`` wildcard label is kept (RFC 6125 §6.4.3: only the whole left-most
    label may be a wildcard). Unicode names become A-labels (IDNA 2008 via the ``idna`` codec of
    the standard library, which is IDNA 2003, is enough for names a client typed).
    """
    name = name.strip().rstrip(".").lower()
    if not name or parse_ip(name) is not None:
        return None
    wildcard = name.startswith("*.")
    body = name[2:] if wildcard else name
    try:
        body = body.encode("idna").decode("ascii") if not body.isascii() else body
    except UnicodeError:
        return None
    if len(body) > MAX_NAME_LENGTH:
        return None
    labels = body.split(".")
    for label in labels:
        if not label or len(label) > MAX_LABEL_LENGTH or not set(label) <= _LABEL_CHARS:
            return None
        if label.startswith("-") or label.endswith("-"):
            return None
    if wildcard and len(labels) < 2:
        return None  # "*.com"-style wildcards are refused by every verifier; never mint one
    return ("*." + body) if wildcard else body


def normalise_names(names: Iterable[str]) -> list[str]:
    """Usable names, normalised, duplicates dropped, order kept (IP literals in canonical form)."""
    seen: dict[str, None] = {}
    for name in names:
        ip = parse_ip(name.strip())
        normal = str(ip) if ip is not None else normalise_dns_name(name)
        if normal is not None:
            seen.setdefault(normal, None)
    return list(seen)


def name_set_key(names: Iterable[str]) -> str:
    """The leaf-cache key: SHA-256 over the full sorted name set.

    docs/pitfalls.md#cache-keys-and-strong-hashes: Kaspersky keyed its leaf cache on 32 bits of MD5
    and served one host's certificate for another. A full SHA-256 over every name makes a collision
    infeasible.
    """
    joined = "\n".join(sorted(set(names)))
    return hashlib.sha256(joined.encode("ascii")).hexdigest()


def hostname_matches(hostname: str, dns_names: Sequence[str], ips: Sequence[IPAddress]) -> bool:
    """Does a certificate with these SAN entries identify ``hostname``? (RFC 6125 §6.4)

    IP literals match only IP SAN entries (RFC 6125 §1.7.2 leaves IPs to iPAddress). A wildcard
    matches exactly one whole left-most label, never a partial label and never an IP.
    """
    ip = parse_ip(hostname)
    if ip is not None:
        return ip in ips
    wanted = normalise_dns_name(hostname)
    if wanted is None or wanted.startswith("*."):
        return False
    for presented in dns_names:
        pattern = normalise_dns_name(presented)
        if pattern is None:
            continue
        if pattern == wanted:
            return True
        if pattern.startswith("*.") and "." in wanted:
            first, rest = wanted.split(".", 1)
            if first and rest == pattern[2:]:
                return True
    return False


def normalise_constraint(constraint: str) -> str | None:
    """A permitted-subtree entry in the form X.509 wants (RFC 5280 §4.2.1.10), or None."""
    leading_dot = constraint.strip().startswith(".")
    normal = normalise_dns_name(constraint.strip().lstrip("."))
    if normal is None or normal.startswith("*."):
        return None
    return "." + normal if leading_dot else normal


def permitted_by(name: str, constraints: Sequence[str]) -> bool:
    """Would a CA name-constrained to these DNS subtrees be allowed to sign ``name``?

    RFC 5280 §4.2.1.10: "example.com" permits the name itself and every name formed by adding
    labels on the left; OpenSSL also reads ".example.com" as "subdomains only". No constraints
    means everything is permitted. IP literals are excluded whenever constraints are set,
    because ``ca init`` then also excludes every IP range (see ``ca.py``).
    """
    if not constraints:
        return True
    if parse_ip(name) is not None:
        return False
    host = name[2:] if name.startswith("*.") else name
    for constraint in constraints:
        if constraint.startswith("."):
            if host.endswith(constraint) or (name.startswith("*.") and host == constraint[1:]):
                return True
        elif host == constraint or host.endswith("." + constraint):
            return True
    return False
