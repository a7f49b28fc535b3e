"""Exit codes, for every command (docs/architecture.md#exit-codes): the one place they are decided."""

from __future__ import annotations

OK = 0          # success, nothing found
THREATS = 1     # threats found (scan)
ERROR = 2       # bad usage, bad settings, I/O failure
INCOMPLETE = 3  # nothing found, but something could not be scanned


def for_scan(infected: int, errors: int, unscanned: int) -> int:
    """A scan's exit code: threats win over errors, errors over incomplete."""
    if infected:
        return THREATS
    if errors:
        return ERROR
    if unscanned:
        return INCOMPLETE
    return OK
