"""Scan worker processes over pipes (procs.py, worker.py): outcomes, a worker that dies or
hangs costs only its own message, new settings reach new scans, and nothing is left running."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from pathlib import Path

import pytest

from mailguard.processes import process_alive
from mailguard.scanpool.pool import ScanPool
from mailguard.scanpool.procs import _JOIN_MAX, ProcessWorkers, WorkerProcess
from mailguard.scan.policy import Policy
from tests.proxy.harness import clean_message, infected_message, run


def _worker_pids(workers: ProcessWorkers) -> list[int]:
    queue = workers._queue()
    return [w._process.pid for w in list(queue._queue) if w._process is not None]  # type: ignore[attr-defined]


def test_outcomes_come_back_and_the_original_of_a_rewrite_is_quarantined(tmp_path: Path) -> None:
    async def scenario() -> None:
        pool = ScanPool(Policy(), tmp_path / "quarantine", kind="process", workers=1)
        try:
            clean = await pool.scan(clean_message(1), "test 1")
            infected = await pool.scan(infected_message(2), "test 2")
        finally:
            await pool.aclose()
        assert (clean.status, clean.delivered) == ("clean", None)
        assert infected.status == "infected" and "Eicar-Test-Signature" in infected.detections
        assert infected.delivered is not None and b"EICAR-STANDARD" not in infected.delivered
        assert infected.quarantine_id is not None
        assert len(list((tmp_path / "quarantine").iterdir())) >= 1

    run(scenario())


def _padded(message: bytes, size: int) -> bytes:
    """``message`` grown to ``size`` octets by text lines before its first part boundary."""
    at = message.index(b"--XX\r\n") if b"--XX\r\n" in message else len(message)
    room = size - len(message)
    lines = b"padding line\r\n" * (room // 14) + b"x" * (room % 14)
    padded = message[:at] + lines + message[at:]
    assert len(padded) == size
    return padded


def test_messages_on_either_side_of_the_one_write_size_reach_the_worker_whole() -> None:
    """Small messages go to the pipe in one write with their frame, larger ones in two: either way
    each arrives whole and framed (the EICAR at the end of each infected one is found, and the
    message after it is read as its own)."""
    sizes = [_JOIN_MAX - 1, _JOIN_MAX, _JOIN_MAX + 1, 3 * 1024 * 1024]

    async def scenario() -> list[str]:
        workers = ProcessWorkers(1, (Policy(), None))
        statuses = []
        try:
            for n, size in enumerate(sizes):
                infected = await workers.scan(_padded(infected_message(n), size), f"infected {size}", 60)
                clean = await workers.scan(_padded(clean_message(n), size), f"clean {size}", 60)
                statuses += [infected.status, clean.status]
        finally:
            await workers.aclose()
        return statuses

    assert run(scenario()) == ["infected", "clean"] * len(sizes)


def test_a_scan_past_its_time_kills_only_that_worker() -> None:
    async def scenario() -> None:
        workers = ProcessWorkers(1, (Policy(), None))
        try:
            await workers.scan(clean_message(1), "warm-up", 30)
            (first,) = _worker_pids(workers)
            with pytest.raises(asyncio.TimeoutError):
                await workers.scan(clean_message(2, body_lines=20000), "slow", 0.0001)
            outcome = await workers.scan(clean_message(3), "next", 30)
            (second,) = _worker_pids(workers)
        finally:
            await workers.aclose()
        assert outcome.status == "clean"
        assert second != first and not process_alive(first)

    run(scenario())


def test_a_worker_killed_between_scans_is_replaced() -> None:
    async def scenario() -> None:
        workers = ProcessWorkers(1, (Policy(), None))
        try:
            await workers.scan(clean_message(1), "first", 30)
            (pid,) = _worker_pids(workers)
            os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.2)
            outcome = await workers.scan(infected_message(2), "second", 30)
        finally:
            await workers.aclose()
        assert outcome.status == "infected"

    run(scenario())


def _kill_worker_mid_scan(monkeypatch: pytest.MonkeyPatch, times: int) -> list[int]:
    """Make the next ``times`` scans kill their worker process once it holds the message."""
    original = WorkerProcess.scan
    killed: list[int] = []

    async def dying(self: WorkerProcess, raw: bytes, source: str):  # type: ignore[no-untyped-def]
        if len(killed) < times:
            assert self._process is not None
            killed.append(self._process.pid)
            os.kill(self._process.pid, signal.SIGKILL)
        return await original(self, raw, source)

    monkeypatch.setattr(WorkerProcess, "scan", dying)
    return killed


def test_a_worker_dying_mid_scan_costs_a_second_try_on_a_fresh_one(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        pool = ScanPool(Policy(), None, kind="process", workers=1)
        killed = _kill_worker_mid_scan(monkeypatch, times=1)
        try:
            outcome = await pool.scan(infected_message(1), "dies once")
        finally:
            await pool.aclose()
        assert len(killed) == 1
        assert outcome.status == "infected"

    run(scenario())


def test_a_message_that_kills_its_workers_is_unscanned_never_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        pool = ScanPool(Policy(), None, kind="process", workers=1)
        killed = _kill_worker_mid_scan(monkeypatch, times=2)
        try:
            outcome = await pool.scan(clean_message(1), "dies twice")
            after = await pool.scan(clean_message(2), "after")
        finally:
            await pool.aclose()
        assert len(killed) == 2 and killed[0] != killed[1]
        assert outcome.status == "unscanned" and "engine-error" in outcome.reasons
        assert after.status == "clean"

    run(scenario())


def test_new_settings_reach_the_next_scan_through_a_new_worker() -> None:
    async def scenario() -> None:
        pool = ScanPool(Policy(), None, kind="process", workers=1)
        try:
            await pool.scan(clean_message(1), "before")
            assert isinstance(pool._executor, ProcessWorkers)
            (before,) = _worker_pids(pool._executor)
            pool.update(dataclasses.replace(Policy(), subject_template="[changed %DETECTIONNAME%]"), None)
            outcome = await pool.scan(infected_message(2), "after")
            (after,) = _worker_pids(pool._executor)
            await asyncio.sleep(0.5)
        finally:
            await pool.aclose()
        assert after != before and not process_alive(before)
        assert outcome.delivered is not None and b"[changed " in outcome.delivered

    run(scenario())


def test_closing_leaves_no_worker_running() -> None:
    async def scenario() -> list[int]:
        workers = ProcessWorkers(2, (Policy(), None))
        await asyncio.gather(workers.scan(clean_message(1), "a", 30), workers.scan(clean_message(2), "b", 30))
        pids = _worker_pids(workers)
        await workers.aclose()
        return pids

    pids = run(scenario())
    assert len(pids) == 2 and not any(process_alive(pid) for pid in pids)


def test_workers_find_this_mailguard_when_only_the_engine_had_it_on_its_path(tmp_path: Path) -> None:
    """An engine run from a source tree it has since left (the detached engine runs from /):
    its workers are started with the same interpreter, and must import the same mailguard."""
    import shutil
    import subprocess

    python = shutil.which("python3", path="/usr/bin:/bin")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if python is None or subprocess.run([python, "-c", "import mailguard"], env=env, cwd=tmp_path,
                                        capture_output=True).returncode == 0:
        pytest.skip("needs a system python3 without mailguard installed")
    repo = Path(__file__).resolve().parents[2]
    code = (
        "import asyncio, sys\n"
        f"sys.path.insert(0, {str(repo)!r})\n"
        "from mailguard.scanpool.procs import ProcessWorkers\n"
        "from mailguard.scan.policy import Policy\n"
        "async def main():\n"
        "    workers = ProcessWorkers(1, (Policy(), None))\n"
        "    outcome = await workers.scan(b'Subject: x\\r\\n\\r\\nhello\\r\\n', 'x', 30)\n"
        "    await workers.aclose()\n"
        "    print(outcome.status)\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run([python, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"


def test_a_scan_cancelled_in_flight_never_hands_its_outcome_to_the_next_message() -> None:
    """A session cancelled while its message is in a worker (the engine stops, the client goes):
    that worker's answer is still on its way, so the worker must not serve another message."""
    big_infected = infected_message(1).replace(b"\r\n\r\n", b"\r\n\r\n" + b"padding line\r\n" * 2_000_000, 1)

    async def scenario() -> tuple[str, str]:
        workers = ProcessWorkers(1, (Policy(), None))
        try:
            await workers.scan(clean_message(0), "warm-up", 30)
            task = asyncio.ensure_future(workers.scan(big_infected, "cancelled", 30))
            await asyncio.sleep(0.02)
            in_flight = not task.done()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            after = await workers.scan(clean_message(2), "next", 30)
            return ("in flight" if in_flight else "finished first"), after.status
        finally:
            await workers.aclose()

    when, status = run(scenario())
    assert when == "in flight"  # else the test proves nothing: the message must be big enough
    assert status == "clean"
