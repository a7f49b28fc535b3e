"""The results of an mbox being rewritten, held until its new file is in place, or is not.

A rewritten mbox is one new file, put in place at the end (rewrite.py). Until then a result that
says "changed" is a promise: if the rewrite is abandoned later (a quarantine or disk failure on a
later message, a failed commit), the mailbox is left as it was, and a result already printed would
say otherwise. So ``--action tag|clean`` holds an mbox's results until it is closed, and corrects
the promises that did not hold before anyone sees them. (The output then shows an mbox being
rewritten all at once, when it is done; the progress display still moves as its messages are
scanned: ``OfflineScan.progress`` is told of each result when it is held.)

Memory stays bounded however large the mbox: past ``IN_MEMORY`` results they are pickled to a
private temporary file (created 0600 and unlinked at once: results carry subjects and message ids).
"""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Iterator
from typing import IO

from mailguard.mailbox.results import MessageResult

__all__ = ["IN_MEMORY", "NOT_COMMITTED", "HeldResults"]

#: results kept in memory before the rest go to the temporary file
IN_MEMORY = 2048
#: what a result that would have been rewritten says when its mbox was left unchanged
NOT_COMMITTED = "not rewritten: mailbox left unchanged"


class HeldResults:
    def __init__(self) -> None:
        self._memory: list[MessageResult] = []
        self._spool: IO[bytes] | None = None
        self._spooled = 0

    def add(self, result: MessageResult) -> None:
        if len(self._memory) < IN_MEMORY:
            self._memory.append(result)
            return
        if self._spool is None:
            self._spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed in release/close
        pickle.dump(result, self._spool, protocol=pickle.HIGHEST_PROTOCOL)
        self._spooled += 1

    def release(self, committed: bool) -> Iterator[MessageResult]:
        """Every result, in the order added; when the rewrite was not ``committed``, none says
        it changed its message."""
        try:
            for result in self._in_order():
                if not committed and result.changed:
                    result.changed = False
                    result.write_error = result.write_error or NOT_COMMITTED
                yield result
        finally:
            self.close()

    def _in_order(self) -> Iterator[MessageResult]:
        memory, self._memory = self._memory, []
        yield from memory
        if self._spool is not None:
            self._spool.seek(0)
            for _ in range(self._spooled):
                yield pickle.load(self._spool)

    def close(self) -> None:
        self._memory = []
        if self._spool is not None:
            self._spool.close()
            self._spool = None
