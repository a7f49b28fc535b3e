"""Which lines of a LIST or UIDL listing the client may see (RFC 1939 §5, §7;
docs/pitfalls.md#pop3-listings).

Listings are checked line by line, like CAPA (pop3_capa): a scan listing line is a message
number, one space and a size, optionally followed by more text (RFC 1939 §5 "makes no
requirement on what follows the message size"); a unique-id listing line is a message number,
one space and 1 to 70 characters 0x21-0x7E (§7). Any other line is dropped, not relayed, and the
driver logs how many: a client reads every line of a listing as data about a message, so a line
the proxy cannot read as such (text smuggled into the answer, a stray "." from a bare line end)
must not reach it. Dropping rather than refusing the whole answer: the good lines still let the
client fetch the messages they name, and a message whose line was dropped stays on the server.
"""

from __future__ import annotations

import re

from mailguard.protocols.pop3_framing import CRLF, read_message

__all__ = ["read_listing"]

_LINE = {
    "LIST": re.compile(rb"[0-9]{1,10} [0-9]{1,20}(?: [\x20-\x7e]*)?"),
    "UIDL": re.compile(rb"[0-9]{1,10} [\x21-\x7e]{1,70}"),
}


def read_listing(verb: str, block: bytes) -> tuple[bytes, int]:
    """The good lines of a LIST or UIDL answer's block, each ending with CRLF (they never start
    with a dot: nothing to stuff), and how many lines were dropped."""
    pattern = _LINE[verb]
    lines = read_message(block)[0].split(CRLF)[:-1]
    kept = [line for line in lines if pattern.fullmatch(line)]
    return b"".join(line + CRLF for line in kept), len(lines) - len(kept)
