"""Mail files inside other objects: a message or an mbox that arrives as an ordinary file.

A message attached as ``application/octet-stream`` (``fwd.eml``), an mbox inside a zip, a
uuencoded ``.eml``: mail programs open these as mail all the same, so
``threatsense.objects.email-files`` ("look inside attached messages") applies to them
whatever their declared type or name. They are recognised by content only:

- an mbox: the first line is a ``From_`` separator, ``From SENDER DATE``, with the date
  at the end as mutt and Dovecot require (``mailguard/scan/fromline.py``, the rule the
  mailbox readers use too);
- a message (RFC 5322 §2.1, also a bare MIME entity): every line up to the first empty
  line is a header field (``name:``, §3.6.8) or a folded continuation (§2.2.3), and at least
  one field is one that messages carry. A text that merely starts ``From: the CEO`` and
  goes on with prose is not one; one that is shaped like a header block is walked as a
  message, which costs a walk and finds nothing that is not there.

This is not a ``_KINDS`` entry of ``containers.expand``: what a mail file holds are MIME
parts, which need the engine's MIME walk (every decoding a client could apply, files inside
text bodies, nested messages), not opaque members. The engine walks it
(``engine._MessageScan.scan_mail_file``), under the same ``Budget``.

Recognition costs a few byte comparisons for anything that is not mail: binary data fails
on its first byte or before its first colon.
"""

from __future__ import annotations

import re

from mailguard.scan.fromline import is_from_line_at, unquote

MAX_HEADER_SCAN = 64 * 1024   # bytes of a header block looked at before deciding it is none
MAX_FIELD_NAME = 78           # RFC 5322 §2.1.1 line length: a longer "name" is no field name
MAX_MESSAGES = 10_000         # messages of one mbox walked; more is abuse (and costs a walk each)

# Field names: printable US-ASCII except ":" (RFC 5322 §3.6.8), then optional WSP (obsolete
# syntax, §4.5.3) and the colon.
_FTEXT = bytes(b for b in range(0x21, 0x7F) if b != 0x3A)
# Fields found in the header of practically every message (the set mailbox/sniff.py uses,
# plus the MIME fields that make a bare entity such as a saved attachment part).
_MAIL_FIELDS = frozenset({
    b"from", b"to", b"cc", b"date", b"subject", b"message-id", b"received", b"return-path",
    b"delivered-to", b"mime-version", b"content-type", b"content-transfer-encoding",
    b"content-disposition", b"reply-to", b"sender", b"x-mailer",
})

# A header block line by line: a field ("name:" and its value) or a continuation (§2.2.3).
_LINES_LF = re.compile(rb"(?:(?:[!-9;-~]++[ \t]*+:|[ \t])[^\n]*\n)*+")
_LINES_CR = re.compile(rb"(?:(?:[!-9;-~]++[ \t]*+:|[ \t])[^\r]*\r)*+")
_KNOWN_NAMES = b"|".join(re.escape(name) for name in sorted(_MAIL_FIELDS))
_KNOWN_LF = re.compile(rb"(?:^|\n)(?i:" + _KNOWN_NAMES + rb")[ \t]*:")
_KNOWN_CR = re.compile(rb"(?:^|\r)(?i:" + _KNOWN_NAMES + rb")[ \t]*:")


def recognise(data: bytes) -> bool:
    """True when ``data`` is an mbox or an RFC 5322 message (see the module docstring)."""
    if data[:5] == b"From ":
        return is_from_line_at(data, 0)
    if not data[:1].isalpha():  # field names in the wild start with a letter; binary rarely does
        return False
    colon = data.find(b":", 1, MAX_FIELD_NAME)
    if colon == -1 or data[:colon].rstrip(b" \t").translate(None, _FTEXT):
        return False
    return _is_header_block(data)


def messages(data: bytes) -> list[bytes]:
    """The messages of a mail file: one for a message, each one of an mbox (unquoted).

    Each mbox message keeps its ``From_`` line (``mime.parse_message`` skips it); the
    ``>From `` quoting is removed as every mbox reader does (RFC 4155, mboxrd), so the
    bodies are the bytes that were delivered.
    """
    if data[:5] != b"From ":
        return [data]
    starts = [0]
    pos = 0
    while len(starts) < MAX_MESSAGES and (hit := data.find(b"\nFrom ", pos)) != -1:
        pos = hit + 1
        if is_from_line_at(data, pos):
            starts.append(pos)
    bounds = zip(starts, starts[1:] + [len(data)])
    return [unquote(data[start:end]) for start, end in bounds]


def _is_header_block(data: bytes) -> bool:
    """Every line up to the first empty one is a field or a continuation, one field a mail field.

    Two regular expressions over the block, so a long header costs C time, not a Python loop.
    """
    head_end = min(len(data), MAX_HEADER_SCAN)
    lf = data.find(b"\n", 0, head_end) != -1  # else CR-only mail (docs/pitfalls.md#boundary-tricks)
    if lf:  # a header block ends at an empty line: LF LF or LF CR LF
        blank = min((i for i in (data.find(b"\n\n", 0, head_end), data.find(b"\n\r\n", 0, head_end)) if i != -1),
                    default=-1)
    else:
        blank = data.find(b"\r\r", 0, head_end)
    if blank != -1:
        block = data[:blank + 1]
    elif head_end < len(data):
        return False  # no end of the header block within MAX_HEADER_SCAN
    else:
        eol = b"\n" if lf else b"\r"
        block = data if data.endswith(eol) else data + eol  # a message that is all header
    if lf:
        return _LINES_LF.fullmatch(block) is not None and _KNOWN_LF.search(block) is not None
    return _LINES_CR.fullmatch(block) is not None and _KNOWN_CR.search(block) is not None
