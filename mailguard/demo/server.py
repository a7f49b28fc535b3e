"""Both demo servers on 127.0.0.1 ephemeral ports, started and stopped together."""

from __future__ import annotations

import asyncio
import functools

from mailguard.demo.imap import MAX_COMMAND_LINE as IMAP_MAX_LINE
from mailguard.demo.imap import serve_imap
from mailguard.demo.mailbox import DemoMessage, sample_mailbox
from mailguard.demo.pop3 import MAX_COMMAND_LINE as POP3_MAX_LINE
from mailguard.demo.pop3 import serve_pop3

HOST = "127.0.0.1"


class DemoServer:
    """``await start()`` then read ``pop3_port`` / ``imap_port``; ``await stop()`` closes both."""

    def __init__(self, mailbox: list[DemoMessage] | None = None) -> None:
        self.mailbox = mailbox if mailbox is not None else sample_mailbox()
        self._servers: list[asyncio.base_events.Server] = []
        self.pop3_port = 0
        self.imap_port = 0

    async def start(self) -> None:
        pop3 = await asyncio.start_server(
            functools.partial(serve_pop3, self.mailbox), HOST, 0, limit=POP3_MAX_LINE
        )
        imap = await asyncio.start_server(
            functools.partial(serve_imap, self.mailbox), HOST, 0, limit=IMAP_MAX_LINE
        )
        self._servers = [pop3, imap]
        self.pop3_port = pop3.sockets[0].getsockname()[1]
        self.imap_port = imap.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()
        self._servers = []
