"""The running engine's look at its signature sources (scanpool/detection.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from mailguard.scanpool.detection import DetectionWatch
from mailguard.scan.detectors.sources import CLAMD_IN_USE, CLAMD_NOT_FOUND
from mailguard.scan.policy import Policy
from tests.peers.clamd import Clamd


def test_a_changed_signature_file_is_an_update_and_an_unchanged_one_is_not(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    signatures = tmp_path / "a.ndb"
    signatures.write_text("Test.C:0:*:414243\n")
    updates: list[Policy] = []

    async def scenario() -> tuple[bool, bool, str, str]:
        watch = DetectionWatch(updates.append)
        first = await watch.settle(Policy(signature_paths=(str(signatures),), clamd_enabled=False))
        unchanged = await watch.check()
        signatures.write_text("Test.C:0:*:414243\nTest.D:0:*:444546\n")
        changed = await watch.check()
        return unchanged, changed, first.generation, watch.policy.generation  # type: ignore[union-attr]

    with caplog.at_level(logging.INFO, logger="mailguard.detection"):
        unchanged, changed, before, after = asyncio.run(scenario())
    assert (unchanged, changed) == (False, True) and before != after
    assert [p.generation for p in updates] == [after]
    assert any(f"signatures updated: generation {before} -> {after}" in r.getMessage() for r in caplog.records)


@pytest.mark.peer
def test_auto_picks_up_a_clamd_that_appears_while_running(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    clamd = Clamd(tmp_path / "clamd")
    clamd.write_ndb({"Test.Late": b"mailguard late payload 41c0"})
    updates: list[Policy] = []

    async def scenario():  # type: ignore[no-untyped-def]
        watch = DetectionWatch(updates.append)
        await watch.settle(Policy(clamd_enabled="auto", clamd_address=clamd.address))
        state = watch.inventory.clamd.state  # type: ignore[union-attr]
        with clamd:  # installed and started after mailguard
            await watch.check()
        return state, watch

    with caplog.at_level(logging.INFO, logger="mailguard.detection"):
        state, watch = asyncio.run(scenario())
    assert state == CLAMD_NOT_FOUND
    assert watch.inventory.clamd.state == CLAMD_IN_USE and watch.policy.clamd_enabled is True
    assert [p.clamd_enabled for p in updates] == [True]
    assert any(f"clamd in use at {clamd.address}" in r.getMessage() for r in caplog.records)


def test_an_unexpected_error_in_one_look_is_logged_and_the_watch_goes_on(caplog) -> None:  # type: ignore[no-untyped-def]
    looks: list[int] = []

    async def scenario() -> None:
        watch = DetectionWatch(lambda policy: None, interval=0)
        again = asyncio.Event()

        async def check() -> bool:
            looks.append(1)
            if len(looks) == 1:
                raise KeyError("a bug")
            again.set()
            return False

        watch.check = check  # type: ignore[method-assign]
        watch.start()
        try:
            await asyncio.wait_for(again.wait(), 30)  # a safety net: the second look comes at once
        finally:
            await watch.stop()

    with caplog.at_level(logging.ERROR, logger="mailguard.detection"):
        asyncio.run(scenario())
    assert len(looks) >= 2
    (record,) = [r for r in caplog.records if r.getMessage() == "could not check the signatures"]
    assert record.exc_info is not None and "a bug" in str(record.exc_info[1])
