"""The loop both demo servers share: greet, then answer one command line at a time."""

from __future__ import annotations

import asyncio
from typing import Protocol

# A demo client that says nothing for this long is dropped.
IDLE_TIMEOUT_SECONDS = 600.0


class LineSession(Protocol):
    def answer(self, line: str) -> tuple[bytes, bool]:
        """The response to one command line, and whether to close after it."""
        ...


async def serve_lines(session: LineSession, greeting: bytes, encoding: str,
                      reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        writer.write(greeting)
        await writer.drain()
        while True:
            line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT_SECONDS)
            if not line:
                break
            response, close = session.answer(line.decode(encoding, "replace"))
            writer.write(response)
            await writer.drain()
            if close:
                break
    except (asyncio.TimeoutError, ValueError, ConnectionError):
        pass  # idle, over-long line (StreamReader limit) or the client went away
    finally:
        writer.close()
