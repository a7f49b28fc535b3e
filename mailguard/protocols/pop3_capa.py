"""Which POP3 capabilities and SASL mechanisms the client may see (RFC 2449, RFC 5034).

An allow-list (docs/pitfalls.md#capabilities-by-allow-list, docs/pitfalls.md#pop3-pipelining): a
capability the proxy cannot follow is removed, since an extension we do not know could change the
framing under us.

- PIPELINING is removed: the proxy accepts pipelined commands but runs them one at a time, so
  advertising it would promise nothing and only invite bursts (RFC 2449 §6.6 lets a server omit it).
- STLS stays only when the proxy can take part in it (``stls_offered``): both legs intercepted,
  or the switch handed over to a byte relay when TLS interception is off.
- SASL mechanisms that negotiate a security layer (GSSAPI, DIGEST-MD5) would encrypt or
  integrity-protect the session after AUTH and hide the mail from us; ``-PLUS`` mechanisms bind
  to the TLS channel, which differs on each leg, so they can only fail; EXTERNAL relies on the
  client's TLS certificate, which never reaches the server. None of them is offered.
"""

from __future__ import annotations

import re

__all__ = ["ALLOWED_CAPABILITIES", "ALLOWED_SASL", "filter_capa", "filter_mechanisms", "sasl_allowed"]

ALLOWED_CAPABILITIES = frozenset({
    "TOP", "USER", "SASL", "RESP-CODES", "AUTH-RESP-CODE", "LOGIN-DELAY", "EXPIRE", "UIDL",
    "IMPLEMENTATION", "STLS",
})

# Mechanisms without a security layer and without channel binding.
ALLOWED_SASL = frozenset({
    "PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512",
    "XOAUTH2", "OAUTHBEARER", "ANONYMOUS",
})


# A capability line is printable US-ASCII (RFC 2449 §6): anything else is dropped with the rest.
_PRINTABLE = re.compile(rb"[\x20-\x7e]+")


def sasl_allowed(mechanism: str) -> bool:
    return mechanism.upper() in ALLOWED_SASL


def filter_mechanisms(names: list[bytes]) -> list[bytes]:
    return [n for n in names if sasl_allowed(n.decode("ascii", "replace"))]


def filter_capa(lines: list[bytes], *, stls_offered: bool) -> list[bytes]:
    """The lines of a CAPA answer (without the status line and terminator) the client may see."""
    kept: list[bytes] = []
    for line in lines:
        words = line.split()
        if not words or not _PRINTABLE.fullmatch(line):
            continue
        name = words[0].decode("ascii", "replace").upper()
        if name not in ALLOWED_CAPABILITIES or (name == "STLS" and not stls_offered):
            continue
        if name == "SASL":
            mechanisms = filter_mechanisms(words[1:])
            if not mechanisms:
                continue
            line = b" ".join([words[0], *mechanisms])
        kept.append(line)
    return kept
