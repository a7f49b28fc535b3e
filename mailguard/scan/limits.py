"""The per-message scan budget: nesting depth, bytes unpacked, and time.

One ``Budget`` is made per message and handed down through the MIME walk and the
archive readers, so a bomb hidden anywhere in a message draws on the same account
(``threatsense.limits.*``). Exceeding it raises ``ScanIncomplete``; the engine turns
that into an ``unscanned`` part, never into ``clean`` (fail closed:
docs/pitfalls.md#limits-bombs-and-missing-decoders).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailguard.scan.verdict import Reason

if TYPE_CHECKING:
    from mailguard.scan.policy import Policy  # for annotations only: policy imports this module


class ScanIncomplete(Exception):
    """A part could not be fully scanned; ``reason`` says why."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


@dataclass
class Budget:
    max_object_size: int          # an object (part or member) larger than this is not scanned
    max_member_size: int          # one unpacked archive member
    max_total_unpacked: int       # all unpacked bytes of one message together
    max_nesting: int              # archive / attached-message depth
    deadline: float               # time.monotonic() value after which scanning stops
    unpacked: int = field(default=0)

    @classmethod
    def for_message(cls, policy: Policy) -> Budget:
        return cls(
            max_object_size=policy.max_object_size,
            max_member_size=policy.max_archive_file_size,
            max_total_unpacked=policy.max_archive_file_size,
            max_nesting=policy.archive_nesting_level,
            deadline=time.monotonic() + policy.max_scan_time,
        )

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise ScanIncomplete(Reason.TIMEOUT, "max-scan-time exceeded")

    def check_depth(self, depth: int) -> None:
        if depth > self.max_nesting:
            raise ScanIncomplete(Reason.LIMIT, f"nesting deeper than {self.max_nesting}")

    def charge(self, nbytes: int) -> None:
        """Account for ``nbytes`` more unpacked bytes; raise when the message's total is spent."""
        self.unpacked += nbytes
        if self.unpacked > self.max_total_unpacked:
            raise ScanIncomplete(Reason.LIMIT, "total unpacked size limit exceeded")

    def remaining(self) -> int:
        """How many more bytes any decompressor may produce (use as its max_length)."""
        return max(0, min(self.max_member_size, self.max_total_unpacked - self.unpacked))
