"""FETCH requests: which data items a client asked for, and how each is echoed back.

Every data item that carries or describes message bytes
(docs/pitfalls.md#every-item-that-carries-message-text) is recognised, case-insensitively,
with its section spec kept exactly as the client wrote it, because clients match responses
to requests by that string (docs/pitfalls.md#section-specs-echoed-verbatim).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.imap.commands import Command
from mailguard.protocols.imap.lexer import Lexer, Node, NodeKind

#: Items whose value is (part of) the message text.
CONTENT_ITEMS = frozenset(
    {"BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "RFC822", "RFC822.PEEK", "RFC822.TEXT", "RFC822.HEADER"}
)
#: Items computed from the message: they change when a rewrite changes the message.
DERIVED_ITEMS = frozenset({"RFC822.SIZE", "BODYSTRUCTURE", "ENVELOPE", "BINARY.SIZE"})

# RFC 9051 §6.4.5: the macros stand for these items (BODY is FULL's BODY, without section).
MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}

_ITEM = re.compile(rb"^([A-Za-z0-9.\-]+)(?:\[([^\]]*)\])?(?:<([0-9]+)(?:\.([0-9]+))?>)?$")


@dataclass(frozen=True)
class FetchAtt:
    """One requested data item: ``BODY.PEEK[1.MIME]<0.100>`` has name BODY.PEEK, section 1.MIME, partial (0, 100)."""

    raw: bytes
    name: str
    section: bytes | None = None
    origin: int | None = None
    length: int | None = None

    @property
    def carries_content(self) -> bool:
        return self.name in CONTENT_ITEMS and (self.name != "BODY" or self.section is not None)

    @property
    def needs_message(self) -> bool:
        """The answer depends on the (rewritten) message bytes."""
        return self.carries_content or self.name in DERIVED_ITEMS or self.name == "BODY"

    @property
    def sets_seen(self) -> bool:
        """RFC 9051 §6.4.5: BODY[...], BINARY[...], RFC822 and RFC822.TEXT set \\Seen; .PEEK and HEADER do not."""
        if self.name in ("BODY", "BINARY"):
            return self.section is not None
        return self.name in ("RFC822", "RFC822.TEXT")

    def response_name(self) -> bytes:
        """How the item is named in the answer: ``BODY.PEEK[x]<0.9>`` is echoed ``BODY[x]<0>`` (RFC 9051 §7.5.2)."""
        name = {"BODY.PEEK": "BODY", "BINARY.PEEK": "BINARY", "RFC822.PEEK": "RFC822"}.get(self.name, self.name)
        out = name.encode("ascii")
        if self.section is not None:
            out += b"[" + self.section + b"]"
        if self.origin is not None:
            out += b"<%d>" % self.origin
        return out


@dataclass(frozen=True)
class FetchRequest:
    uid: bool
    sequence_set: bytes
    atts: tuple[FetchAtt, ...]
    #: the raw modifier list after the items, e.g. ``(CHANGEDSINCE 5)``, or empty
    modifiers: bytes

    @property
    def needs_message(self) -> bool:
        return any(att.needs_message for att in self.atts)

    @property
    def sets_seen(self) -> bool:
        return any(att.sets_seen for att in self.atts)


def parse_att(raw: bytes, *, echoed: bool = False) -> FetchAtt:
    """One data item; ``echoed`` for a response's item name, whose partial has an origin only."""
    match = _ITEM.match(raw)
    if match is None:
        raise RemoteProtocolError(f"unknown FETCH item {raw[:60]!r}")
    name = match.group(1).decode("ascii").upper()
    origin = int(match.group(3)) if match.group(3) is not None else None
    length = int(match.group(4)) if match.group(4) is not None else None
    if origin is not None and length is None and not echoed:
        raise RemoteProtocolError(f"partial without a length in {raw[:60]!r}")
    return FetchAtt(raw=raw, name=name, section=match.group(2), origin=origin, length=length)


def parse_fetch(command: Command) -> FetchRequest:
    """The items of a ``FETCH`` or ``UID FETCH`` command (macros expanded)."""
    if command.name not in ("FETCH", "UID FETCH"):
        raise ValueError(f"not a FETCH command: {command.name}")
    lexer = Lexer(command.raw, command.args_at)
    sequence = lexer.read_node()
    if sequence.kind is not NodeKind.ATOM:
        raise RemoteProtocolError("FETCH without a sequence set")
    spec = lexer.read_node()
    atts: list[FetchAtt]
    if spec.kind is NodeKind.LIST:
        atts = [_att(node) for node in spec.items]
    elif spec.kind is NodeKind.ATOM and spec.upper() in MACROS:
        atts = [FetchAtt(raw=name.encode(), name=name) for name in MACROS[spec.upper()]]
    else:
        atts = [_att(spec)]
    lexer.skip_spaces()
    modifiers = command.raw[lexer.pos :].rstrip(b"\r\n")
    return FetchRequest(
        uid=command.name == "UID FETCH", sequence_set=sequence.value, atts=tuple(atts), modifiers=modifiers
    )


def _att(node: Node) -> FetchAtt:
    if node.kind is not NodeKind.ATOM:
        raise RemoteProtocolError("FETCH item is not an atom")
    return parse_att(node.value)


class SequenceSet:
    """A sequence or UID set such as ``1:4,7,9:*``; ``*`` counts as the largest number."""

    def __init__(self, text: bytes) -> None:
        self.ranges: list[tuple[int, int]] = []
        for part in text.split(b","):
            low, _, high = part.partition(b":")
            a, b = self._number(low), self._number(high or low)
            self.ranges.append((min(a, b), max(a, b)))

    @staticmethod
    def _number(text: bytes) -> int:
        if text == b"*":
            return 2**64
        if not text.isdigit():
            raise RemoteProtocolError(f"bad sequence set element {text!r}")
        return int(text)

    def __contains__(self, number: int) -> bool:
        return any(low <= number <= high for low, high in self.ranges)


def format_uid_set(uids: list[int]) -> bytes:
    """A compact UID set: ``1:3,7`` for [1, 2, 3, 7]."""
    out: list[bytes] = []
    ordered = sorted(set(uids))
    start = prev = ordered[0]
    for uid in ordered[1:] + [None]:  # type: ignore[list-item]
        if uid is not None and uid == prev + 1:
            prev = uid
            continue
        out.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
        if uid is not None:
            start = prev = uid
    return b",".join(out)
