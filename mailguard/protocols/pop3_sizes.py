"""Message sizes the client sees after a rewrite, and the refusal for a message too large to scan.

RFC 1939 §5: LIST and STAT report "the exact size of the message in octets". When the proxy has
delivered a rewritten message, later LIST/STAT answers in the session report the delivered size
(docs/pitfalls.md#pop3-sizes-after-a-rewrite). A size never goes below 0: the change is counted
from what the server sent, and a server whose LIST understates a message would otherwise have a
negative size listed.
"""

from __future__ import annotations

CRLF = b"\r\n"
UNSCANNED_TAG = b'X-MailGuard-Result: unscanned; reason="limit"\r\n'
# The answer to a RETR/TOP of a message too large to scan when on-scan-error is "block": an
# error, so the message stays on the server (a "+OK" notice would let the client delete it).
OVERSIZE_REFUSAL = b"-ERR [SYS/PERM] message too large to scan (mailguard); it stays on the server\r\n"

__all__ = ["OVERSIZE_REFUSAL", "UNSCANNED_TAG", "rewrite_listing", "rewrite_single_size"]


def rewrite_single_size(
    verb: str, has_argument: bool, line: bytes, delta: dict[int, int], deleted: set[int]
) -> bytes:
    """A STAT or ``LIST n`` status line with the delivered sizes."""
    words = line.split(b" ")
    if verb == "STAT" and len(words) >= 3 and words[2].isdigit():
        extra = sum(d for n, d in delta.items() if n not in deleted)
        words[2] = b"%d" % max(0, int(words[2]) + extra)
    elif verb == "LIST" and has_argument and len(words) >= 3 and words[1].isdigit():
        number = int(words[1])
        if number in delta and words[2].isdigit():
            words[2] = b"%d" % max(0, int(words[2]) + delta[number])
    return b" ".join(words)


def rewrite_listing(block: bytes, delta: dict[int, int]) -> bytes:
    """A LIST scan listing (wire block) with the delivered sizes."""
    lines = block.split(CRLF)
    for i, line in enumerate(lines):
        words = line.split(b" ")
        if len(words) >= 2 and words[0].isdigit() and words[1].isdigit():
            change = delta.get(int(words[0]))
            if change:
                words[1] = b"%d" % max(0, int(words[1]) + change)
                lines[i] = b" ".join(words)
    return CRLF.join(lines)
