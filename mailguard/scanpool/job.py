"""One message's job, for both doors: scan, apply the response, keep the original, the outcome.

The live engine's pool (pool.py: a pool thread, a worker process via worker.py, or the event
loop for a small message) and the offline scanner's worker processes (mailbox/worker.py) run
this same ``scan_message``, so a message gets the same verdict, the same bytes and the same
quarantine decision whichever door it came through (docs/architecture.md#an-offline-scan).

Each thread or process keeps its own engine (``_engine_for``), so detectors load once per
worker, not per message; the offline scanner passes the engine its worker built instead (its
tests give it a stand-in).

Who keeps the original differs by door, for one reason: it is kept by whoever hands the
replacement to the reader, just before it does. A live session sends the outcome's bytes as
soon as the job is done, so the job keeps it here (``quarantine_dir`` given). The offline
scanner writes a mailbox only in its main process, after the numbering and the lock checks, and
abandons a rewrite it cannot finish: it passes no folder, and its writer keeps the original
under the same rule (``quarantines``) right before it writes (mailbox/rewrite.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailguard.scan.policy import Policy
from mailguard.scan.verdict import Incomplete, Reason, Verdict

__all__ = [
    "ScanOutcome", "failed_verdict", "keep_original", "keeps_original", "outcome_of", "quarantines",
    "rewritten", "scan_message", "settle_without_scan",
]


@dataclass(frozen=True)
class ScanOutcome:
    status: str                      # clean | infected | blocked | unscanned
    detections: tuple[str, ...]      # every finding's name, detections and policy alike
    reasons: tuple[str, ...]
    delivered: bytes | None          # None: the reader gets the original unchanged
    quarantine_id: str | None = None
    seconds: float = 0.0
    error: str = ""                  # why the pool could not give a proper outcome
    quarantine_failed: bool = False  # the original could not be kept: do not deliver the rewrite
    generation: str = ""             # the signatures it was made with (scan/detectors/sources.py)
    #: every finding as (name, part): what an update must compare (proxy/imap_cache.py)
    located: tuple[tuple[str, str], ...] = ()
    #: the verdict itself, for a report (mailbox/results.py); not sent back by a worker process,
    #: whose session needs only the fields above (worker.py)
    verdict: Verdict | None = field(default=None, compare=False, repr=False)

    def for_session(self) -> "ScanOutcome":
        """Without the verdict: what a worker process pickles back to the live engine."""
        if self.verdict is None:
            return self
        values = dict(self.__dict__)
        values["verdict"] = None
        return ScanOutcome(**values)


_state = threading.local()


def _engine_for(policy: Policy):  # noqa: ANN202 - Engine is imported lazily
    """This thread's engine for ``policy`` (built on first use, rebuilt when the policy changes)."""
    engine = getattr(_state, "engine", None)
    if engine is None or _state.policy is not policy:
        from mailguard.scan.engine import Engine

        if engine is not None:
            engine.close()
        engine = Engine(policy)
        _state.engine, _state.policy = engine, policy
    return engine


def rewritten(raw: bytes, policy: Policy, engine: Any = None) -> tuple[Verdict, bytes]:
    """The verdict on ``raw`` and what the reader gets for it (``engine``, or this thread's).

    When only the response fails, the exception carries the verdict (``failed_verdict``): a
    report still names what was found."""
    engine = engine if engine is not None else _engine_for(policy)
    verdict = engine.scan(raw)
    try:
        return verdict, engine.apply(raw, verdict)
    except Exception as exc:
        exc.mailguard_verdict = verdict  # type: ignore[attr-defined]
        raise


def failed_verdict(exc: BaseException) -> Verdict | None:
    """The verdict of a job that failed after its scan (in the response), else None."""
    return getattr(exc, "mailguard_verdict", None)


def quarantines(policy: Policy, quarantine_dir: str | None) -> bool:
    """Whether originals of changed messages are kept at all (``response.quarantine``, a folder)."""
    return bool(policy.quarantine and quarantine_dir)


def keeps_original(raw: bytes, delivered: bytes, policy: Policy, quarantine_dir: str | None) -> bool:
    """Whether the original goes to the quarantine: the reader gets something else."""
    return quarantines(policy, quarantine_dir) and delivered != raw


def keep_original(quarantine: Any, raw: bytes, verdict: Verdict, source: str) -> str:
    """Keep ``raw`` (durably: quarantine.py syncs it) in ``quarantine``, a folder or a
    ``Quarantine``; its id."""
    from mailguard.quarantine import Quarantine

    if not isinstance(quarantine, Quarantine):
        quarantine = Quarantine(Path(quarantine))
    return quarantine.add(raw, verdict, source)


def outcome_of(raw: bytes, verdict: Verdict, delivered: bytes, policy: Policy, quarantine_dir: str | None,
               source: str, started: float) -> ScanOutcome:
    changed = delivered != raw
    quarantine_id = None
    quarantine_error = ""
    if keeps_original(raw, delivered, policy, quarantine_dir):
        try:
            quarantine_id = keep_original(quarantine_dir, raw, verdict, source)
        except Exception as exc:  # noqa: BLE001 - reported to the session, which withholds the message
            quarantine_error = f"quarantine: {type(exc).__name__}: {exc}"
    findings = verdict.findings
    # Most mail has no findings and nothing unscanned: the sorting below is skipped for it, a
    # visible share of a small message's hand-off (bench/mailbox_scan.py --mix everyday).
    return ScanOutcome(
        verdict.status.value,
        tuple(verdict.finding_names) if findings else (),
        tuple(verdict.reasons) if verdict.incomplete else (),
        delivered if changed else None,
        quarantine_id,
        time.monotonic() - started,
        quarantine_error,
        bool(quarantine_error),
        verdict.generation,
        tuple(sorted({(f.name, f.part) for f in findings})) if findings else (),
        verdict,
    )


def scan_message(raw: bytes, source: str, policy: Policy, quarantine_dir: str | None, *,
                 engine: Any = None, respond: bool = True) -> ScanOutcome:
    """Scan ``raw``, apply the response (``respond``: a report-only offline scan does not),
    keep the original when the reader gets something else and ``quarantine_dir`` is given, and
    say what became of it. Raises when the engine fails: each door has its rule for that (the
    live pool: ``settle_without_scan``; the offline scan: an error result)."""
    started = time.monotonic()
    if respond:
        verdict, delivered = rewritten(raw, policy, engine)
    else:
        verdict, delivered = (engine if engine is not None else _engine_for(policy)).scan(raw), raw
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
