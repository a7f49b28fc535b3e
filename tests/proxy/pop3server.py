"""A small asyncio POP3 server for loopback tests, with switches for hostile behaviour.

It serves a fixed list of messages (RFC 1939: USER/PASS, STAT, LIST, UIDL, RETR, TOP, DELE,
NOOP, RSET, QUIT, CAPA, STLS with a given TLS context). ``hostile`` makes it misbehave on RETR:
"endless-line", "huge-claim", "garbage", "drop-mid-message"; "inject-after-stls" sends a fake
answer right behind its +OK to STLS.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field

from mailguard.protocols.pop3_framing import cut_top, stuff


class LoopbackServer:
    """A test server on 127.0.0.1 (a free port, in ``port``), owned by an ``async with`` block;
    ``_serve`` answers each connection, which is closed when it returns or the peer goes away."""

    port: int = 0
    _server: asyncio.Server | None = None

    def _implicit_tls(self) -> ssl.SSLContext | None:
        """TLS from the first byte when not None."""
        return None

    async def __aenter__(self):  # noqa: ANN204 - the subclass itself
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0, ssl=self._implicit_tls(), backlog=2048)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


@dataclass
class Pop3TestServer(LoopbackServer):
    messages: list[bytes]
    tls: ssl.SSLContext | None = None          # STLS offered when set
    implicit_tls: bool = False                 # POP3S: TLS from the first byte
    hostile: str = ""
    log: list[bytes] = field(default_factory=list)   # every command line received
    deleted: set[int] = field(default_factory=set)
    committed_deletes: list[int] = field(default_factory=list)

    def _implicit_tls(self) -> ssl.SSLContext | None:
        return self.tls if self.implicit_tls else None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"+OK test POP3 server ready <1.2@test>\r\n")
        authed = False
        deleted: set[int] = set()
        while True:
            line = await reader.readline()
            if not line:
                return
            self.log.append(line)
            words = line.strip().split()
            verb = words[0].upper() if words else b""
            args = words[1:]
            if verb == b"CAPA":
                capa = b"TOP\r\nUSER\r\nUIDL\r\nPIPELINING\r\nSASL PLAIN GSSAPI\r\n"
                if self.tls is not None and not self.implicit_tls and writer.get_extra_info("ssl_object") is None:
                    capa += b"STLS\r\n"
                writer.write(b"+OK\r\n" + capa + b".\r\n")
            elif verb == b"STLS":
                if self.hostile == "inject-after-stls":
                    writer.write(b"+OK go\r\n+OK injected\r\n")
                    await writer.drain()
                    continue
                writer.write(b"+OK Begin TLS\r\n")
                await writer.drain()
                await writer.start_tls(self.tls)
            elif verb == b"USER":
                writer.write(b"+OK\r\n")
            elif verb == b"PASS":
                authed = True
                writer.write(b"+OK logged in\r\n")
            elif not authed and verb != b"QUIT":
                writer.write(b"-ERR log in first\r\n")
            elif verb == b"STAT":
                alive = [i for i in range(1, len(self.messages) + 1) if i not in deleted]
                writer.write(b"+OK %d %d\r\n" % (len(alive), sum(len(self.messages[i - 1]) for i in alive)))
            elif verb == b"LIST" and not args:
                body = b"".join(b"%d %d\r\n" % (i, len(m)) for i, m in enumerate(self.messages, 1) if i not in deleted)
                writer.write(b"+OK\r\n" + body + b".\r\n")
            elif verb == b"LIST":
                n = int(args[0])
                if not 1 <= n <= len(self.messages) or n in deleted:
                    writer.write(b"-ERR no such message\r\n")
                else:
                    writer.write(b"+OK %d %d\r\n" % (n, len(self.messages[n - 1])))
            elif verb == b"UIDL" and not args:
                body = b"".join(b"%d uid-%d\r\n" % (i, i) for i in range(1, len(self.messages) + 1) if i not in deleted)
                writer.write(b"+OK\r\n" + body + b".\r\n")
            elif verb in (b"RETR", b"TOP"):
                n = int(args[0])
                if not 1 <= n <= len(self.messages) or n in deleted:
                    writer.write(b"-ERR no such message\r\n")
                    continue
                message = self.messages[n - 1]
                if verb == b"TOP":
                    message = cut_top(message, int(args[1]))
                if await self._hostile_retr(writer, message):
                    return
                writer.write(b"+OK %d octets\r\n" % len(message) + stuff(message))
            elif verb == b"DELE":
                deleted.add(int(args[0]))
                writer.write(b"+OK deleted\r\n")
            elif verb == b"RSET":
                deleted.clear()
                writer.write(b"+OK\r\n")
            elif verb == b"NOOP":
                writer.write(b"+OK\r\n")
            elif verb == b"QUIT":
                self.committed_deletes.extend(sorted(deleted))
                writer.write(b"+OK bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"-ERR unknown command\r\n")
            await writer.drain()

    async def _hostile_retr(self, writer: asyncio.StreamWriter, message: bytes) -> bool:
        """Misbehave as asked; True when the connection should end."""
        if self.hostile == "endless-line":
            writer.write(b"+OK ")
            for _ in range(4096):
                writer.write(b"x" * 65536)
                await writer.drain()
            return True
        if self.hostile == "huge-claim":
            writer.write(b"+OK 99999999999999 octets\r\n" + stuff(message))
            return False
        if self.hostile == "garbage":
            writer.write(b"\x00\xffgarbage\r\n")
            return False
        if self.hostile == "drop-mid-message":
            writer.write(b"+OK %d octets\r\n" % len(message) + stuff(message)[: len(message) // 2])
            await writer.drain()
            writer.transport.abort()
            return True
        return False
