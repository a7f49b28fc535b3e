"""A scriptable, misbehaving POP3 server for loopback tests: it answers each command line with
the exact bytes a test gives it, however broken, and can hold its greeting until the client has
spoken. Listens on 127.0.0.1; an ``async with`` block owns it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from tests.proxy.pop3server import LoopbackServer

# Answers to the commands a test does not script: log in with anything, refuse the rest (so the
# engine's read-ahead, which starts with LIST, stays off unless a test scripts LIST).
_DEFAULTS = {b"USER": b"+OK\r\n", b"PASS": b"+OK logged in\r\n", b"QUIT": b"+OK bye\r\n"}


@dataclass
class ScriptedPop3(LoopbackServer):
    #: command line as the client sends it, without CRLF ("RETR 1") -> the raw answer
    answers: dict[bytes, bytes] = field(default_factory=dict)
    greeting: bytes = b"+OK scripted server ready\r\n"
    #: greet only after the client's first line has arrived (a client that speaks first)
    greet_after_client: bool = False
    received: list[bytes] = field(default_factory=list)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = b""
        if self.greet_after_client:
            first = await reader.readline()
        writer.write(self.greeting)
        while True:
            line = first or await reader.readline()
            first = b""
            if not line:
                return
            self.received.append(line)
            command = line.rstrip(b"\r\n")
            verb = command.split(b" ", 1)[0].upper()
            writer.write(self.answers.get(command, _DEFAULTS.get(verb, b"-ERR not scripted\r\n")))
            await writer.drain()
            if verb == b"QUIT":
                return
