"""Scan worker processes driven from the event loop over pipes (see worker.py for why).

Each ``WorkerProcess`` holds one message, or one batch of small ones (``scan_many``), at a time;
``ProcessWorkers`` hands it to an idle worker, or waits for one. A scan that outlives its time
limit costs only that worker: it is killed and replaced; in a batch, the messages already answered
keep their outcomes, the one it held gets its second try alone, and the rest go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pickle
import sys
from collections.abc import AsyncIterator, Sequence
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
# Most messages, and bytes, handed to a worker in one go by ``scan_many``: each round trip costs
# the loop ~0.1 ms whatever the size (bench/handoff.py), the bytes bound what waits in memory.
BATCH_MESSAGES = 64
BATCH_BYTES = 1 << 20
# Up to this size a message goes to the pipe joined to its frame header, in one write: the copy
# costs less than a second system call (larger ones go as they are, in two).
_JOIN_MAX = 64 * 1024


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
            frame = REQUEST.pack(len(name), len(raw)) + name
            if len(raw) <= _JOIN_MAX:
                process.stdin.write(b"".join((frame, raw)))  # one write; the copy costs less
            else:
                process.stdin.write(frame)
                process.stdin.write(raw)
            await process.stdin.drain()
            head = await process.stdout.readexactly(RESULT.size)
            payload = await process.stdout.readexactly(RESULT.unpack(head)[0])
            return pickle.loads(payload)
        except (OSError, EOFError, asyncio.IncompleteReadError, pickle.UnpicklingError) as exc:
            self.kill()
            raise WorkerFailed(f"scan worker ended: {type(exc).__name__}: {exc}") from exc

    async def scan_many(self, items: Sequence[tuple[bytes, str]], timeout: float, done: list) -> None:  # type: ignore[type-arg]
        """Hand all of ``items`` over in one go and append their outcomes to ``done`` in order;
        each must come within ``timeout`` of the one before. On any failure the worker is
        killed and what is in ``done`` is what was scanned."""
        process = self._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        frames = []
        for raw, source in items:
            name = source.encode("utf-8", "replace")
            frames += (REQUEST.pack(len(name), len(raw)) + name, raw)
        try:
            # No drain before reading: the worker answers while the loop writes the rest, and
            # with neither pipe read both would fill (an outcome may carry a rewritten message).
            process.stdin.writelines(frames)
            for _ in items:
                done.append(await asyncio.wait_for(self._outcome(process.stdout), timeout))
            await process.stdin.drain()
        except (asyncio.TimeoutError, asyncio.CancelledError):
            # Before OSError: TimeoutError is one. Timed out or cancelled, the worker still holds
            # the batch, and its later answers would be read as another's.
            self.kill()
            raise
        except (OSError, EOFError, asyncio.IncompleteReadError, pickle.UnpicklingError) as exc:
            self.kill()
            raise WorkerFailed(f"scan worker ended: {type(exc).__name__}: {exc}") from exc
        except BaseException:
            self.kill()
            raise

    @staticmethod
    async def _outcome(stdout: asyncio.StreamReader):  # noqa: ANN205 - a ScanOutcome
        head = await stdout.readexactly(RESULT.size)
        return pickle.loads(await stdout.readexactly(RESULT.unpack(head)[0]))

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

    @contextlib.asynccontextmanager
    async def _worker(self) -> AsyncIterator[WorkerProcess]:
        """An idle worker, alive and started with the current settings (one found dead or made
        with older settings is replaced by a fresh one), put back in the queue when done."""
        idle = self._queue()
        worker = await idle.get()
        try:
            if not worker.alive or worker.config != self.config:
                self._retire(worker)
                worker = WorkerProcess(self.config)
                await worker.start()
            yield worker
        finally:
            idle.put_nowait(worker)

    async def _scan_once(self, raw: bytes, source: str, timeout: float):  # noqa: ANN202
        async with self._worker() as worker:
            try:
                # A deadline on this task rather than wait_for, which wraps the scan in a task of
                # its own: per message, that task cost the loop more than the pipe writes.
                async with asyncio.timeout(timeout):
                    return await worker.scan(raw, source)
            except BaseException:
                # Timed out, cancelled (the session ended) or failed: its answer may still be on
                # the way, and would be read as the next message's. Never reused.
                worker.kill()
                raise

    async def scan_many(self, items: Sequence[tuple[bytes, str]], timeout: float) -> list:  # type: ignore[type-arg]
        """The outcomes of ``items`` in order, handed to workers in batches (``BATCH_*``): one
        round trip for many small messages. Where a message could not be scanned its place holds
        the ``asyncio.TimeoutError`` or ``WorkerFailed`` that ``scan`` would have raised."""
        results: list = []  # type: ignore[type-arg]
        at = 0
        while at < len(items):
            end, size = at, 0
            while end < len(items) and end - at < BATCH_MESSAGES and (end == at or size + len(items[end][0]) <= BATCH_BYTES):
                size += len(items[end][0])
                end += 1
            done: list = []  # type: ignore[type-arg]
            try:
                await self._scan_batch(items[at:end], timeout, done)
            except (asyncio.TimeoutError, WorkerFailed) as exc:
                # The worker was killed on the message it held. As with ``scan``: past its time,
                # that message is timed out; a worker that died gets it a second try on a fresh
                # one, alone. The messages after it go on in batches.
                results += done
                raw, source = items[at + len(done)]
                if isinstance(exc, WorkerFailed):
                    try:
                        results.append(await self._scan_once(raw, source, timeout))
                    except (asyncio.TimeoutError, WorkerFailed) as again:
                        results.append(again)
                else:
                    results.append(exc)
                at += len(done) + 1
                continue
            results += done
            at = end
        return results

    async def _scan_batch(self, batch: Sequence[tuple[bytes, str]], timeout: float, done: list) -> None:  # type: ignore[type-arg]
        async with self._worker() as worker:
            await worker.scan_many(batch, timeout, done)

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
