"""The mbox ``From_`` separator line, and ``>From `` quoting (mboxo / mboxrd).

An mbox is a run of messages, each introduced by a line ``From SENDER DATE``. A body line
that merely starts with ``From `` must not split a message, so a separator is recognised
the way mutt (``is_from()``) and Dovecot (``mbox_from_parse()``) do it: the line must end in
a ctime(3)-style date, ``Www Mmm dd hh:mm[:ss] [zone] yyyy [zone]``. ``Content-Length`` is
ignored (mutt trusts it only when it agrees with a valid separator; a wrong one must not
hide a message from the scan).

Quoting (RFC 4155, and the mboxrd convention): writers prefix body lines matching
``^>*From `` with one more ``>``; readers remove one ``>`` from lines matching ``^>+From ``.
For an mboxrd file that is exact; for an mboxo file (which quoted only ``^From ``) it is what
every mboxo reader does too. Untouched messages are never re-quoted: a rewrite copies
their bytes as they are.

It lives in scan/ because both doors need it: the mailbox readers split saved mailboxes
with it, and the engine recognises an mbox that arrives as an attachment.
"""

from __future__ import annotations

import re

# A separator longer than this is not one (mutt reads lines into a 1 KiB buffer too).
MAX_FROM_LINE = 1024

_DAY = rb"(?i:mon|tue|wed|thu|fri|sat|sun)"
_MONTH = rb"(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
_ZONE = rb"(?:[A-Za-z]{1,5}|[+-]\d{4})"
# The date at the end of a From_ line. The sender before it may be empty, quoted with spaces
# ("From "a b"@x ...") or odd, so the date is matched from the end of the line, as mutt does.
_DATE_AT_END = re.compile(
    rb"(?:^|[ \t])(?:" + _DAY + rb"[ \t]+)?" + _MONTH + rb"[ \t]+\d{1,2}[ \t]+\d{1,2}:\d{2}(?::\d{2})?"
    rb"(?:[ \t]+" + _ZONE + rb")?[ \t]+\d{2,4}(?:[ \t]+" + _ZONE + rb")?"
    rb"(?:[ \t]+remote from[ \t]+\S+)?[ \t]*\r?$"  # UUCP "remote from HOST" suffix
)
_QUOTED_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)
_TO_QUOTE = re.compile(rb"^(>*From )", re.MULTILINE)


def is_from_line(line: bytes) -> bool:
    """True when ``line`` (without or with its ``\\n``) is an mbox message separator."""
    if not line.startswith(b"From ") or len(line) > MAX_FROM_LINE:
        return False
    return _DATE_AT_END.search(line.rstrip(b"\n"), 5) is not None


def is_from_line_at(data: bytes, start: int) -> bool:
    """True when the line of ``data`` starting at ``start`` is a separator (no slice is copied)."""
    if data[start:start + 5] != b"From ":
        return False
    end = data.find(b"\n", start, start + MAX_FROM_LINE)
    if end == -1:
        if len(data) - start >= MAX_FROM_LINE:
            return False
        end = len(data)
    return _DATE_AT_END.search(data, start + 5, end) is not None


def unquote(content: bytes) -> bytes:
    """The message as it was delivered: one ``>`` removed from each ``^>+From `` line."""
    if b">From " not in content:  # every quoted line contains it
        return content
    return _QUOTED_FROM.sub(rb"\1", content)


def quote(message: bytes) -> bytes:
    """The message made safe to store in an mbox (mboxrd quoting)."""
    if b"From " not in message:
        return message
    return _TO_QUOTE.sub(rb">\1", message)
