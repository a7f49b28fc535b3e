"""The demo's IMAP server (a small read-only subset of RFC 3501): enough for imaplib.

CAPABILITY, NOOP, LOGIN (any user), SELECT/EXAMINE INBOX, FETCH and UID FETCH of RFC822,
RFC822.SIZE, RFC822.HEADER, BODY[]/BODY.PEEK[] (whole message or HEADER), UID, FLAGS; LOGOUT.
Commands with literals and everything else get a tagged BAD.
"""

from __future__ import annotations

import asyncio
import re

from mailguard.demo.lines import serve_lines
from mailguard.demo.mailbox import DemoMessage

# RFC 7162 §4 recommends servers accept command lines of at least 8192 octets.
MAX_COMMAND_LINE = 8192
UIDVALIDITY = 20260302

_FETCH_ITEM = re.compile(r"BODY(?:\.PEEK)?\[[A-Z0-9.]*\]|[A-Z0-9.]+")


def parse_sequence_set(text: str, largest: int) -> list[int]:
    """``1``, ``2:4``, ``1:*``, ``1,3:*`` -> message numbers (RFC 3501 §9, sequence-set)."""
    numbers: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition(":")
        low = largest if first == "*" else int(first)
        high = low if not last else (largest if last == "*" else int(last))
        low, high = min(low, high), max(low, high)
        numbers.update(n for n in range(low, high + 1) if 1 <= n <= largest)
    return sorted(numbers)


class DemoImapSession:
    def __init__(self, mailbox: list[DemoMessage]) -> None:
        self.mailbox = mailbox
        self.authenticated = False
        self.selected = False

    def answer(self, line: str) -> tuple[bytes, bool]:
        """The responses to one command line, and whether to close afterwards."""
        tag, _, rest = line.rstrip("\r\n").partition(" ")
        command, _, arguments = rest.partition(" ")
        command = command.upper()
        if not tag or not command:
            return b"* BAD empty command\r\n", False
        if re.search(r"\{\d+\+?\}$", line.rstrip("\r\n")):
            return f"{tag} BAD literals are not supported by the demo server\r\n".encode(), False
        if command == "LOGOUT":
            return f"* BYE demo server signing off\r\n{tag} OK LOGOUT completed\r\n".encode(), True
        if command == "CAPABILITY":
            return f"* CAPABILITY IMAP4rev1\r\n{tag} OK CAPABILITY completed\r\n".encode(), False
        if command == "NOOP":
            return f"{tag} OK NOOP completed\r\n".encode(), False
        if command == "LOGIN":
            self.authenticated = True
            return f"{tag} OK LOGIN completed\r\n".encode(), False
        if not self.authenticated:
            return f"{tag} NO LOGIN first\r\n".encode(), False
        if command in ("SELECT", "EXAMINE"):
            return self._select(tag, arguments, read_only=command == "EXAMINE"), False
        if not self.selected:
            return f"{tag} BAD SELECT a mailbox first\r\n".encode(), False
        if command == "FETCH":
            return self._fetch(tag, arguments, by_uid=False), False
        if command == "UID" and arguments.upper().startswith("FETCH "):
            return self._fetch(tag, arguments[6:], by_uid=True), False
        return f"{tag} BAD command not supported by the demo server\r\n".encode(), False

    def _select(self, tag: str, arguments: str, read_only: bool) -> bytes:
        if arguments.strip('"').upper() != "INBOX":
            return f"{tag} NO only INBOX exists here\r\n".encode()
        self.selected = True
        return (
            f"* {len(self.mailbox)} EXISTS\r\n* 0 RECENT\r\n* FLAGS (\\Seen)\r\n"
            f"* OK [UIDVALIDITY {UIDVALIDITY}] UIDs valid\r\n"
            f"* OK [UIDNEXT {len(self.mailbox) + 1}] next UID\r\n"
            # imaplib refuses a SELECT answered READ-ONLY; nothing here changes a message anyway.
            f"{tag} OK [{'READ-ONLY' if read_only else 'READ-WRITE'}] INBOX selected\r\n"
        ).encode()

    def _fetch(self, tag: str, arguments: str, by_uid: bool) -> bytes:
        sequence, _, items_text = arguments.partition(" ")
        items = _FETCH_ITEM.findall(items_text.upper())
        if by_uid and "UID" not in items:
            items.append("UID")  # RFC 3501 §6.4.8: UID FETCH answers always carry the UID
        try:
            numbers = parse_sequence_set(sequence, len(self.mailbox))
        except ValueError:
            return f"{tag} BAD invalid sequence set\r\n".encode()
        out: list[bytes] = []
        for number in numbers:  # with UIDs 1..n equal to message numbers, both sets agree
            parts = [self._item(item, number) for item in items]
            if any(part is None for part in parts):
                return f"{tag} BAD fetch item not supported by the demo server\r\n".encode()
            out.append(f"* {number} FETCH (".encode() + b" ".join(parts) + b")\r\n")  # type: ignore[arg-type]
        return b"".join(out) + f"{tag} OK FETCH completed\r\n".encode()

    def _item(self, item: str, number: int) -> bytes | None:
        raw = self.mailbox[number - 1].raw
        header = raw.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
        if item == "UID":
            return f"UID {number}".encode()
        if item == "FLAGS":
            return b"FLAGS ()"
        if item == "RFC822.SIZE":
            return f"RFC822.SIZE {len(raw)}".encode()
        literal = {
            "RFC822": ("RFC822", raw),
            "BODY[]": ("BODY[]", raw),
            "BODY.PEEK[]": ("BODY[]", raw),
            "RFC822.HEADER": ("RFC822.HEADER", header),
            "BODY[HEADER]": ("BODY[HEADER]", header),
            "BODY.PEEK[HEADER]": ("BODY[HEADER]", header),
        }.get(item)
        if literal is None:
            return None
        name, data = literal
        return f"{name} {{{len(data)}}}\r\n".encode() + data


async def serve_imap(
    mailbox: list[DemoMessage], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await serve_lines(DemoImapSession(mailbox), b"* OK mailguard demo IMAP server ready\r\n", "utf-8", reader, writer)
