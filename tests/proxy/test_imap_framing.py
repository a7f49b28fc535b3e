"""A server that frames its responses two ways, against imaplib through the proxy
(docs/pitfalls.md#responses-at-any-time): the session ends, and nothing reaches imaplib as data."""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import threading
from collections.abc import Iterator

import pytest

from mailguard.proxy.imap import ImapContext
from mailguard.proxy.imap_listener import ImapRoute
from mailguard.scanpool.pool import ScanPool
from mailguard.scan.policy import Policy
from tests.protocols.imap.harness import ProxyThread
from tests.protocols.imap.messages import EICAR, SIMPLE
from tests.protocols.imap.mock_server import MockImapServer

pytestmark = pytest.mark.timeout(60)

VIRUS = b"Subject: invoice\r\n\r\n" + EICAR + b"\r\n"


def status_literal_attack() -> bytes:
    """``* OK {K}`` whose K octets open an unknown response with a literal: the proxy, reading
    the OK as one line, sees the FETCH below inside that unknown response's literal; imaplib
    reads K octets, then the FETCH as a response of its own, and hands its BODY[] to its caller."""
    hidden_fetch = b"* 1 FETCH (BODY[] {%d}\r\n" % len(VIRUS) + VIRUS + b")\r\n"
    inner = b"x\r\n" + hidden_fetch
    opener = b"* X-EVIL {%d}\r\n" % len(inner)
    return b"* OK {%d}\r\n" % len(opener) + opener + inner + b"* 1 EXISTS\r\n"


@pytest.fixture
def pool() -> Iterator[ScanPool]:
    pool = ScanPool(Policy(), None, kind="thread", workers=1)
    yield pool
    pool.close()


@contextlib.contextmanager
def serving(server: MockImapServer) -> Iterator[None]:
    """The scripted server on an event loop in a thread of its own, listening at ``server.port``."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    listener = asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        yield
    finally:
        async def stop() -> None:
            listener.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_a_literal_in_a_status_response_ends_the_session_before_imaplib_sees_the_message(pool: ScanPool) -> None:
    server = MockImapServer([SIMPLE], inject={"NOOP": status_literal_attack()})
    with serving(server), ProxyThread(ImapRoute("127.0.0.1", server.port),
                                      lambda: ImapContext(scanner=pool, server_id="hostile")) as proxy:
        client = imaplib.IMAP4("127.0.0.1", proxy.port, timeout=30)
        client.login("alice", "pass")
        client.select("INBOX")
        with pytest.raises(imaplib.IMAP4.abort):  # the proxy's BYE; before, NOOP was OK and
            client.noop()  # the FETCH with the EICAR message sat among the untagged responses
        held = repr(client.untagged_responses).encode()
        client.shutdown()
    assert b"EICAR" not in held
    assert b"grammar allows none" in held  # the BYE says why
