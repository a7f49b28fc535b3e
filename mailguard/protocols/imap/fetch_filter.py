"""Which FETCH data items a server may pass to the client, and in what shape (default deny), sans I/O.

A client library hands every FETCH item to its caller, whether asked for or not (imaplib keeps
any literal as message data). So the proxy passes on only:

- in FETCH data nobody asked for (during IDLE, after NOOP, beside an answer, RFC 9051 §7.5.2
  "unilateral"): UID, FLAGS and MODSEQ (RFC 7162 §3.2), the only items a server announces
  changes with;
- in the answer to a FETCH the proxy relays (one that asks for no message text and nothing
  derived from it): the items the client asked for, plus those three;
- in an answer the proxy renders (render.py): what it computes from the scanned copy, plus
  the server's value for metadata items, under the same rules.

Each value must have the shape its grammar gives it (never a literal, which is where a message
would hide); an item that does not, and every other item, is dropped and named to the caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailguard.protocols.imap.fetch_response import DataItem, FetchData, build_fetch_response

#: what a server may say about a message unasked (RFC 9051 §7.5.2, RFC 7162 §3.2)
UNSOLICITED = frozenset({"UID", "FLAGS", "MODSEQ"})

_FLAG = rb"(?:\\\*|\\?[^\x00-\x20\x7f-\xff(){%*\"\\\]]+)"
_QUOTED_DATE = rb"\"[0-9A-Za-z :+\-]{1,40}\""
#: the shape of each metadata item's value (RFC 9051 §9 msg-att-dynamic/-static; RFC 7162 §7;
#: RFC 8474 §7; RFC 8514 §6): no literal, no string that could hold message text
SHAPES: dict[str, re.Pattern[bytes]] = {
    "UID": re.compile(rb"[1-9][0-9]{0,9}\Z"),
    "FLAGS": re.compile(rb"\((?:" + _FLAG + rb"(?: " + _FLAG + rb")*)?\)\Z"),
    "MODSEQ": re.compile(rb"\([0-9]{1,20}\)\Z"),
    "INTERNALDATE": re.compile(_QUOTED_DATE + rb"\Z"),
    "SAVEDATE": re.compile(rb"(?:" + _QUOTED_DATE + rb"|NIL)\Z", re.IGNORECASE),
    "EMAILID": re.compile(rb"\([A-Za-z0-9_\-]{1,255}\)\Z"),
    "THREADID": re.compile(rb"(?:\([A-Za-z0-9_\-]{1,255}\)|NIL)\Z", re.IGNORECASE),
}
#: items a client may have a FETCH relayed for (everything else is answered by the proxy)
METADATA = frozenset(SHAPES)


def well_formed(item: DataItem) -> bool:
    """A metadata item, unsectioned, whose value has its grammar's shape."""
    shape = SHAPES.get(item.name)
    return shape is not None and not item.sectioned and shape.match(item.raw_value) is not None


@dataclass(frozen=True)
class Filtered:
    """What the client gets for one FETCH response: ``raw`` (None: nothing), and what was dropped."""

    raw: bytes | None
    dropped: tuple[bytes, ...]


def filter_fetch(data: FetchData, asked: frozenset[str] = frozenset()) -> Filtered:
    """The FETCH response ``data`` with only the items allowed: UID, FLAGS, MODSEQ and the metadata
    items of ``asked``. Always built anew from the items kept, never the server's bytes: only what
    was judged goes on, whatever else the server's line held."""
    allowed = UNSOLICITED | (asked & METADATA)
    kept: list[tuple[bytes, bytes]] = []
    dropped: list[bytes] = []
    for item in data.items:
        if item.name in allowed and well_formed(item):
            kept.append((item.key, item.raw_value))
        else:
            dropped.append(item.key[:40])
    return Filtered(build_fetch_response(data.number, kept) if kept else None, tuple(dropped))


class AskedItems:
    """The metadata items asked for by the relayed FETCH commands still in flight (their answers
    are untagged, so any of them may be answering one)."""

    def __init__(self) -> None:
        self._by_tag: dict[bytes, frozenset[str]] = {}
        self.names: frozenset[str] = frozenset()

    def add(self, tag: bytes, names: frozenset[str]) -> None:
        self._by_tag[tag] = names & METADATA
        self._update()

    def done(self, tag: bytes) -> None:
        if self._by_tag.pop(tag, None) is not None:
            self._update()

    def _update(self) -> None:
        self.names = frozenset().union(*self._by_tag.values())


#: what a server may add, unasked, to an answer the proxy renders: FLAGS when the fetch set
#: \Seen (RFC 9051 §6.4.5), MODSEQ with CHANGEDSINCE (RFC 7162 §3.1.4.1); UID the proxy writes
ADDED = ("FLAGS", "MODSEQ")
#: metadata derived from the message that the server's answer may give for a message served
#: unchanged (its bytes are the scanned copy's); they must at least be lists
_STRUCTURES = frozenset({"ENVELOPE", "BODY", "BODYSTRUCTURE"})


def server_value(data: FetchData, name: str) -> DataItem | None:
    """The server's own item ``name`` in ``data``, when it is metadata in its grammar's shape, or a
    structure (ENVELOPE, BODY, BODYSTRUCTURE) that is a list; None: the proxy computes it or says NIL."""
    for item in data.items:
        if item.name != name or item.sectioned:
            continue
        if name in SHAPES:
            if well_formed(item):
                return item
        elif name in _STRUCTURES and item.raw_value.startswith(b"("):
            return item
    return None


def server_additions(data: FetchData, requested: frozenset[str]) -> list[DataItem]:
    """The items of ``ADDED`` the server put in ``data`` and the client did not ask for, once each,
    in the server's order."""
    found: list[DataItem] = []
    for item in data.items:
        if item.name in ADDED and item.name not in requested and all(f.name != item.name for f in found):
            if server_value(data, item.name) is item:
                found.append(item)
    return found
