"""Fixtures shared by the command tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from mailguard.demo.server import DemoServer


@pytest.fixture
def demo_server() -> Iterator[DemoServer]:
    """The demo POP3/IMAP server on 127.0.0.1, running on an event loop in a thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = DemoServer()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
