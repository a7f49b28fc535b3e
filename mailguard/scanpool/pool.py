"""Scanning off the event loop: a pool of workers that scan, rewrite and quarantine messages.

Each worker holds its own ``Engine`` (detectors load once per worker, not per message) and does
the whole job for a message: ``scan``, ``apply``, and, when the client gets something other than
the original, the quarantine copy. Only the outcome comes back; for a clean message that is a
few dozen bytes, since the original bytes are forwarded by the session as they are.

Threads or processes (``kind``): the scan is mostly Python code holding the GIL, so threads
keep at most one core busy for scanning *and* the event loop together, while processes let the
loop run on one core and scans on the others, at the cost of copying each message into a
worker's pipe (procs.py, worker.py). bench/pop3.py measures both; see ``default_kind``.

A scan that outlives ``threatsense.limits.max-scan-time`` (plus slack) is abandoned here: the
message is treated as ``unscanned`` (timeout), which ``response.on-scan-error`` turns into a
tagged delivery or a block. The engine checks the same deadline itself, so a worker is rarely
left running.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mailguard.processes import usable_cpus
from mailguard.scan.policy import Policy
from mailguard.scan.verdict import Reason
from mailguard.scanpool.job import (
    ScanOutcome, keeps_original, outcome_of, rewritten, scan_message, settle_without_scan,
)
from mailguard.scanpool.procs import ProcessWorkers

__all__ = ["ScanPool", "account", "default_kind"]

log = logging.getLogger("mailguard.scanpool")

# The engine stops itself at max-scan-time; give it this much more before we stop waiting.
SCAN_TIMEOUT_SLACK = 5.0
# Messages up to this size may be scanned on the event loop when no other session is live.
INLINE_MAX = 256 * 1024


def account(host: Any, log: Any, outcome: ScanOutcome, what: str, size: int) -> None:
    """Count one scan in the engine's counters and log what the user should hear of it (POP3
    and IMAP sessions alike); ``what`` names the message, e.g. "message 3"."""
    host.count("messages_scanned")
    host.count("bytes_scanned", size)
    if outcome.status == "infected":
        host.count("infected")
        log.warning("%s infected: %s%s", what, ", ".join(outcome.detections),
                    f" (quarantine {outcome.quarantine_id})" if outcome.quarantine_id else "")
    elif outcome.status == "blocked":
        host.count("blocked")
        log.warning("%s blocked by policy: %s%s", what, ", ".join(outcome.detections),
                    f" (quarantine {outcome.quarantine_id})" if outcome.quarantine_id else "")
    elif outcome.status == "unscanned":
        host.count("unscanned")
        log.warning("%s not fully scanned: %s", what, ", ".join(outcome.reasons))
    if outcome.quarantine_failed:
        host.count("errors")
        log.error("%s withheld: %s", what, outcome.error)
    elif outcome.error:
        host.count("errors")


def default_kind() -> str:
    """Processes when there is a second core for them to use, else threads."""
    return "process" if usable_cpus() > 1 else "thread"



class ScanPool:
    def __init__(self, policy: Policy, quarantine_dir: Path | None, *, workers: int | None = None,
                 kind: str | None = None) -> None:
        self.kind = kind or default_kind()
        self.workers = workers or max(1, usable_cpus() - (1 if self.kind == "process" else 0))
        self.policy = policy
        self.quarantine_dir = str(quarantine_dir) if quarantine_dir is not None else None
        self._executor = self._make_executor()
        self._in_flight = 0
        #: Set by the server: True while one session at most is live, i.e. nobody else's
        #: bytes could wait behind a scan run on the event loop itself.
        self.loop_is_idle: Callable[[], bool] = lambda: False

    def _make_executor(self) -> concurrent.futures.Executor | ProcessWorkers:
        if self.kind == "thread":
            return concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="mailguard-scan")
        return ProcessWorkers(self.workers, (self.policy, self.quarantine_dir))

    def update(self, policy: Policy, quarantine_dir: Path | None) -> None:
        """New settings: new scans use them; scans in flight finish under the old ones."""
        new_dir = str(quarantine_dir) if quarantine_dir is not None else None
        if policy == self.policy and new_dir == self.quarantine_dir:
            return
        self.policy, self.quarantine_dir = policy, new_dir
        if isinstance(self._executor, ProcessWorkers):
            self._executor.update((policy, new_dir))
            return
        old = self._executor
        self._executor = self._make_executor()
        old.shutdown(wait=False)

    def _inline(self, raw: bytes) -> bool:
        return len(raw) <= INLINE_MAX and self._in_flight == 0 and self.loop_is_idle()

    async def scan(self, raw: bytes, source: str) -> ScanOutcome:
        loop = asyncio.get_running_loop()
        policy, quarantine_dir = self.policy, self.quarantine_dir
        if self._inline(raw):
            # Handing 100 KB to a worker and back costs more than scanning it (bench/pop3.py):
            # with no other session to stall, a small message is scanned right here.
            started = time.monotonic()
            try:
                verdict, delivered = rewritten(raw, policy)
            except Exception as exc:  # noqa: BLE001 - same as a broken worker, below
                log.error("scan failed for %s: %s", source, exc)
                return settle_without_scan(raw, Reason.ENGINE_ERROR, f"{type(exc).__name__}: {exc}",
                                           policy, quarantine_dir, source)
            if keeps_original(raw, delivered, policy, quarantine_dir):
                # Keeping the original writes and fsyncs files (~10 ms): not on the loop.
                return await loop.run_in_executor(None, outcome_of, raw, verdict, delivered, policy,
                                                  quarantine_dir, source, started)
            return outcome_of(raw, verdict, delivered, policy, quarantine_dir, source, started)
        self._in_flight += 1
        try:
            return await self._scan_in_pool(loop, raw, source, policy, quarantine_dir)
        finally:
            self._in_flight -= 1

    async def scan_many(self, items: Sequence[tuple[bytes, str]]) -> list[ScanOutcome]:
        """The outcomes of ``(raw, source)`` items, in order, each as ``scan`` would give it.

        For a caller holding several messages at once (a bulk fetch): worker processes get them
        in batches, one round trip for many small messages instead of one each (bench/handoff.py);
        threads, and the loop when idle, take them one by one as ``scan`` does."""
        if not isinstance(self._executor, ProcessWorkers) or all(self._inline(raw) for raw, _ in items):
            return [await self.scan(raw, source) for raw, source in items]
        loop = asyncio.get_running_loop()
        policy, quarantine_dir = self.policy, self.quarantine_dir
        self._in_flight += 1
        try:
            done = await self._executor.scan_many(items, policy.max_scan_time + SCAN_TIMEOUT_SLACK)
        finally:
            self._in_flight -= 1
        outcomes = []
        for (raw, source), outcome in zip(items, done):
            if isinstance(outcome, BaseException):
                if isinstance(outcome, asyncio.TimeoutError):
                    reason, detail = Reason.TIMEOUT, "max-scan-time exceeded"
                else:
                    log.error("scan worker failed for %s: %s", source, outcome)
                    reason, detail = Reason.ENGINE_ERROR, f"{type(outcome).__name__}: {outcome}"
                outcome = await loop.run_in_executor(
                    None, settle_without_scan, raw, reason, detail, policy, quarantine_dir, source)
            outcomes.append(outcome)
        return outcomes

    async def _scan_in_pool(self, loop: asyncio.AbstractEventLoop, raw: bytes, source: str,
                            policy: Policy, quarantine_dir: str | None) -> ScanOutcome:
        timeout = policy.max_scan_time + SCAN_TIMEOUT_SLACK
        try:
            if isinstance(self._executor, ProcessWorkers):
                return await self._executor.scan(raw, source, timeout)
            future = loop.run_in_executor(self._executor, scan_message, raw, source, policy, quarantine_dir)
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            reason, detail = Reason.TIMEOUT, "max-scan-time exceeded"
        except Exception as exc:  # noqa: BLE001 - a broken worker must not lose the message
            log.error("scan worker failed for %s: %s", source, exc)
            reason, detail = Reason.ENGINE_ERROR, f"{type(exc).__name__}: {exc}"
        return await loop.run_in_executor(
            None, settle_without_scan, raw, reason, detail, policy, quarantine_dir, source
        )

    def close(self) -> None:
        """Stop at once (no loop to wait in): threads finish on their own, idle worker processes
        are killed, and one busy with a message dies with the engine (``die_with_parent``)."""
        if isinstance(self._executor, ProcessWorkers):
            self._executor.kill()
        else:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def aclose(self) -> None:
        """Stop, letting worker processes finish the message they hold (bounded)."""
        if isinstance(self._executor, ProcessWorkers):
            await self._executor.aclose()
        else:
            self._executor.shutdown(wait=False, cancel_futures=True)
