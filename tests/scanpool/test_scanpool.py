"""The scan pool: small messages scanned on the loop only when nobody else could wait."""

from __future__ import annotations

import asyncio
import threading

from mailguard.scanpool.pool import INLINE_MAX, ScanPool
from mailguard.scan.policy import Policy
from tests.proxy.harness import clean_message, infected_message, run


def _scan_threads(pool: ScanPool, raw: bytes) -> tuple[str, str]:
    """(status, name of the thread that scanned)."""
    import mailguard.scanpool.job as module

    seen: list[str] = []
    original = module._engine_for

    def spy(policy):  # type: ignore[no-untyped-def]
        seen.append(threading.current_thread().name)
        return original(policy)

    module._engine_for = spy
    try:
        outcome = run(pool.scan(raw, "test"))
    finally:
        module._engine_for = original
    return outcome.status, seen[0]


def test_small_message_scanned_on_the_loop_when_idle() -> None:
    pool = ScanPool(Policy(), None, kind="thread", workers=1)
    try:
        pool.loop_is_idle = lambda: True
        assert _scan_threads(pool, clean_message(1)) == ("clean", threading.current_thread().name)
        status, thread = _scan_threads(pool, infected_message(2))
        assert status == "infected" and thread == threading.current_thread().name
    finally:
        pool.close()


def test_busy_loop_or_large_message_goes_to_the_pool() -> None:
    pool = ScanPool(Policy(), None, kind="thread", workers=1)
    try:
        pool.loop_is_idle = lambda: False  # other sessions live: never stall them
        assert _scan_threads(pool, clean_message(1))[1].startswith("mailguard-scan")
        pool.loop_is_idle = lambda: True
        large = clean_message(1, body_lines=INLINE_MAX // 20)
        assert len(large) > INLINE_MAX
        assert _scan_threads(pool, large)[1].startswith("mailguard-scan")
    finally:
        pool.close()


def test_inline_scan_that_fails_still_gives_an_outcome() -> None:
    import mailguard.scanpool.job as module

    pool = ScanPool(Policy(), None, kind="thread", workers=1)
    pool.loop_is_idle = lambda: True
    original = module._engine_for

    def broken(policy):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    module._engine_for = broken
    try:
        outcome = run(pool.scan(clean_message(1), "test"))
    finally:
        module._engine_for = original
        pool.close()
    assert outcome.status == "unscanned" and "boom" in outcome.error


def test_server_lets_the_pool_scan_inline_only_with_one_session() -> None:
    from mailguard.proxy.server import FilterServer
    from mailguard.settings import Settings, resolve_paths

    async def scenario() -> None:
        server = FilterServer(Settings.from_values({}), resolve_paths(), pool_kind="thread", pool_workers=1)
        await server.start()
        try:
            assert server.pool.loop_is_idle()
            server._sessions.update({asyncio.ensure_future(asyncio.sleep(0)) for _ in range(2)})
            assert not server.pool.loop_is_idle()
            await asyncio.gather(*server._sessions)
            server._sessions.clear()
        finally:
            await server.stop(0.1)

    run(scenario())
