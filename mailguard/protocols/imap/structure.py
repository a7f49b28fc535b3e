"""The MIME tree of a message as IMAP addresses it: part numbers and byte spans.

IMAP section numbers follow RFC 9051 §6.4.5: the parts of a multipart are 1, 2, ...;
a non-multipart message has only part 1 (its body); a message/rfc822 part N has
N.HEADER, N.TEXT and the parts of the message inside it as N.1, N.2 ... One reading
only, the server's: sections are cut here so they match what the server would send.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_DEPTH = 64  # deeper nesting is treated as an opaque leaf
MAX_PARTS = 10_000  # per message; the rest is left inside its parent leaf

_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.MULTILINE)


@dataclass
class Entity:
    """A MIME entity: ``start`` header ``header_end`` (after the blank line) body ``end``."""

    start: int
    header_end: int
    end: int
    maintype: str = "text"
    subtype: str = "plain"
    params: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: the header fields as (name, unfolded value) in order
    fields: list[tuple[bytes, bytes]] = field(default_factory=list)
    children: list["Entity"] = field(default_factory=list)
    #: for message/rfc822 and message/global: the message inside
    message: "Entity | None" = None
    #: a multipart (here or in the message inside) whose close delimiter is its last line
    closed_at_end: bool = False

    @property
    def body_start(self) -> int:
        return self.header_end

    @property
    def is_multipart(self) -> bool:
        return self.maintype == "multipart"

    def field(self, name: bytes) -> bytes | None:
        lowered = name.lower()
        for key, value in self.fields:
            if key.lower() == lowered:
                return value
        return None

    def param(self, name: bytes) -> bytes | None:
        lowered = name.lower()
        for key, value in self.params:
            if key.lower() == lowered:
                return value
        return None


def header_end(data: bytes, start: int, end: int) -> int:
    """Offset just after the blank line that ends the header at ``start`` (``end`` when there is none)."""
    if data.startswith(b"\r\n", start) and start + 2 <= end:
        return start + 2
    if data.startswith(b"\n", start) and start + 1 <= end:
        return start + 1
    crlf = data.find(b"\r\n\r\n", start, end)
    lf = data.find(b"\n\n", start, end)
    candidates = [pos + 4 for pos in (crlf,) if pos >= 0] + [pos + 2 for pos in (lf,) if pos >= 0]
    return min(candidates) if candidates else end


def parse_fields(header: bytes) -> list[tuple[bytes, bytes]]:
    """Header fields in order, values unfolded (RFC 5322 §2.2.3) and stripped."""
    fields: list[tuple[bytes, bytes]] = []
    for match in _FIELD.finditer(header):
        start = match.end()
        nxt = _FIELD.search(header, start)
        stop = nxt.start() if nxt else len(header)
        # A continuation line starts with white space; a line that does not, and is no
        # field either, ends the value too.
        value_end = start
        for line_end in _line_ends(header, start, stop):
            value_end = line_end
            if line_end >= stop or header[line_end : line_end + 1] not in (b" ", b"\t"):
                break
        value = re.sub(rb"\r?\n(?=[ \t])", b"", header[start:value_end]).strip()
        fields.append((match.group(1), value))
    return fields


def _line_ends(data: bytes, start: int, stop: int):  # type: ignore[no-untyped-def]
    pos = start
    while pos < stop:
        nl = data.find(b"\n", pos, stop)
        if nl < 0:
            yield stop
            return
        pos = nl + 1
        yield pos


def parse_content_type(value: bytes | None, default: tuple[str, str]) -> tuple[str, str, list[tuple[bytes, bytes]]]:
    if value is None:
        maintype, subtype = default
        return maintype, subtype, ([(b"charset", b"us-ascii")] if default == ("text", "plain") else [])
    head, _, rest = value.partition(b";")
    maintype, _, subtype = head.strip().partition(b"/")
    params = parse_params(rest)
    if not maintype or not subtype:
        return "text", "plain", params or [(b"charset", b"us-ascii")]
    return maintype.decode("latin-1").strip().lower(), subtype.decode("latin-1").strip().lower(), params


_PARAM = re.compile(rb'\s*([^=\s;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)\s*;?')


def parse_params(text: bytes) -> list[tuple[bytes, bytes]]:
    """``; a=b; c="d e"`` as [(a, b), (c, d e)], values unquoted, names as written."""
    params = []
    for match in _PARAM.finditer(text):
        value = match.group(2).strip()
        if value.startswith(b'"') and value.endswith(b'"') and len(value) >= 2:
            value = re.sub(rb"\\(.)", rb"\1", value[1:-1])
        params.append((match.group(1), value))
    return params


def parse_message(data: bytes) -> Entity:
    """The tree of a whole message."""
    budget = [MAX_PARTS]
    return _parse_entity(data, 0, len(data), ("text", "plain"), 0, budget)


def _parse_entity(
    data: bytes, start: int, end: int, default: tuple[str, str], depth: int, budget: list[int]
) -> Entity:
    hend = header_end(data, start, end)
    fields = parse_fields(data[start:hend])
    entity = Entity(start=start, header_end=hend, end=end, fields=fields)
    entity.maintype, entity.subtype, entity.params = parse_content_type(entity.field(b"content-type"), default)
    if depth >= MAX_DEPTH or budget[0] <= 0:
        return entity
    if entity.is_multipart:
        boundary = entity.param(b"boundary")
        if boundary:
            child_default = ("message", "rfc822") if entity.subtype == "digest" else ("text", "plain")
            spans, entity.closed_at_end = split_multipart(data, hend, end, boundary)
            for cstart, cend in spans:
                budget[0] -= 1
                child = _parse_entity(data, cstart, cend, child_default, depth + 1, budget)
                if child.closed_at_end:
                    _take_line_end(data, child, end)
                entity.children.append(child)
    elif entity.maintype == "message" and entity.subtype in ("rfc822", "global"):
        budget[0] -= 1
        entity.message = _parse_entity(data, hend, end, ("text", "plain"), depth + 1, budget)
        entity.closed_at_end = entity.message.closed_at_end
    return entity


def _take_line_end(data: bytes, child: Entity, limit: int) -> None:
    """A part whose inner multipart ends with its close delimiter keeps the line end after it,
    although RFC 2046 gives that CRLF to the next delimiter: Dovecot counts it in the part
    (its BODY[n] and BODYSTRUCTURE size), and sections must be cut as the server cuts them."""
    for ending in (b"\r\n", b"\n"):
        if data.startswith(ending, child.end, limit):
            child.end += len(ending)
            if child.message is not None:
                child.message.end = child.end
            return


def split_multipart(data: bytes, start: int, end: int, boundary: bytes) -> tuple[list[tuple[int, int]], bool]:
    """Byte spans of the body parts between ``--boundary`` delimiter lines (RFC 2046 §5.1.1),
    and whether the close delimiter is the last line (no epilogue, no line end after it).

    A part ends before the line end that precedes the next delimiter: that CRLF belongs
    to the delimiter, not to the part.
    """
    delimiter = b"--" + boundary
    spans: list[tuple[int, int]] = []
    part_start: int | None = None
    pos = start
    while pos < end:
        line_end = data.find(b"\n", pos, end)
        next_pos = end if line_end < 0 else line_end + 1
        if data.startswith(delimiter, pos, end):
            tail = data[pos + len(delimiter) : next_pos].rstrip(b"\r\n")
            closing = tail.startswith(b"--")
            if closing or not tail.strip(b" \t"):
                if part_start is not None:
                    spans.append((part_start, _before_line_end(data, part_start, pos)))
                if closing:
                    return spans, next_pos >= end and not data[pos:end].endswith(b"\n")
                part_start = next_pos
        pos = next_pos
    if part_start is not None:  # no closing delimiter: the last part runs to the end
        spans.append((part_start, end))
    return spans, False


def _before_line_end(data: bytes, floor: int, pos: int) -> int:
    if pos - 2 >= floor and data[pos - 2 : pos] == b"\r\n":
        return pos - 2
    if pos - 1 >= floor and data[pos - 1 : pos] == b"\n":
        return pos - 1
    return pos


def find_part(root: Entity, path: tuple[int, ...]) -> Entity | None:
    """The entity a part number names (``(2, 1)`` for ``2.1``), or None when there is no such part."""
    container = root
    for depth, number in enumerate(path):
        if depth:
            # Below a message/rfc822 part come the parts of the message inside it; a
            # multipart's parts are its children; a leaf has no parts.
            if container.message is not None:
                container = container.message
            elif not container.is_multipart:
                return None
        if container.is_multipart:
            if not 1 <= number <= len(container.children):
                return None
            container = container.children[number - 1]
        elif number != 1:
            return None
        # else: a message whose body is not multipart has exactly one part, part 1,
        # which is that body; the entity stays the same (RFC 9051 §6.4.5).
    return container
