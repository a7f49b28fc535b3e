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

# A field starts a line. Matching "\n" + name over "\n" + block is the same as "^" in MULTILINE
# mode, and twice as fast: the regular expression engine skips to each "\n" instead of
# trying the name at every byte.
_FIELD = re.compile(rb"\n(message-id|subject)[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE)
_FOLD = re.compile(rb"\r?\n(?=[ \t])")


def header_end(message: bytes) -> int:
    """Where the header section ends: the first ``\\r?\\n\\r?\\n`` within MAX_HEADER_BLOCK bytes, or -1.

    Two memchr-speed searches instead of a regular expression walking every byte; the
    second is bounded by the first, so neither reads past the header of an LF message.
    """
    end = message.find(b"\n\n", 0, MAX_HEADER_BLOCK)
    if end > 0 and message[end - 1] == 13:  # "\r\n\n"
        end -= 1
    crlf = message.find(b"\n\r\n", 0, MAX_HEADER_BLOCK if end < 0 else end + 3)
    if crlf >= 0:
        if crlf > 0 and message[crlf - 1] == 13:  # "\r\n\r\n"
            crlf -= 1
        if end < 0 or crlf < end:
            end = crlf
    return end


def header_block(message: bytes) -> bytes:
    """The header section of ``message`` (without the empty line), at most MAX_HEADER_BLOCK bytes."""
    end = header_end(message)
    return message[:end] if end >= 0 else message[:MAX_HEADER_BLOCK]


def summary_fields(message: bytes) -> tuple[str, str]:
    """``(message_id, subject)`` of the message; "" for a field that is missing."""
    message_id = subject = None
    # One pass over the header block; the first of each field counts, as in clients.
    for match in _FIELD.finditer(b"\n" + header_block(message)):
        if match.group(1)[0] in b"mM":
            if message_id is None:
                message_id = match.group(2)
                if subject is not None:
                    break
        elif subject is None:
            subject = match.group(2)
            if message_id is not None:
                break
    found_id = _unfold(message_id).strip() if message_id else ""
    return found_id[:MAX_FIELD_TEXT], _decode_subject(_unfold(subject).strip() if subject else "")


def _unfold(raw: bytes) -> str:
    if b"\n" in raw:
        raw = _FOLD.sub(b"", raw)
    return raw.decode("utf-8", "replace")


def _decode_subject(text: str) -> str:
    if "=?" not in text:
        return text[:MAX_FIELD_TEXT]
    from email.header import decode_header, make_header

    try:
        return str(make_header(decode_header(text)))[:MAX_FIELD_TEXT]
    except (ValueError, LookupError, UnicodeError):
        return text[:MAX_FIELD_TEXT]
