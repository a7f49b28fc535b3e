"""A scriptable misbehaving IMAP server: honest enough to be used, hostile where the script says.

It listens on 127.0.0.1 (asyncio, in the test's loop) and answers CAPABILITY, LOGIN, SELECT,
EXAMINE, NOOP, IDLE, FETCH/UID FETCH (UID, FLAGS, RFC822.SIZE, INTERNALDATE, PREVIEW, the whole
message as BODY[]/RFC822 with partials), UID STORE, LOGOUT, and NO to anything else. A ``Script``
says what else to send, and when:

- ``before``: (pattern, bytes) — untagged bytes sent before the answer of every command whose
  text (after the tag) matches the pattern, e.g. an unsolicited FETCH after NOOP;
- ``in_idle``: bytes pushed once IDLE's continuation request has gone out;
- ``fetch_extra``: items added to every FETCH response the server sends, e.g. ``X-EVIL {n}...``;
- ``claimed_size``: the RFC822.SIZE it claims, whatever the message's real size;
- ``answers``: (pattern, bytes) — the whole answer to a matching command (``%(tag)s`` is the tag);
- ``greeting``: the bytes it greets with instead of its OK.

Every command it receives is kept in ``received``, so a test can say what never reached it.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

from mailguard.protocols.imap.commands import Command, CommandReader, ContinuationData
from mailguard.protocols.imap.fetch import SequenceSet, parse_fetch
from tests.protocols.imap.mock_server import next_command_event


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


@dataclass
class Script:
    before: list[tuple[bytes, bytes]] = field(default_factory=list)
    in_idle: bytes = b""
    fetch_extra: bytes = b""
    claimed_size: int | None = None
    answers: list[tuple[bytes, bytes]] = field(default_factory=list)
    capabilities: bytes = b"IMAP4rev1 LITERAL+ IDLE UIDPLUS PREVIEW URLAUTH AUTH=PLAIN"
    greeting: bytes | None = None


class ScriptedImapServer:
    def __init__(self, messages: list[bytes], script: Script | None = None) -> None:
        self.messages = messages
        self.script = script or Script()
        self.received: list[bytes] = []
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> "ScriptedImapServer":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await self._server.wait_closed()

    def reached(self, word: bytes) -> bool:
        """Whether any command holding ``word`` (case-insensitive) reached this server."""
        return any(word.upper() in raw.upper() for raw in self.received)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        machine = CommandReader()
        greeting = self.script.greeting
        writer.write(greeting or b"* OK [CAPABILITY " + self.script.capabilities + b"] scripted server ready\r\n")
        try:
            while (event := await next_command_event(machine, reader, writer)) is not None:
                self.received.append(event.raw)
                if isinstance(event, ContinuationData):
                    writer.write(event.tag + b" OK IDLE done\r\n")
                    machine.command_completed(event.tag)
                elif not self._answer(event, writer):
                    await writer.drain()
                    return
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    def _answer(self, command: Command, writer: asyncio.StreamWriter) -> bool:
        tag, name = command.tag, command.name
        text = command.raw[len(tag) + 1 :]
        for pattern, answer in self.script.answers:
            if re.search(pattern, text, re.IGNORECASE):
                writer.write(answer.replace(b"%(tag)s", tag))
                return True
        out = b"".join(extra for pattern, extra in self.script.before if re.search(pattern, text, re.IGNORECASE))
        if name == "IDLE":
            writer.write(out + b"+ idling\r\n" + self.script.in_idle)
            return True
        if name == "LOGOUT":
            writer.write(out + b"* BYE bye\r\n" + tag + b" OK LOGOUT completed\r\n")
            return False
        if name == "CAPABILITY":
            out += b"* CAPABILITY " + self.script.capabilities + b"\r\n"
        elif name in ("SELECT", "EXAMINE"):
            out += b"* %d EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT %d] ok\r\n" % (
                len(self.messages), len(self.messages) + 1)
        elif name in ("FETCH", "UID FETCH"):
            out += self._fetch(command)
        elif name == "UID STORE":
            out += b"".join(b"* %d FETCH (UID %d FLAGS (\\Seen))\r\n" % (n, n)
                            for n in range(1, len(self.messages) + 1) if n in SequenceSet(command.args.split()[0]))
        elif name not in ("LOGIN", "NOOP", "CHECK"):
            writer.write(out + tag + b" NO " + name.encode() + b" is not scripted\r\n")
            return True
        writer.write(out + tag + b" OK " + name.encode() + b" completed\r\n")
        return True

    def _fetch(self, command: Command) -> bytes:
        request = parse_fetch(command)
        wanted = SequenceSet(request.sequence_set)
        out = b""
        for number, message in enumerate(self.messages, start=1):
            if number not in wanted:  # UID n is message n here
                continue
            items: list[bytes] = [b"UID %d" % number] if request.uid else []
            for att in request.atts:
                if att.name == "UID" and not request.uid:
                    items.append(b"UID %d" % number)
                elif att.name == "FLAGS":
                    items.append(b"FLAGS ()")
                elif att.name == "INTERNALDATE":
                    items.append(b'INTERNALDATE "01-Jan-2024 10:00:00 +0000"')
                elif att.name == "RFC822.SIZE":
                    claimed = self.script.claimed_size
                    items.append(b"RFC822.SIZE %d" % (len(message) if claimed is None else claimed))
                elif att.name == "PREVIEW":
                    items.append(b"PREVIEW " + literal(message[-200:]))
                elif att.carries_content and not att.section:
                    part = message
                    if att.origin is not None:
                        part = message[att.origin : att.origin + (att.length or len(message))]
                    items.append(att.response_name() + b" " + literal(part))
            if self.script.fetch_extra:
                items.append(self.script.fetch_extra)
            out += b"* %d FETCH (" % number + b" ".join(items) + b")\r\n"
        return out
