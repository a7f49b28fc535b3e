"""Answering one message of a client's FETCH from the bytes we serve (RFC 9051 §7.5.2).

Content items are cut from the served message; structures (BODYSTRUCTURE, BODY, ENVELOPE) are
computed from it, and RFC822.SIZE too when the message changed
(docs/pitfalls.md#sizes-and-structure-after-a-rewrite); of the server's answer only metadata in its
grammar's shape is used (fetch_filter.py); the section spec is echoed as the client wrote it
(docs/pitfalls.md#section-specs-echoed-verbatim).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mailguard.protocols.imap.bodystructure import body_structure, envelope
from mailguard.protocols.imap.encode import literal
from mailguard.protocols.imap.fetch import FetchAtt, FetchRequest
from mailguard.protocols.imap.fetch_filter import server_additions, server_value
from mailguard.protocols.imap.fetch_response import FetchData, build_fetch_response
from mailguard.protocols.imap.sections import apply_partial, cut_binary, cut_section, parse_section
from mailguard.protocols.imap.structure import Entity, parse_message

#: items whose value follows from the message bytes
DERIVED = ("RFC822.SIZE", "BODYSTRUCTURE", "BODY", "ENVELOPE", "BINARY.SIZE")


@dataclass
class Record:
    """One message of the client's FETCH: what the server said, and what we serve."""

    data: FetchData
    uid: int
    size: int
    served: bytes | None = None
    unchanged: bool = True
    _root: Entity | None = field(default=None, repr=False)

    #: the message as the server sent it, when it came with the first answer
    raw: bytes | None = None
    #: ready to be answered: served is set, or the message went away meanwhile
    resolved: bool = False
    #: the server's RFC822.SIZE, when it sent one
    server_size: int | None = None
    #: not served at all: its original could not be kept in quarantine (the FETCH ends NO)
    withheld: bool = False
    #: answered already, streamed through unscanned (too large to hold; oversize.py)
    streamed: bool = False

    def release(self) -> None:
        """Forget the bytes once answered (a whole-mailbox FETCH keeps every record)."""
        self.served, self._root = None, None

    @property
    def root(self) -> Entity:
        if self._root is None:
            assert self.served is not None
            self._root = parse_message(self.served)
        return self._root


def render(record: Record, request: FetchRequest, tail: bytes = b"") -> bytes:
    """The client's FETCH answer for one message, items in the order the client asked for them,
    followed by ``tail`` (a completion line: one write, one copy of the message)."""
    return _answer(record, request, lambda att: _value(record, att), tail)


_CONTENT_GOES_HERE = b"\0mailguard-streamed-content\0"


def render_around_content(record: Record, request: FetchRequest, size: int,
                          content_size: int) -> tuple[bytes, bytes, bool]:
    """The answer for a message streamed through rather than held (oversize.py):
    ``(head, tail, streamed)``. ``head`` ends with the literal's ``{content_size}\r\n`` when the
    client asked for text (``streamed``); the text goes between head and tail. RFC822.SIZE is
    ``size``; every other item is the server's."""

    def value(att: FetchAtt) -> tuple[bytes, bytes] | None:
        if att.carries_content:
            return (att.response_name(), b"{%d}\r\n" % content_size + _CONTENT_GOES_HERE)
        if att.name == "UID":
            return (b"UID", b"%d" % record.uid)
        if att.name == "RFC822.SIZE":
            return (b"RFC822.SIZE", b"%d" % size)
        return _servers(record, att.name)

    answer = _answer(record, request, value)
    head, found, tail = answer.partition(_CONTENT_GOES_HERE)
    return (head, tail, True) if found else (answer, b"", False)


def _answer(record: Record, request: FetchRequest,
            value: Callable[[FetchAtt], tuple[bytes, bytes] | None], tail: bytes = b"") -> bytes:
    """A FETCH answer: UID first for UID FETCH, the items asked for as ``value`` gives them, then
    the items the server may add on its own (FLAGS after a change, MODSEQ with CHANGEDSINCE);
    nothing else the server sent (fetch_filter.py)."""
    items: list[tuple[bytes, bytes]] = []
    requested = {att.name for att in request.atts}
    if request.uid and "UID" not in requested:
        items.append((b"UID", b"%d" % record.uid))
    for att in request.atts:
        found = value(att)
        if found is not None:
            items.append(found)
    for item in server_additions(record.data, frozenset(requested)):
        items.append((item.key, item.raw_value))
    return build_fetch_response(record.data.number, items, tail)


def _servers(record: Record, name: str) -> tuple[bytes, bytes] | None:
    """The server's own answer for the item ``name``, as it gave it, if it may be passed on."""
    found = server_value(record.data, name)
    return None if found is None else (found.key, found.raw_value)


def _value(record: Record, att: FetchAtt) -> tuple[bytes, bytes] | None:
    name = att.name
    if name == "UID":
        return (b"UID", b"%d" % record.uid)
    if record.served is None:
        # The message went away between our two fetches: say so rather than say nothing.
        if att.carries_content or name in ("RFC822.SIZE", "BODYSTRUCTURE", "BODY", "ENVELOPE", "BINARY.SIZE"):
            return (att.response_name(), b"NIL")
    elif att.carries_content:
        return (att.response_name(), _content(record, att))
    elif name in ("BODYSTRUCTURE", "BODY", "ENVELOPE"):
        # Derived from the message: computed from the scanned copy, never taken from the server,
        # whose strings could carry anything (docs/pitfalls.md#every-item-that-carries-message-text);
        # for a message served unchanged it is what an honest server says
        # (tests/proxy/test_imap_dovecot.py).
        return (att.response_name(), _derived(record, att))
    elif name == "RFC822.SIZE" and not record.unchanged:
        return (att.response_name(), _derived(record, att))
    elif name == "BINARY.SIZE":
        part = cut_binary(record.served, record.root, parse_section(att.section or b""))
        return (att.response_name(), b"%d" % len(part or b""))
    elif name == "RFC822.SIZE":
        return (b"RFC822.SIZE", b"%d" % len(record.served))
    return _servers(record, name)

def _content(record: Record, att: FetchAtt) -> bytes:
    served = record.served
    assert served is not None
    name = att.name
    part: bytes | None
    if name in ("RFC822", "RFC822.PEEK"):
        part = served
    elif name == "RFC822.TEXT":
        part = served[record.root.body_start :]
    elif name == "RFC822.HEADER":
        part = served[: record.root.header_end]
    elif name in ("BINARY", "BINARY.PEEK"):
        part = apply_partial(
            cut_binary(served, record.root, parse_section(att.section or b"")) or b"", att.origin, att.length
        )
        return literal(part, binary=b"\0" in part)
    elif not att.section:
        part = served  # BODY[]: no need to walk the structure
    else:
        part = cut_section(served, record.root, parse_section(att.section))
    # A section the message does not have is an empty string, as Dovecot answers it.
    return literal(apply_partial(part or b"", att.origin, att.length))

def _derived(record: Record, att: FetchAtt) -> bytes:
    served = record.served
    assert served is not None
    if att.name == "BODYSTRUCTURE":
        return body_structure(served, extensible=True)
    if att.name == "BODY":
        return body_structure(served, extensible=False)
    if att.name == "ENVELOPE":
        return envelope(served, record.root)
    return b"%d" % len(served)
