"""FETCH responses: split into data items, and built back (RFC 9051 §7.5.2).

The msg-att list is tokenised completely, whatever the order of its items and however many
literals it carries (docs/pitfalls.md#several-literals-in-one-fetch), so no body-bearing item
can slip through behind another.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.imap.fetch import FetchAtt, parse_att
from mailguard.protocols.imap.lexer import Lexer, NodeKind
from mailguard.protocols.imap.responses import Response


@dataclass(frozen=True)
class DataItem:
    #: upper-case item name without section: UID, FLAGS, BODY, BODYSTRUCTURE, RFC822.SIZE...
    name: str
    #: the item name as sent, e.g. ``BODY[1.MIME]<0>``
    key: bytes
    #: the value exactly as sent (literals included)
    raw_value: bytes
    #: the value's atom text or string contents
    value: bytes
    #: the item was a section (``BODY[...]``), as opposed to plain ``BODY``
    sectioned: bool


def number_value(value: bytes) -> int | None:
    """``value`` as a number when it is one of at most 20 digits (a number64 has 20 at most;
    a longer one is no number, and Python refuses to convert 4300 digits or more)."""
    return int(value) if value.isdigit() and len(value) <= 20 else None


@dataclass(frozen=True)
class FetchData:
    number: int
    items: tuple[DataItem, ...]

    def get(self, name: str) -> DataItem | None:
        for item in self.items:
            if item.name == name:
                return item
        return None

    @property
    def uid(self) -> int | None:
        item = self.get("UID")
        found = None if item is None else number_value(item.value)
        # a UID is an nz-number of 32 bits (RFC 9051 §9): anything else is no UID
        return found if found is not None and 0 < found < 2**32 else None

    def size(self, name: str = "RFC822.SIZE") -> int | None:
        """A size the server claims (a number64, RFC 9051 §9), or None."""
        item = self.get(name)
        return None if item is None else number_value(item.value)

    @property
    def carries_content(self) -> bool:
        """Some item holds message text: BODY[...], BINARY[...], RFC822, RFC822.TEXT/HEADER."""
        return any(
            (item.name in ("BODY", "BINARY") and item.sectioned)
            or item.name in ("RFC822", "RFC822.TEXT", "RFC822.HEADER")
            for item in self.items
        )


def parse_fetch_response(response: Response) -> FetchData:
    if response.word != "FETCH":
        raise ValueError("not a FETCH response")
    if response.number is None:
        # RFC 9051 §7.5.2: "* nz-number FETCH"; without one nobody knows which message it is
        raise RemoteProtocolError(f"FETCH response without a message number {response.raw[:80]!r}")
    raw = response.raw
    start = raw[:64].upper().find(b"FETCH") + len(b"FETCH")  # not raw.upper(): raw holds the message
    lexer = Lexer(raw, start)
    listed = lexer.read_node()
    if listed.kind is not NodeKind.LIST or len(listed.items) % 2:
        raise RemoteProtocolError(f"malformed FETCH response {raw[:80]!r}")
    if raw[lexer.pos :].lstrip(b" ") not in (b"\r\n", b"\n"):
        # RFC 9051 §7.5.2: the msg-att list ends the response. Anything after it (a literal
        # above all) is no item the proxy judged, and a client would keep it as message data.
        raise RemoteProtocolError(f"data after the FETCH list in {raw[:80]!r}")
    items = []
    for key, value in zip(listed.items[::2], listed.items[1::2]):
        if key.kind is not NodeKind.ATOM:
            raise RemoteProtocolError(f"FETCH item name is not an atom in {raw[:80]!r}")
        att = echoed_att(key.value)
        items.append(
            DataItem(
                name=att.name,
                key=key.value,
                raw_value=raw[value.start : value.end],
                value=value.value,
                sectioned=att.section is not None,
            )
        )
    return FetchData(number=response.number, items=tuple(items))


#: echoed item names remembered parsed are at most this long: a server may echo a valid name
#: of megabytes (up to max_response_line), and the cache is process-wide
REMEMBERED_ATT_MAX = 64


def echoed_att(name: bytes) -> FetchAtt:
    """``name`` as the server echoed it, parsed (``BODY[1.MIME]``)."""
    if len(name) > REMEMBERED_ATT_MAX:
        return parse_att(name, echoed=True)
    return _remembered_att(name)


@functools.lru_cache(maxsize=256)  # a server names the same few items in every response
def _remembered_att(name: bytes) -> FetchAtt:
    return parse_att(name, echoed=True)


def build_fetch_response(number: int, items: list[tuple[bytes, bytes]], tail: bytes = b"") -> bytes:
    """``* number FETCH (key value ...)`` from (key, already-encoded value) pairs, then ``tail``.

    One join: a value may be a whole message, and every concatenation would copy it again."""
    pieces = [b"* %d FETCH (" % number]
    for key, value in items:
        pieces += (key, b" ", value, b" ")
    if items:
        pieces.pop()
    pieces += (b")\r\n", tail)
    return b"".join(pieces)
