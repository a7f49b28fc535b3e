"""Capabilities by allow-list (docs/pitfalls.md#capabilities-by-allow-list).

"Capabilities can introduce fundamental protocol changes" (duesee/imap-proxy): an
extension we do not parse would let client and server leave our understanding of the
session, so only the ones named here reach the client. COMPRESS would hide every
later byte (RFC 4978); ``*-PLUS`` SASL mechanisms bind to the TLS channel we
terminate; mechanisms with a security layer (GSSAPI, DIGEST-MD5) would encrypt past
us; PREVIEW, UTF8=ACCEPT, NOTIFY, QRESYNC and vendor extensions change syntax or
carry message text in forms this proxy does not rewrite; SEARCHRES would let ``$`` stand for a
sequence set in a FETCH the proxy answers itself (RFC 5182), so it is not offered either. Every
command an offered capability enables is on the allow-list (allowlist.CAPABILITY_COMMANDS).
"""

from __future__ import annotations

import re

ALLOWED = frozenset(
    {
        "IMAP4REV1", "IMAP4REV2", "LITERAL+", "LITERAL-", "IDLE", "UIDPLUS", "MOVE", "ENABLE",
        "CONDSTORE", "SPECIAL-USE", "CREATE-SPECIAL-USE", "NAMESPACE", "ID", "SASL-IR",
        "STARTTLS", "LOGINDISABLED", "CHILDREN", "LIST-EXTENDED", "LIST-STATUS", "UNSELECT",
        "ESEARCH", "SORT", "ESORT", "WITHIN", "QUOTA", "QUOTA=RES-STORAGE",
        "QUOTA=RES-MESSAGE", "STATUS=SIZE", "MULTIAPPEND", "LOGIN-REFERRALS", "MAILBOX-REFERRALS",
        "BINARY", "OBJECTID", "SAVEDATE", "I18NLEVEL=1", "ACL", "RIGHTS=TEKX", "MULTISEARCH",
        "CONTEXT=SEARCH", "CONTEXT=SORT", "LIST-MYRIGHTS", "NO_ATOMIC_RENAME", "THREAD=REFERENCES",
        "THREAD=REFS", "THREAD=ORDEREDSUBJECT",
    }
)
ALLOWED_PREFIXES = ("APPENDLIMIT=",)
#: SASL mechanisms without a security layer and without channel binding
ALLOWED_MECHANISMS = frozenset(
    {
        "PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER", "CRAM-MD5", "ANONYMOUS",
        "SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512",
    }
)
#: extensions a client may ENABLE through us (RFC 5161)
ENABLEABLE = frozenset({"CONDSTORE", "IMAP4REV2"})

_CODE = re.compile(rb"\[CAPABILITY ([^\]]*)\]", re.IGNORECASE)
_UNTAGGED = re.compile(rb"^\* CAPABILITY (.*?)(\r?\n)$", re.IGNORECASE | re.DOTALL)


def allowed(capability: str) -> bool:
    upper = capability.upper()
    if upper.startswith("AUTH="):
        return upper[5:] in ALLOWED_MECHANISMS
    return upper in ALLOWED or upper.startswith(ALLOWED_PREFIXES)


def filter_capabilities(words: list[bytes], remove: frozenset[str] = frozenset()) -> list[bytes]:
    """The allowed capabilities of ``words``, in their order, minus ``remove`` (upper case)."""
    out = []
    for word in words:
        text = word.decode("ascii", "replace")
        if allowed(text) and text.upper() not in remove:
            out.append(word)
    return out


def capabilities_in(raw: bytes) -> list[bytes] | None:
    """The capability list a response carries (``* CAPABILITY`` or a ``[CAPABILITY]`` code), or None."""
    match = _UNTAGGED.match(raw)
    if match is not None:
        return match.group(1).split()
    code = _CODE.search(raw.split(b"\n", 1)[0])
    if code is not None:
        return code.group(1).split()
    return None


def rewrite_capabilities(raw: bytes, remove: frozenset[str] = frozenset()) -> bytes:
    """``raw`` with every capability list in it filtered; other responses unchanged."""
    match = _UNTAGGED.match(raw)
    if match is not None:
        kept = filter_capabilities(match.group(1).split(), remove)
        return b"* CAPABILITY " + b" ".join(kept) + match.group(2)

    def code(found: re.Match[bytes]) -> bytes:
        return b"[CAPABILITY " + b" ".join(filter_capabilities(found.group(1).split(), remove)) + b"]"

    first, sep, rest = raw.partition(b"\n")
    return _CODE.sub(code, first, count=1) + sep + rest


def has(words: list[bytes] | None, capability: str) -> bool:
    return words is not None and any(word.upper() == capability.upper().encode() for word in words)
