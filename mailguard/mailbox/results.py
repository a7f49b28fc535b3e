"""One scanned message (or one thing that could not be scanned), and the run's totals.

``MessageResult.to_json()`` is the per-result object of ``scan --json``
(docs/architecture.md#offline-scan-output): the keys listed there are never dropped; the others are ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailguard.scan.verdict import Verdict

ERROR = "error"


@dataclass
class MessageResult:
    source: str                              # the mailbox or file named by the user (or found in a folder)
    file: str                                # the file that holds the message
    location: dict[str, object]              # where in the source (see above): mbox index/offset, or the file
    size: int = 0                            # bytes of the message as stored
    message_id: str = ""
    subject: str = ""
    verdict: "Verdict | None" = None         # None when the message could not be read at all
    error: str = ""                          # why this is an error result; "" otherwise
    changed: bool = False                    # --action tag|clean rewrote it
    write_error: str = ""                    # the rewrite asked for could not be done (status unchanged)
    quarantine_id: str = ""                  # where its original went
    # Carried from a worker to the writer only, never reported:
    rewritten: "bytes | tuple[int, bytes] | None" = field(default=None, repr=False)  # see worker.HeaderSplice
    span: tuple[int, int, int] | None = None          # mbox: (offset, length, newlines)
    identity: tuple[int, int, int] | None = None      # file: (inode, size, mtime_ns) when scanned

    @property
    def status(self) -> str:
        if self.error or self.verdict is None:
            return ERROR
        return self.verdict.status.value

    def where(self) -> str:
        """Where the message is, for people: ``box.mbox#3 (byte 1234)``, ``Maildir/cur/1:2,S``."""
        location = self.location
        if location.get("format") == "mbox" and "index" in location:
            return f"{self.source}#{location['index']} (byte {location['offset']})"
        return self.file

    def to_json(self) -> dict[str, object]:
        verdict = self.verdict
        return {
            "source": self.source,
            "file": self.file,
            "location": self.location,
            "message_id": self.message_id,
            "subject": self.subject,
            "size": self.size,
            "verdict": self.status,
            # Malware only; attachment types blocked by policy are listed apart (verdict "blocked"
            # when they are all there is).
            "detections": [
                {"name": f.name, "part": f.part, "detector": f.detector}
                for f in (verdict.findings if verdict else ()) if not f.is_policy
            ],
            "policy": [
                {"name": f.name, "part": f.part} for f in (verdict.findings if verdict else ()) if f.is_policy
            ],
            "unscanned": [
                {"reason": i.reason.value, "part": i.part, "detail": i.detail}
                for i in (verdict.incomplete if verdict else ())
            ],
            "error": self.error or None,
            "changed": self.changed,
            "write_error": self.write_error or None,
            "quarantine_id": self.quarantine_id or None,
        }


@dataclass
class Summary:
    messages: int = 0
    clean: int = 0
    infected: int = 0
    blocked: int = 0          # only attachment types blocked by policy (no malware found)
    unscanned: int = 0
    errors: int = 0
    bytes: int = 0
    seconds: float = 0.0
    changed: int = 0
    skipped: int = 0          # files left alone: not mail (a client's index), or deleted before they were read
    write_errors: int = 0     # messages --action could not rewrite
    # What the verdicts were made with (detectors/sources.py: engine version, each signature
    # source with its version or content hash), so a report can be reproduced and compared.
    detection: dict[str, object] | None = None

    def add(self, result: MessageResult) -> None:
        self.messages += 1
        self.bytes += result.size
        status = result.status
        if status == ERROR:
            self.errors += 1
        else:
            setattr(self, status, getattr(self, status) + 1)
        self.changed += result.changed
        self.write_errors += bool(result.write_error)

    def to_json(self) -> dict[str, object]:
        return {
            "messages": self.messages, "clean": self.clean, "infected": self.infected,
            "blocked": self.blocked, "unscanned": self.unscanned, "errors": self.errors, "bytes": self.bytes,
            "seconds": round(self.seconds, 3), "changed": self.changed, "write_errors": self.write_errors,
            "skipped": self.skipped, "detection": self.detection,
        }
