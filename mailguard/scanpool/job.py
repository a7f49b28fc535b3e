"""One message's whole job in a scan worker: scan, rewrite, quarantine, and the outcome.

Runs in a pool thread, a worker process (worker.py) or, for a small message on an idle engine,
on the event loop (pool.py). Each thread or process keeps its own scanner (``scan.engine``), so
detectors load once per worker, not per message.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mailguard.scan.policy import Policy
from mailguard.scan.verdict import Incomplete, Reason, Verdict

__all__ = ["ScanOutcome", "keeps_original", "outcome_of", "rewritten", "scan_message", "settle_without_scan"]


@dataclass(frozen=True)
class ScanOutcome:
    status: str                      # clean | infected | blocked | unscanned
    detections: tuple[str, ...]      # every finding's name, detections and policy alike
    reasons: tuple[str, ...]
    delivered: bytes | None          # None: the client gets the original unchanged
    quarantine_id: str | None = None
    seconds: float = 0.0
    error: str = ""                  # why the pool could not give a proper outcome
    quarantine_failed: bool = False  # the original could not be kept: do not deliver the rewrite
    generation: str = ""             # the signatures it was made with (scan/detectors/sources.py)
    #: every finding as (name, part): what an update must compare (proxy/imap_cache.py)
    located: tuple[tuple[str, str], ...] = ()


_state = threading.local()


def _engine_for(policy: Policy):  # noqa: ANN202 - Engine is imported lazily
    engine = getattr(_state, "engine", None)
    if engine is None or _state.policy is not policy:
        from mailguard.scan.engine import Engine

        if engine is not None:
            engine.close()
        engine = Engine(policy)
        _state.engine, _state.policy = engine, policy
    return engine


def rewritten(raw: bytes, policy: Policy) -> tuple[Verdict, bytes]:
    """The verdict on ``raw`` and what the client gets for it (the engine of this thread)."""
    engine = _engine_for(policy)
    verdict = engine.scan(raw)
    return verdict, engine.apply(raw, verdict)


def keeps_original(raw: bytes, delivered: bytes, policy: Policy, quarantine_dir: str | None) -> bool:
    """Whether the original goes to the quarantine: the client gets something else."""
    return bool(policy.quarantine and quarantine_dir) and delivered != raw


def outcome_of(raw: bytes, verdict: Verdict, delivered: bytes, policy: Policy, quarantine_dir: str | None,
             source: str, started: float) -> ScanOutcome:
    changed = delivered != raw
    quarantine_id = None
    quarantine_error = ""
    if keeps_original(raw, delivered, policy, quarantine_dir):
        try:
            from mailguard.quarantine import Quarantine

            quarantine_id = Quarantine(Path(quarantine_dir)).add(raw, verdict, source)
        except Exception as exc:  # noqa: BLE001 - reported to the session, which withholds the message
            quarantine_error = f"quarantine: {type(exc).__name__}: {exc}"
    return ScanOutcome(
        status=verdict.status.value,
        detections=tuple(verdict.finding_names),
        reasons=tuple(verdict.reasons),
        delivered=delivered if changed else None,
        quarantine_id=quarantine_id,
        seconds=time.monotonic() - started,
        error=quarantine_error,
        quarantine_failed=bool(quarantine_error),
        generation=verdict.generation,
        located=tuple(sorted({(f.name, f.part) for f in verdict.findings})),
    )


def scan_message(raw: bytes, source: str, policy: Policy, quarantine_dir: str | None) -> ScanOutcome:
    """Scan, rewrite and quarantine one message (the worker's job)."""
    started = time.monotonic()
    verdict, delivered = rewritten(raw, policy)
    return outcome_of(raw, verdict, delivered, policy, quarantine_dir, source, started)


def settle_without_scan(raw: bytes, reason: Reason, detail: str, policy: Policy,
                        quarantine_dir: str | None, source: str) -> ScanOutcome:
    """The outcome for a message the pool could not scan: tagged or blocked per on-scan-error."""
    from mailguard.scan.engine import Engine

    started = time.monotonic()
    verdict = Verdict.build([], [Incomplete(reason, "", detail)])
    engine = Engine(policy, detectors=[])
    outcome = outcome_of(raw, verdict, engine.apply(raw, verdict), policy, quarantine_dir, source, started)
    return ScanOutcome(**{**outcome.__dict__, "error": outcome.error or detail})
