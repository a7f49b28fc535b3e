"""Sizes a server claims are hints for buffering; the octets that arrive decide (sans I/O).

RFC822.SIZE is the server's word (docs/pitfalls.md#claimed-sizes-are-hints). Taken as the truth,
a small message claimed huge would be passed on as "too large to scan" without a scan; claimed
small and sent huge, it would be held beyond our caps. So a message is fetched with at most one octet more than we
scan (``fetch_window``), and what came decides how it is answered (``handling``).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailguard.protocols.imap.core import SessionCore


class Handling(enum.Enum):
    #: the octets fit: scanned, and served from the scanned copy
    SCAN = "scan"
    #: too large to hold, and the client may have it streamed through tagged unscanned
    STREAM = "stream"
    #: too large to hold and scan: a notice in its place
    NOTICE = "notice"


def fetch_window(claimed: int | None, largest: int) -> int | None:
    """The partial length to ask for (``BODY.PEEK[]<0.n>``), or None to ask for the whole message:
    a message claimed larger than ``largest`` is asked for one octet more than that, no more."""
    return largest + 1 if claimed is not None and claimed > largest else None


def handling(claimed: int | None, arrived: int, largest: int, *, may_stream: bool) -> Handling:
    """What to do with a message of which ``arrived`` octets came (asked as ``fetch_window`` says).

    Streaming announces the server's claimed size to the client as the literal's length, so it is
    only done when the claim agrees that the message is too large; a claim the octets contradict
    gets the notice."""
    if arrived <= largest:
        return Handling.SCAN
    if may_stream and claimed is not None and claimed > largest:
        return Handling.STREAM
    return Handling.NOTICE


def largest_message(machine: "SessionCore") -> int:
    """The largest message we fetch: one octet less than a FETCH literal may hold (the one-trip
    window asks for one more), and room for the framing within a whole response."""
    limits = machine.limits
    return min(limits.max_response_literal - 1, limits.max_response_size - 64 * 1024)
