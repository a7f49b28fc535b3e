"""What a file or folder holds, recognised from its content and structure, never its name.

- mbox: the first line is a valid From_ line (see fromline.py).
- message (.eml): the data starts with an RFC 5322 header section: every line up to the
  first empty line is a header field (``name:``, §3.6.8 / §2.2) or a folded continuation,
  and at least one field is one every delivered message has.
- Maildir: a folder with ``cur/`` and ``new/`` (maildir(5)); Maildir++ subfolders are its
  ``.NAME`` folders that are Maildirs themselves.
- MH: a folder with ``.mh_sequences``, or whose files are all message numbers (mh-folders(5);
  ``,N`` and ``#N`` are removed messages).
"""

from __future__ import annotations

import enum
import os
import re

SNIFF_SIZE = 64 * 1024   # bytes read to recognise a file

_FIELD_LINE = re.compile(rb"[!-9;-~]+[ \t]*:")
# Fields found in the header of practically every stored message; a text file that happens
# to start with "Note: ..." has none of them.
_MAIL_FIELDS = frozenset({
    b"from", b"to", b"cc", b"date", b"subject", b"message-id", b"received", b"return-path",
    b"delivered-to", b"mime-version", b"content-type", b"reply-to", b"sender", b"x-mailer",
})
# Thunderbird's folder index sits beside each mbox and is text; it is skipped, not an error.
_MORK_MAGIC = b"// <!-- <mdb:mork:"


class FileFormat(str, enum.Enum):
    """What a file holds, as far as the offline scan cares: a message, a mailbox, or neither."""

    MESSAGE = "eml"
    MBOX = "mbox"
    EMPTY = "empty"            # an empty file: an mbox with no messages
    CLIENT_INDEX = "index"     # a mail client's own index file, not mail
    UNKNOWN = "unknown"


def sniff_bytes(head: bytes, *, complete: bool) -> FileFormat:
    """The kind of data starting with ``head``; ``complete`` says ``head`` is all of it."""
    if not head:
        return FileFormat.EMPTY
    from mailguard.scan.fromline import is_from_line

    first_line = head.split(b"\n", 1)[0]
    if is_from_line(first_line):
        return FileFormat.MBOX
    if head.startswith(_MORK_MAGIC):
        return FileFormat.CLIENT_INDEX
    if _looks_like_header(head, complete):
        return FileFormat.MESSAGE
    return FileFormat.UNKNOWN


def _looks_like_header(head: bytes, complete: bool) -> bool:
    end = re.search(rb"\r?\n\r?\n", head)
    if end is None and not complete:
        return False  # no end of header within SNIFF_SIZE: not a message we recognise
    block = head[:end.start()] if end else head
    if b"\0" in block:
        return False
    names = set()
    for line in block.splitlines():
        if line[:1] in (b" ", b"\t"):
            if not names:
                return False  # a continuation before any field
            continue
        field = _FIELD_LINE.match(line)
        if field is None:
            return False
        names.add(field.group().rstrip(b" \t:").lower())
    return bool(names & _MAIL_FIELDS)


def sniff_file(path: str) -> FileFormat:
    """The kind of the regular file at ``path``; OSError passes through to the caller."""
    with open(path, "rb") as stream:
        head = stream.read(SNIFF_SIZE)
        complete = len(head) < SNIFF_SIZE or not stream.read(1)
    return sniff_bytes(head, complete=complete)


def is_maildir(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "cur")) and os.path.isdir(os.path.join(path, "new"))


def is_mh_folder(path: str, names: list[str]) -> bool:
    """``names`` are the folder's entries (given, so the folder is listed once)."""
    if ".mh_sequences" in names:
        return True
    numbered = False
    for name in names:
        if name.startswith((".", ",", "#")):
            continue
        if not os.path.isfile(os.path.join(path, name)):
            continue
        if not name.isdigit():
            return False
        numbered = True
    return numbered
