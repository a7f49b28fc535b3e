"""Running the IMAP proxy in a thread of its own, so blocking clients (imaplib, fetchmail) can use it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future

from mailguard.proxy.imap import ImapContext
from mailguard.proxy.imap_listener import ImapRoute, start_imap_listener


class ProxyThread:
    def __init__(self, route: ImapRoute, context_for: Callable[[], ImapContext]) -> None:
        self.route = route
        self.context_for = context_for
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def __enter__(self) -> "ProxyThread":
        self._thread.start()
        future: Future = asyncio.run_coroutine_threadsafe(
            start_imap_listener(self.route, self.context_for), self.loop
        )
        self._server = future.result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def call(self, coroutine, timeout: float = 30):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            await asyncio.sleep(0)

        self.call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
