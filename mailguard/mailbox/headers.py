"""Message-ID and Subject of a message, for reports, read from its first bytes only.

Reports need these two fields for every message, so they are taken from the header
block (RFC 5322 §2.2: up to the first empty line), unfolded (§2.2.3), and the Subject's
encoded words decoded (RFC 2047). Nothing here may fail on a damaged header: the worst
answer is an empty string.
"""

from __future__ import annotations

import re

MAX_HEADER_BLOCK = 64 * 1024   # bytes of header looked at; fields beyond are not reported
MAX_FIELD_TEXT = 998           # RFC 5322 §2.1.1 line limit, also the cap on what we report

_END_OF_HEADER = re.compile(rb"\r?\n\r?\n")
_FIELD = re.compile(rb"^(message-id|subject)[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


def header_block(message: bytes) -> bytes:
    """The header section of ``message`` (without the empty line), at most MAX_HEADER_BLOCK bytes."""
    head = message[:MAX_HEADER_BLOCK]
    end = _END_OF_HEADER.search(head)
    return head[:end.start()] if end else head


def summary_fields(message: bytes) -> tuple[str, str]:
    """``(message_id, subject)`` of the message; "" for a field that is missing."""
    found: dict[bytes, bytes] = {}
    for match in _FIELD.finditer(header_block(message)):
        found.setdefault(match.group(1).lower(), match.group(2))  # the first one counts, as in clients
    message_id = _unfold(found.get(b"message-id", b"")).strip()
    return message_id[:MAX_FIELD_TEXT], _decode_subject(_unfold(found.get(b"subject", b"")).strip())


def _unfold(raw: bytes) -> str:
    return re.sub(rb"\r?\n(?=[ \t])", b"", raw).decode("utf-8", "replace")


def _decode_subject(text: str) -> str:
    if "=?" not in text:
        return text[:MAX_FIELD_TEXT]
    from email.header import decode_header, make_header

    try:
        return str(make_header(decode_header(text)))[:MAX_FIELD_TEXT]
    except (ValueError, LookupError, UnicodeError):
        return text[:MAX_FIELD_TEXT]
