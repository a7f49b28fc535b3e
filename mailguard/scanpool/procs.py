"""Scan worker processes driven from the event loop over pipes (see worker.py for why).

Each ``WorkerProcess`` scans one message at a time; ``ProcessWorkers`` hands a message to an idle
worker, or waits for one. One message per worker means a scan that outlives its time limit costs
only that worker: it is killed and replaced, and no other message waits behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pickle
import sys
from pathlib import Path

import mailguard
from mailguard.scanpool.worker import CONFIG, REQUEST, RESULT
from mailguard.scan.policy import Policy

__all__ = ["ProcessWorkers", "WorkerFailed", "WorkerProcess"]

# A pipe this large takes a typical message in one write (Linux; the default is 64 KiB).
_PIPE_SIZE = 1024 * 1024
_F_SETPIPE_SZ = 1031
# How long a closing worker may take to finish its message before it is killed.
CLOSE_GRACE = 5.0


def _worker_environment() -> dict[str, str]:
    """Ours, with this very mailguard first on the path: the engine may run from a source tree,
    from a folder it has left since (the detached engine runs from /)."""
    package_root = str(Path(mailguard.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": package_root + (os.pathsep + path if path else "")}


class WorkerFailed(Exception):
    """The worker died, broke the protocol, or was killed for taking too long."""


class WorkerProcess:
    def __init__(self, config: tuple[Policy, str | None]) -> None:
        self.config = config
        self._process: asyncio.subprocess.Process | None = None
        self._broken = False  # killed or failed: never used again, even before it is reaped

    @property
    def alive(self) -> bool:
        return self._process is not None and not self._broken and self._process.returncode is None

    async def start(self) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mailguard.scanpool.worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=_worker_environment(),
        )
        assert process.stdin is not None
        with contextlib.suppress(OSError, AttributeError, ValueError):
            # The messages' pipe (the outcomes' is small): one write per message instead of 16.
            fcntl.fcntl(process.stdin.transport.get_extra_info("pipe").fileno(), _F_SETPIPE_SZ, _PIPE_SIZE)
        config = pickle.dumps(self.config, protocol=pickle.HIGHEST_PROTOCOL)
        process.stdin.write(CONFIG.pack(len(config)) + config)
        self._process = process

    async def scan(self, raw: bytes, source: str):  # noqa: ANN201 - a ScanOutcome
        process = self._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        name = source.encode("utf-8", "replace")
        try:
            process.stdin.write(REQUEST.pack(len(name), len(raw)) + name)
            process.stdin.write(raw)
            await process.stdin.drain()
            head = await process.stdout.readexactly(RESULT.size)
            payload = await process.stdout.readexactly(RESULT.unpack(head)[0])
            return pickle.loads(payload)
        except (OSError, EOFError, asyncio.IncompleteReadError, pickle.UnpicklingError) as exc:
            self.kill()
            raise WorkerFailed(f"scan worker ended: {type(exc).__name__}: {exc}") from exc

    def kill(self) -> None:
        self._broken = True
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()

    async def aclose(self) -> None:
        """Let the worker finish its message and exit (its stdin closes); kill it after a grace."""
        process = self._process
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), CLOSE_GRACE)
        except asyncio.TimeoutError:
            self.kill()
            await process.wait()


class ProcessWorkers:
    def __init__(self, count: int, config: tuple[Policy, str | None]) -> None:
        self.count = count
        self.config = config
        self._idle: asyncio.Queue[WorkerProcess] | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    def _queue(self) -> asyncio.Queue[WorkerProcess]:
        # Created on first use, inside the running loop; workers start when first needed.
        if self._idle is None:
            self._idle = asyncio.Queue()
            for _ in range(self.count):
                self._idle.put_nowait(WorkerProcess(self.config))
        return self._idle

    async def scan(self, raw: bytes, source: str, timeout: float):  # noqa: ANN201 - a ScanOutcome
        """The outcome of scanning ``raw``; raises ``asyncio.TimeoutError`` or ``WorkerFailed``.

        A worker found dead when its turn comes (killed while idle, say) costs a second try on a
        fresh one; a message that kills a worker twice is the caller's ``WorkerFailed``.
        """
        try:
            return await self._scan_once(raw, source, timeout)
        except WorkerFailed:
            return await self._scan_once(raw, source, timeout)

    async def _scan_once(self, raw: bytes, source: str, timeout: float):  # noqa: ANN202
        idle = self._queue()
        worker = await idle.get()
        try:
            if not worker.alive or worker.config != self.config:
                self._retire(worker)
                worker = WorkerProcess(self.config)
                await worker.start()
            try:
                return await asyncio.wait_for(worker.scan(raw, source), timeout)
            except BaseException:
                # Timed out, cancelled (the session ended) or failed: its answer may still be on
                # the way, and would be read as the next message's. Never reused.
                worker.kill()
                raise
        finally:
            idle.put_nowait(worker)

    def update(self, config: tuple[Policy, str | None]) -> None:
        """New settings: each worker is replaced when next used; scans in flight finish."""
        self.config = config

    def _retire(self, worker: WorkerProcess) -> None:
        task = asyncio.ensure_future(worker.aclose())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def aclose(self) -> None:
        workers: list[WorkerProcess] = []
        if self._idle is not None:
            while not self._idle.empty():
                workers.append(self._idle.get_nowait())
        await asyncio.gather(*(w.aclose() for w in workers), *self._retiring, return_exceptions=True)

    def kill(self) -> None:
        """Without a loop to wait in: stop every idle worker now."""
        if self._idle is not None:
            while not self._idle.empty():
                self._idle.get_nowait().kill()
