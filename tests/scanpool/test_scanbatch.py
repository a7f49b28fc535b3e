"""Batched hand-off (``ScanPool.scan_many``): many messages to a worker process in one round trip,
the same outcomes as one by one, in order, and a worker that dies mid-batch loses no message."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

import mailguard.scanpool.procs as procs
from mailguard.processes import process_alive
from mailguard.scan.policy import Policy
from mailguard.scanpool.pool import ScanPool
from mailguard.scanpool.procs import WorkerProcess
from tests.proxy.harness import clean_message, infected_message, run

ITEMS = [(clean_message(1), "m1"), (infected_message(2), "m2"), (clean_message(3), "m3"),
         (infected_message(4), "m4"), (clean_message(5), "m5")]


def _comparable(outcome):  # noqa: ANN001, ANN202
    return (outcome.status, outcome.detections, outcome.reasons, outcome.delivered, outcome.error,
            bool(outcome.quarantine_id))


def _one_by_one_and_batched(pool: ScanPool):  # noqa: ANN202
    async def scenario():  # noqa: ANN202
        try:
            one = [await pool.scan(raw, source) for raw, source in ITEMS]
            many = await pool.scan_many(ITEMS)
        finally:
            await pool.aclose()
        return one, many

    return run(scenario())


@pytest.mark.parametrize("kind", ["process", "thread"])
def test_a_batch_gives_what_one_by_one_gives_in_order(tmp_path: Path, kind: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(procs, "BATCH_MESSAGES", 2)  # three round trips for five messages
    one, many = _one_by_one_and_batched(ScanPool(Policy(), tmp_path / "q", kind=kind, workers=1))
    assert [o.status for o in many] == ["clean", "infected", "clean", "infected", "clean"]
    assert [_comparable(o) for o in many] == [_comparable(o) for o in one]
    assert all(o.quarantine_id for o in many if o.status == "infected")


def _count_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every batch handed to a worker process from now on."""
    calls: list[int] = []
    original = WorkerProcess.scan_many

    async def counting(self, items, timeout, done):  # type: ignore[no-untyped-def]
        calls.append(len(items))
        await original(self, items, timeout, done)

    monkeypatch.setattr(WorkerProcess, "scan_many", counting)
    return calls


def test_small_batches_go_in_one_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_batches(monkeypatch)
    _, many = _one_by_one_and_batched(ScanPool(Policy(), None, kind="process", workers=1))
    assert calls == [len(ITEMS)] and len(many) == len(ITEMS)


def test_a_batch_is_cut_by_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(procs, "BATCH_BYTES", len(ITEMS[0][0]) + len(ITEMS[1][0]))
    calls = _count_batches(monkeypatch)
    _one_by_one_and_batched(ScanPool(Policy(), None, kind="process", workers=1))
    assert sum(calls) == len(ITEMS) and max(calls) <= 2


def _batch_through_one_worker():  # noqa: ANN202
    """ITEMS as one batch through a pool of one worker process; their outcomes."""
    async def scenario():  # noqa: ANN202
        pool = ScanPool(Policy(), None, kind="process", workers=1)
        try:
            return await pool.scan_many(ITEMS)
        finally:
            await pool.aclose()

    return run(scenario())


class _KillAfter(list):  # type: ignore[type-arg]
    """The outcomes of a batch; the worker is killed once ``count`` of them are in."""

    def __init__(self, done: list, pid: int, count: int) -> None:  # type: ignore[type-arg]
        super().__init__()
        self.done, self.pid, self.count = done, pid, count

    def append(self, outcome) -> None:  # type: ignore[no-untyped-def]
        self.done.append(outcome)
        if len(self.done) == self.count:
            os.kill(self.pid, signal.SIGKILL)


def test_a_worker_dying_mid_batch_keeps_what_was_done_and_retries_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    killed: list[int] = []
    original = WorkerProcess.scan_many

    async def dying(self, items, timeout, done):  # type: ignore[no-untyped-def]
        if not killed:
            assert self._process is not None
            killed.append(self._process.pid)
            await original(self, items, timeout, _KillAfter(done, self._process.pid, 2))
        else:
            await original(self, items, timeout, done)

    monkeypatch.setattr(WorkerProcess, "scan_many", dying)

    outcomes = _batch_through_one_worker()
    assert [o.status for o in outcomes] == ["clean", "infected", "clean", "infected", "clean"]
    assert not any(o.error for o in outcomes)
    assert len(killed) == 1 and not process_alive(killed[0])


def test_a_message_that_kills_its_worker_twice_in_a_batch_is_unscanned(monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker dies before it answers anything (killed as the batch is handed over), so the held
    # message is the first one whatever the machine's speed; its second try is alone
    # (WorkerProcess.scan): that dies too. How answered messages survive a death mid-batch is the
    # test above.
    original_many, original_one = WorkerProcess.scan_many, WorkerProcess.scan
    killed: list[int] = []

    async def dying_many(self, items, timeout, done):  # type: ignore[no-untyped-def]
        if not killed:
            killed.append(self._process.pid)
            os.kill(self._process.pid, signal.SIGKILL)
        await original_many(self, items, timeout, done)

    async def dying_one(self, raw, source):  # type: ignore[no-untyped-def]
        if len(killed) == 1:
            killed.append(self._process.pid)
            os.kill(self._process.pid, signal.SIGKILL)
        return await original_one(self, raw, source)

    monkeypatch.setattr(WorkerProcess, "scan_many", dying_many)
    monkeypatch.setattr(WorkerProcess, "scan", dying_one)

    outcomes = _batch_through_one_worker()
    assert len(killed) == 2 and killed[0] != killed[1]
    assert outcomes[0].status == "unscanned" and "engine-error" in outcomes[0].reasons
    assert [o.status for o in outcomes[1:]] == ["infected", "clean", "infected", "clean"]
    assert not any(o.error for o in outcomes[1:])


class _TimeOutAfter(list):  # type: ignore[type-arg]
    """The outcomes of a batch; the wait for the one after the first ``count`` times out."""

    def __init__(self, done: list, count: int) -> None:  # type: ignore[type-arg]
        super().__init__()
        self.done, self.count = done, count

    def append(self, outcome) -> None:  # type: ignore[no-untyped-def]
        self.done.append(outcome)
        if len(self.done) == self.count:
            raise asyncio.TimeoutError


def test_a_message_past_its_time_in_a_batch_is_unscanned_and_the_rest_go_on(monkeypatch: pytest.MonkeyPatch) -> None:
    pids: list[int] = []
    original = WorkerProcess.scan_many

    async def slow(self, items, timeout, done):  # type: ignore[no-untyped-def]
        pids.append(self._process.pid)
        await original(self, items, timeout, _TimeOutAfter(done, 2) if len(pids) == 1 else done)

    monkeypatch.setattr(WorkerProcess, "scan_many", slow)

    outcomes = _batch_through_one_worker()
    # Two answered, the third timed out (no second try, as for one message), the rest on a new worker.
    assert [o.status for o in outcomes] == ["clean", "infected", "unscanned", "infected", "clean"]
    assert "timeout" in outcomes[2].reasons
    assert len(pids) == 2 and pids[0] != pids[1] and not process_alive(pids[0])
