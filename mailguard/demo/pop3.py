"""The demo's POP3 server (RFC 1939, with CAPA from RFC 2449): just enough for poplib and fetchmail.

Any user name and password are accepted. The mailbox is read-only: DELE is refused, so the demo
can show that the server still holds every message after the fetch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mailguard.demo.lines import serve_lines
from mailguard.demo.mailbox import DemoMessage

# RFC 2449 §4: a command line is at most 255 octets; we allow a little slack for sloppy clients.
MAX_COMMAND_LINE = 512


def dot_stuff(message: bytes) -> bytes:
    """A multi-line response body (RFC 1939 §3): lines starting with '.' get one more, and the
    terminating line is '.'."""
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    lines = message.split(b"\r\n")[:-1]
    stuffed = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    return stuffed + b".\r\n"


def top(message: bytes, body_lines: int) -> bytes:
    """Headers, the blank line and ``body_lines`` lines of the body (RFC 1939 §7, TOP)."""
    head, sep, body = message.partition(b"\r\n\r\n")
    return head + sep + b"".join(body.splitlines(keepends=True)[:body_lines])


class Pop3Session:
    def __init__(self, mailbox: list[DemoMessage]) -> None:
        self.mailbox = mailbox
        self.user: str | None = None
        self.authenticated = False

    def answer(self, line: str) -> tuple[bytes, bool]:
        """The response to one command line, and whether to close afterwards."""
        verb, _, argument = line.strip().partition(" ")
        verb = verb.upper()
        if verb == "QUIT":
            return b"+OK demo server signing off\r\n", True
        if verb == "CAPA":
            return b"+OK capability list follows\r\nUSER\r\nTOP\r\nUIDL\r\n.\r\n", False
        if verb == "NOOP":
            return b"+OK\r\n", False
        if not self.authenticated:
            return self._authorization(verb, argument), False
        handler = {
            "STAT": self._stat, "LIST": self._list, "UIDL": self._uidl, "RETR": self._retr,
            "TOP": self._top, "DELE": self._dele, "RSET": lambda _: b"+OK\r\n",
        }.get(verb)
        if handler is None:
            return b"-ERR unknown command\r\n", False
        return handler(argument), False

    def _authorization(self, verb: str, argument: str) -> bytes:
        if verb == "USER" and argument:
            self.user = argument
            return b"+OK send PASS\r\n"
        if verb == "PASS" and self.user is not None:
            self.authenticated = True
            return f"+OK {len(self.mailbox)} messages\r\n".encode()
        return b"-ERR authenticate first (USER, PASS)\r\n"

    def _message(self, argument: str) -> tuple[int, DemoMessage] | None:
        number = argument.split(" ", 1)[0]
        if not number.isdigit() or not 1 <= int(number) <= len(self.mailbox):
            return None
        return int(number), self.mailbox[int(number) - 1]

    def _stat(self, _: str) -> bytes:
        total = sum(len(m.raw) for m in self.mailbox)
        return f"+OK {len(self.mailbox)} {total}\r\n".encode()

    def _list(self, argument: str) -> bytes:
        return self._listing(argument, lambda message: len(message.raw), f"+OK {len(self.mailbox)} messages")

    def _uidl(self, argument: str) -> bytes:
        return self._listing(argument, lambda message: message.uid, "+OK")

    def _listing(self, argument: str, value: Callable[[DemoMessage], object], status: str) -> bytes:
        """LIST and UIDL: one message's line, or every message's (RFC 1939 §5, §7)."""
        if argument:
            found = self._message(argument)
            return f"+OK {found[0]} {value(found[1])}\r\n".encode() if found else b"-ERR no such message\r\n"
        lines = "".join(f"{n} {value(message)}\r\n" for n, message in enumerate(self.mailbox, 1))
        return f"{status}\r\n{lines}.\r\n".encode()

    def _retr(self, argument: str) -> bytes:
        found = self._message(argument)
        if found is None:
            return b"-ERR no such message\r\n"
        return f"+OK {len(found[1].raw)} octets\r\n".encode() + dot_stuff(found[1].raw)

    def _top(self, argument: str) -> bytes:
        found = self._message(argument)
        parts = argument.split()
        if found is None or len(parts) != 2 or not parts[1].isdigit():
            return b"-ERR usage: TOP msg n\r\n"
        return b"+OK\r\n" + dot_stuff(top(found[1].raw, int(parts[1])))

    def _dele(self, _: str) -> bytes:
        return b"-ERR the demo mailbox is read-only\r\n"


async def serve_pop3(
    mailbox: list[DemoMessage], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await serve_lines(Pop3Session(mailbox), b"+OK mailguard demo POP3 server ready\r\n", "ascii", reader, writer)
