"""What the engine found in a message: findings, and the verdict built from them.

These are the small shared types every door (live proxy, offline scan) and every
detector speaks. A verdict is deterministic: findings are sorted, so the same
message gives the same verdict and the same rewrite whichever door it came through.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Status(str, enum.Enum):
    CLEAN = "clean"
    INFECTED = "infected"
    UNSCANNED = "unscanned"
    # Only policy findings (an attachment type blocked whatever its content): acted on like an
    # infected message, but reported apart, since no malware was found (blocked_types.py).
    BLOCKED = "blocked"


#: ``Finding.detector`` of policy findings (detectors/blocked_types.py), which are no detections
POLICY_DETECTOR = "policy"


class Reason(str, enum.Enum):
    """Why (part of) a message could not be scanned; shown in ``X-MailGuard-Result``."""

    LIMIT = "limit"            # size, nesting or total-unpacked limit hit (bombs end here)
    ENCRYPTED = "encrypted"    # password-protected archive member or document
    TIMEOUT = "timeout"        # threatsense.limits.max-scan-time ran out
    CORRUPT = "corrupt"        # a container we could not decode
    ENGINE_ERROR = "engine-error"  # a detector failed (clamd down, bad reply)
    UNSUPPORTED = "unsupported"    # e.g. message/partial, which cannot be scanned alone


@dataclass(frozen=True, order=True)
class Finding:
    """One detection: its name, the detector that made it, and where (``2/invoice.zip/payload.exe``)."""

    name: str
    detector: str
    part: str

    @property
    def is_policy(self) -> bool:
        return self.detector == POLICY_DETECTOR


@dataclass(frozen=True, order=True)
class Incomplete:
    """A part that could not be scanned, and why."""

    reason: Reason
    part: str
    detail: str = ""


@dataclass(frozen=True)
class Verdict:
    status: Status
    findings: tuple[Finding, ...] = ()
    incomplete: tuple[Incomplete, ...] = ()
    # Extra facts the doors may report (e.g. bytes scanned); never part of equality.
    stats: dict[str, int] = field(default_factory=dict, compare=False, hash=False)
    # The signature generation of the engine that made it (detectors/sources.py); "" unknown.
    generation: str = field(default="", compare=False)

    @classmethod
    def build(cls, findings: list[Finding], incomplete: list[Incomplete], generation: str = "") -> "Verdict":
        """Sorted and de-duplicated, so the verdict does not depend on scan order."""
        if not findings and not incomplete:
            return cls(Status.CLEAN, generation=generation)  # nearly every message
        found = tuple(sorted(set(findings)))
        missed = tuple(sorted(set(incomplete)))
        if any(not f.is_policy for f in found):
            status = Status.INFECTED
        elif found:
            status = Status.BLOCKED
        elif missed:
            status = Status.UNSCANNED
        else:
            status = Status.CLEAN
        return cls(status, found, missed, generation=generation)

    @property
    def acted_on(self) -> bool:
        """Infected or blocked by policy: what response.action applies to."""
        return self.status is Status.INFECTED or self.status is Status.BLOCKED

    @property
    def detection_names(self) -> list[str]:
        """Unique malware detection names in a stable order (policy findings apart)."""
        return sorted({f.name for f in self.findings if not f.is_policy})

    @property
    def policy_names(self) -> list[str]:
        """Unique policy finding names (``Policy.BlockedAttachment.EXE``)."""
        return sorted({f.name for f in self.findings if f.is_policy})

    @property
    def finding_names(self) -> list[str]:
        """Every finding's name, detections and policy alike: what the subject prefix shows."""
        return sorted({f.name for f in self.findings})

    @property
    def reasons(self) -> list[str]:
        return sorted({i.reason.value for i in self.incomplete})
