"""A scripted IMAP server for the proxy's pitfall tests: just enough IMAP, plus hooks to misbehave.

It answers CAPABILITY, LOGIN, AUTHENTICATE PLAIN, SELECT/EXAMINE, FETCH/UID FETCH (UID, FLAGS,
RFC822.SIZE, ENVELOPE, BODYSTRUCTURE as a stub, BODY.PEEK[]), UID STORE, NOOP, IDLE, STARTTLS
and LOGOUT. ``inject`` puts extra bytes before the tagged answer of a command name (unsolicited
responses), ``on_starttls`` replaces the STARTTLS answer (response injection).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field

from mailguard.protocols.imap.commands import (
    AppendPart, Command, CommandReader, ContinuationData, LiteralChunk, Reply,
)
from mailguard.protocols.imap.fetch import SequenceSet, parse_fetch
from mailguard.protocols.events import NEED_DATA


async def next_command_event(
    machine: CommandReader, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
) -> Command | ContinuationData | AppendPart | LiteralChunk | None:
    """The client's next command event, read from ``reader`` as needed, or None at EOF. A
    ``Reply`` the command reader owes the client (a "+" to a synchronising literal) is written
    to ``writer`` on the way."""
    while True:
        event = machine.next_event()
        if event is NEED_DATA:
            data = await reader.read(65536)
            if not data:
                return None
            machine.receive_data(data)
        elif isinstance(event, Reply):
            writer.write(event.data)
        else:
            return event


@dataclass
class MockImapServer:
    messages: list[bytes]
    greeting: bytes = b"* OK [CAPABILITY IMAP4rev1 LITERAL+ IDLE AUTH=PLAIN] mock ready\r\n"
    capabilities: bytes = b"IMAP4rev1 LITERAL+ IDLE AUTH=PLAIN"
    login_code: bytes = b""
    uidvalidity: int = 42
    first_uid: int = 1
    #: command name -> bytes sent just before its tagged OK
    inject: dict[str, bytes] = field(default_factory=dict)
    #: command name -> bytes sent just before its untagged FETCH answers
    inject_first: dict[str, bytes] = field(default_factory=dict)
    #: answer to STARTTLS (after the tag), and the TLS context to switch to on OK
    starttls_answer: bytes = b"OK Begin TLS now\r\n"
    tls: ssl.SSLContext | None = None
    #: answer FETCH items in the reverse of the requested order
    reverse_items: bool = False
    #: answer BODY[]<o.l> with the whole BODY[], as a server that ignores partials does
    ignore_partial: bool = False
    #: the answer (after the tag) to an APPEND's synchronising literal instead of "+"
    append_refusal: bytes = b""
    _appending: bytes = b""
    seen: set[int] = field(default_factory=set)
    received: list[bytes] = field(default_factory=list)
    port: int = 0

    async def start(self) -> asyncio.base_events.Server:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    def uid(self, seq: int) -> int:
        return self.first_uid + seq - 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        machine = CommandReader()
        writer.write(self.greeting)
        try:
            while (event := await next_command_event(machine, reader, writer)) is not None:
                if isinstance(event, (AppendPart, LiteralChunk)):
                    if not await self._append(event, writer, machine):
                        return
                    continue
                self.received.append(event.raw)
                if isinstance(event, ContinuationData):
                    if event.raw.strip().upper() == b"DONE":
                        writer.write(event.tag + b" OK IDLE done\r\n")
                        machine.command_completed(event.tag)
                    else:
                        writer.write(event.tag + b" OK authenticated\r\n")
                        machine.command_completed(event.tag)
                    continue
                if not await self._command(event, writer, machine):
                    return
                await writer.drain()
        finally:
            writer.close()

    async def _append(self, event: AppendPart | LiteralChunk, writer: asyncio.StreamWriter,
                      machine: CommandReader) -> bool:
        """APPEND, as the reader hands it out: "+" to each synchronising literal (or the
        ``append_refusal`` instead of the first), the whole command kept in ``received``."""
        self._appending += event.data
        if isinstance(event, LiteralChunk) or event.literal is not None:
            if isinstance(event, AppendPart) and event.literal is not None and event.literal.sync:
                if self.append_refusal and event.first:
                    writer.write(event.tag + b" " + self.append_refusal)
                    machine.literal_refused()
                    self._appending = b""
                else:
                    writer.write(b"+ go ahead\r\n")
                await writer.drain()
            return True
        self.received.append(self._appending)
        self._appending = b""
        writer.write(event.tag + b" OK [APPENDUID 42 99] APPEND completed\r\n")
        await writer.drain()
        return True

    async def _command(self, command: Command, writer: asyncio.StreamWriter, machine: CommandReader) -> bool:
        tag, name = command.tag, command.name
        out = b""
        if name == "CAPABILITY":
            out += b"* CAPABILITY " + self.capabilities + b"\r\n"
        elif name == "LOGIN":
            writer.write(tag + b" OK " + self.login_code + b"Logged in\r\n")
            return True
        elif name == "AUTHENTICATE":
            writer.write(b"+ \r\n")
            return True
        elif name == "IDLE":
            writer.write(b"+ idling\r\n" + self.inject.get("IDLE", b""))
            return True
        elif name in ("SELECT", "EXAMINE"):
            out += b"* %d EXISTS\r\n* OK [UIDVALIDITY %d] ok\r\n" % (len(self.messages), self.uidvalidity)
        elif name in ("FETCH", "UID FETCH"):
            out += self.inject_first.get(name, b"") + self._fetch(command)
        elif name == "UID STORE":
            uids = SequenceSet(command.args.split()[0])
            for seq in range(1, len(self.messages) + 1):
                if self.uid(seq) in uids:
                    self.seen.add(self.uid(seq))
                    out += b"* %d FETCH (UID %d FLAGS (\\Seen))\r\n" % (seq, self.uid(seq))
        elif name == "STARTTLS":
            writer.write(tag + b" " + self.starttls_answer)
            await writer.drain()
            if self.tls is not None and self.starttls_answer.startswith(b"OK"):
                await writer.start_tls(self.tls)
                machine.resume()
            return True
        elif name == "LOGOUT":
            writer.write(b"* BYE bye\r\n" + tag + b" OK done\r\n")
            return False
        out += self.inject.get(name, b"")
        writer.write(out + tag + b" OK " + name.encode() + b" completed\r\n")
        return True

    def _fetch(self, command: Command) -> bytes:
        request = parse_fetch(command)
        wanted = SequenceSet(request.sequence_set)
        out = b""
        for seq, message in enumerate(self.messages, start=1):
            uid = self.uid(seq)
            if (uid if request.uid else seq) not in wanted:
                continue
            items = []
            for att in request.atts:
                if att.name == "UID":
                    items.append(b"UID %d" % uid)
                elif att.name == "FLAGS":
                    items.append(b"FLAGS (%s)" % (b"\\Seen" if uid in self.seen else b""))
                elif att.name == "RFC822.SIZE":
                    items.append(b"RFC822.SIZE %d" % len(message))
                elif att.name == "ENVELOPE":
                    items.append(b'ENVELOPE (NIL "original subject" NIL NIL NIL NIL NIL NIL NIL NIL)')
                elif att.name == "BODYSTRUCTURE":
                    items.append(b'BODYSTRUCTURE ("text" "plain" NIL NIL NIL "7bit" %d 1 NIL NIL NIL NIL)' % len(message))
                elif att.name in ("BODY.PEEK", "BODY") and att.section == b"":
                    if att.origin is not None and att.length is not None and not self.ignore_partial:
                        window = message[att.origin : att.origin + att.length]
                        items.append(b"BODY[]<%d> {%d}\r\n" % (att.origin, len(window)) + window)
                    else:
                        items.append(b"BODY[] {%d}\r\n" % len(message) + message)
                    if att.name == "BODY":
                        self.seen.add(uid)
            if request.uid and not any(a.name == "UID" for a in request.atts):
                items.insert(0, b"UID %d" % uid)
            if self.reverse_items:
                items.reverse()
            out += b"* %d FETCH (" % seq + b" ".join(items) + b")\r\n"
        return out
