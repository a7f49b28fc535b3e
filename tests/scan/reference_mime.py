"""Frozen copy of the walk before the speed work: the oracle for test_walk_equivalence.py.

The lenient MIME walk: raw message bytes in, a tree of parts with byte offsets out.

Offsets, not copies: rewriting splices on them (docs/architecture.md#rewrite-by-splicing) and the
IMAP layer numbers sections from the same tree (RFC 3501 §6.4.5: ``1``, ``2.1``, ``2.HEADER``).

Where clients disagree about structure (duplicate boundaries, delimiters only a lenient
client accepts, bare CRs, a close delimiter followed by more parts...), every reading is
kept: the primary one in ``Part.children``, the others in ``Part.alternates``, and the part
is flagged ``ambiguous`` so a rewrite never trusts a byte range a client might read
differently (docs/pitfalls.md#boundary-tricks, "union scanning").

Only ``bytes.find`` and ``re`` touch the bodies; the stdlib ``email`` package is not used
(it is slow, and it re-serialises).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from mailguard.scan.decoders import decodings_for
from tests.scan.reference_mime_headers import EntityInfo, Header, describe_entity, parse_header_block

MAX_PARTS = 10_000        # entities per message; beyond this the rest is not walked
MAX_MIME_DEPTH = 64       # multipart / message nesting the walk follows
MAX_BOUNDARY_READINGS = 4  # distinct boundary strings tried per multipart
MAX_WALK_AMPLIFICATION = 16  # bytes examined by all readings together, as a multiple of the message

_PADDING = b" \t\x0b\x0c"  # transport padding after a delimiter (RFC 2046 §5.1.1, plus VT/FF)
_MESSAGE_TYPES = ("message/rfc822", "message/global")  # RFC 2046 §5.2.1, RFC 6532 §3.5


@dataclass(eq=False)
class Part:
    """One MIME entity. Offsets index ``source`` (the raw message unless ``detached``)."""

    number: str                  # IMAP section number ("" for the top-level message)
    is_message: bool             # a message (top level or encapsulated): has its own RFC 5322 header
    source: bytes
    header_start: int
    header_end: int
    body_start: int
    body_end: int
    headers: list[Header]
    info: EntityInfo
    eol: bytes                   # b"\n" (LF and CRLF) or b"\r" (CR-only)
    message_depth: int = 0       # how many message/rfc822 levels enclose it
    default_type: str = "text/plain"  # RFC 2045 §5.2; message/rfc822 inside multipart/digest (RFC 2046 §5.1.5)
    detached: bool = False       # offsets index a decoded buffer (base64 message/rfc822), not the raw message
    children: list[Part] = field(default_factory=list)
    alternates: list[Part] = field(default_factory=list)   # parts visible only under other readings
    ambiguous: list[str] = field(default_factory=list)     # why the structure below is uncertain
    problems: list[str] = field(default_factory=list)      # limits hit while walking this part
    preamble: tuple[int, int] | None = None
    epilogue: tuple[int, int] | None = None
    parent: Part | None = field(default=None, repr=False)

    # -------------------------------------------------------------- declared facts

    @property
    def media_type(self) -> str:
        """The primary media type, lower-case; the default type when none is usable."""
        for declared in self.info.media_types:
            if "/" in declared:
                return declared
        return self.default_type

    @property
    def encodings(self) -> tuple[str, ...]:
        """Every Content-Transfer-Encoding a client could apply; ``("7bit",)`` when none."""
        return self.info.encodings or ("7bit",)

    @property
    def filenames(self) -> tuple[str, ...]:
        return self.info.filenames

    @property
    def is_multipart(self) -> bool:
        return self.media_type.startswith("multipart/")

    @property
    def section(self) -> str:
        """The IMAP section of this entity's body when it is a leaf (RFC 3501 §6.4.5).

        A non-multipart message's body is section ``1`` of it: ``1`` at top level,
        ``2.1`` for a message attached as part 2.
        """
        if self.is_message and not self.children:
            return f"{self.number}.1" if self.number else "1"
        return self.number

    def body(self) -> memoryview:
        return memoryview(self.source)[self.body_start:self.body_end]

    def header_values(self, name: str) -> list[bytes]:
        return [h.value for h in self.headers if h.name == name and not h.hidden]

    # -------------------------------------------------------------- traversal

    def walk(self) -> Iterator[Part]:
        """This part and every part below it, alternates included, depth first."""
        stack = [self]
        while stack:
            part = stack.pop()
            yield part
            stack.extend(reversed(part.children + part.alternates))

    def leaves(self) -> Iterator[Part]:
        """Every part whose body is content (not further split), alternates included."""
        return (p for p in self.walk() if not p.children)

    def ancestors(self) -> Iterator[Part]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent


def parse_message(raw: bytes, *, email_files: bool = True) -> Part:
    """Walk ``raw`` into a tree. Never raises for any input; limits show up in ``problems``."""
    eol = b"\n" if raw.find(b"\n") != -1 else b"\r"  # CR-only messages (docs/pitfalls.md#boundary-tricks)
    walker = _Walker(email_files, len(raw))
    start = _skip_mbox_from_line(raw, eol)
    return walker.entity(raw, start, len(raw), "", is_message=True, depth=0, message_depth=0,
                         eol=eol, detached=False, parent=None)


def _skip_mbox_from_line(raw: bytes, eol: bytes) -> int:
    """An mbox "From " separator left at the top is not a header; keep it out of the block."""
    if raw.startswith(b"From "):
        nl = raw.find(eol)
        return len(raw) if nl == -1 else nl + 1
    return 0


class _Walker:
    def __init__(self, email_files: bool, size: int) -> None:
        self.email_files = email_files
        self.count = 0
        self.examined = 0
        self.max_examined = MAX_WALK_AMPLIFICATION * size + 1024 * 1024

    def entity(self, buf: bytes, start: int, end: int, number: str, *, is_message: bool, depth: int,
               message_depth: int, eol: bytes, detached: bool, parent: Part | None,
               default_type: str = "text/plain") -> Part:
        self.count += 1
        self.examined += end - start
        block = parse_header_block(buf, start, end, eol)
        part = Part(number, is_message, buf, start, block.end, block.body_start, end, block.fields,
                    describe_entity(block.fields), eol, message_depth, default_type, detached, parent=parent)
        if block.bare_cr:
            part.ambiguous.append("bare CR inside a header field")
        if part.info.content_type_fields > 1 and len(set(part.info.media_types)) > 1:
            part.ambiguous.append("conflicting Content-Type fields")
        if depth >= MAX_MIME_DEPTH or self.count >= MAX_PARTS or self.examined > self.max_examined:
            if part.is_multipart or part.media_type in _MESSAGE_TYPES:
                part.problems.append("MIME nesting, part count or walk size limit reached")
            return part
        if any(t.startswith("multipart/") for t in part.info.media_types):
            self._split_multipart(part, depth)
        elif part.media_type in _MESSAGE_TYPES and self.email_files:
            self._enter_message(part, depth)
        return part

    # ---------------------------------------------------------------- multipart (RFC 2046 §5.1)

    def _split_multipart(self, part: Part, depth: int) -> None:
        readings = []
        boundary_without_delimiters = False
        for boundary in part.info.boundaries[:MAX_BOUNDARY_READINGS]:
            found = _delimiter_readings(part.source, part.body_start, part.body_end,
                                        boundary.encode("utf-8", "surrogateescape"), part.eol)
            boundary_without_delimiters |= not found
            readings.extend(found)
        readings = [r for r in dict.fromkeys(tuple(r) for r in readings) if r]
        guessed = False
        if not part.info.boundaries:
            # No boundary parameter: also the readings a client guessing one would make
            # (docs/pitfalls.md#multipart-without-a-boundary).
            body = part.source[part.body_start:part.body_end]
            for boundary in _guessed_boundaries(body, part.eol):
                readings.extend(_delimiter_readings(part.source, part.body_start, part.body_end, boundary, part.eol))
            readings.append(_every_dash_line(part.source, part.body_start, part.body_end, part.eol))
            readings = [r for r in dict.fromkeys(tuple(r) for r in readings) if r]
            guessed = bool(readings)
            if guessed:
                part.ambiguous.append("multipart without a boundary parameter, read with guessed boundaries")
        if readings and boundary_without_delimiters:
            # A client that picks the boundary with no delimiter shows the whole body as text.
            part.ambiguous.append("a boundary candidate has no delimiter line")
            part.alternates.append(self._text_reading(part, _alt_number(part.number, 1)))
        if not readings:
            # No boundary, or none of its delimiters present: clients show the body as text,
            # so it is scanned as a leaf (the part has no children).
            if part.is_multipart and part.info.boundaries:
                part.ambiguous.append("multipart without any delimiter line")
            return
        if len(readings) > 1:
            part.ambiguous.append("delimiters can be read in more than one way")
        if not part.is_multipart:
            part.ambiguous.append("multipart declared only by a secondary Content-Type")
        prefix = part.number
        child_type = "message/rfc822" if part.media_type == "multipart/digest" else "text/plain"
        for index, reading in enumerate(readings):
            target = part.children if index == 0 and part.is_multipart and not guessed else part.alternates
            alt_prefix = prefix if target is part.children else _alt_number(prefix, len(part.alternates) + 1)
            segments, preamble, epilogue = _segments(reading, part.body_start, part.body_end)
            if target is part.children:
                part.preamble, part.epilogue = preamble, epilogue
            for i, (s, e) in enumerate(segments, 1):
                number = f"{alt_prefix}.{i}" if alt_prefix else str(i)
                target.append(self.entity(part.source, s, e, number, is_message=False, depth=depth + 1,
                                          message_depth=part.message_depth, eol=part.eol,
                                          detached=part.detached, parent=part, default_type=child_type))
                if self.count >= MAX_PARTS:
                    part.problems.append("MIME part count limit reached")
                    return

    # ---------------------------------------------------------------- message/rfc822 (RFC 2046 §5.2)

    def _enter_message(self, part: Part, depth: int) -> None:
        buf, start, end, eol, detached = part.source, part.body_start, part.body_end, part.eol, part.detached
        encodings = [e for e in part.encodings if e in ("base64", "quoted-printable")]
        if encodings:
            # RFC 2046 §5.2.1 allows only 7bit/8bit/binary here, yet clients decode base64 and
            # quoted-printable messages (docs/pitfalls.md#attached-messages): walk the decoded bytes,
            # detached from the raw offsets. (The engine scans every decoding of the body as a file too.)
            buf = decodings_for(encodings[0], part.body())[0]
            start, end, detached = 0, len(buf), True
            eol = b"\n" if buf.find(b"\n") != -1 else b"\r"
        part.children.append(self.entity(buf, start, end, part.number, is_message=True, depth=depth + 1,
                                         message_depth=part.message_depth + 1, eol=eol,
                                         detached=detached, parent=part))


    def _text_reading(self, part: Part, number: str) -> Part:
        """The body of ``part`` read as one text/plain leaf, as a client that finds no delimiter shows it."""
        self.count += 1
        return Part(number, False, part.source, part.body_start, part.body_start, part.body_start, part.body_end,
                    [], describe_entity([]), part.eol, part.message_depth, detached=part.detached, parent=part)


def _guessed_boundaries(body: bytes, eol: bytes) -> list[bytes]:
    """Lines ``--`` + 1-70 RFC 2046 bchars, first few distinct, a close of one found not counted."""
    found: list[bytes] = []
    for match in re.finditer(rb"(?<![^\r\n])--", body):
        end = body.find(eol, match.end())
        line = body[match.end():len(body) if end == -1 else end].rstrip(b" \t\r")
        if (re.fullmatch(rb"[0-9A-Za-z'()+_,\-./:=? ]{1,70}", line) and line not in found
                and not (line.endswith(b"--") and line[:-2] in found)):
            found.append(line)
            if len(found) == MAX_BOUNDARY_READINGS - 1:
                break
    return found


def _every_dash_line(buf: bytes, start: int, end: int, eol: bytes) -> list[tuple[int, int, bool]]:
    """Each line starting "--" as a (line start with the line end before it, content start, False)."""
    found = []
    pos = start
    while True:
        i = buf.find(b"--", pos, end)
        if i == -1:
            return found
        pos = i + 2
        if i > start and buf[i - 1] not in (0x0A, 0x0D):
            continue
        line_start = i
        if i > start:
            line_start = i - 1
            if buf[i - 1] == 0x0A and i - 2 >= start and buf[i - 2] == 0x0D:
                line_start = i - 2
        line_end = buf.find(eol, pos, end)
        pos = end if line_end == -1 else line_end + 1
        found.append((line_start, pos, False))


def _alt_number(prefix: str, index: int) -> str:
    return f"{prefix}.alt{index}" if prefix else f"alt{index}"


# A delimiter: (line_start, content_start, is_close). line_start is where the line ending
# before the delimiter begins (it belongs to the delimiter, RFC 2046 §5.1.1).
_Delimiter = tuple[int, int, bool]


def _delimiter_readings(buf: bytes, start: int, end: int, boundary: bytes, eol: bytes) -> list[list[_Delimiter]]:
    """The strict reading of ``--boundary`` lines, and lenient ones when they differ.

    Strict: at a line start, followed only by ``--``, transport padding and a line end.
    Lenient (some clients): any line starting ``--boundary`` (``--bX``), or one after a
    bare CR. After a close delimiter strict parsers stop; lenient ones keep splitting.
    """
    if not boundary:
        return []
    needle = b"--" + boundary
    strict: list[_Delimiter] = []
    lenient: list[_Delimiter] = []
    pos = start
    while (i := _find_dashes(buf, needle, pos, end)) != -1:
        pos = i + len(needle)
        at_line_start = i == start or buf[i - 1] == eol[0]
        after_bare_cr = not at_line_start and eol == b"\n" and buf[i - 1] == 0x0D
        if not (at_line_start or after_bare_cr):
            continue
        close = buf.startswith(b"--", pos, end)
        q = pos + 2 if close else pos
        while q < end and buf[q] in _PADDING:
            q += 1
        line_end = buf.find(eol, q, end)
        content = end if line_end == -1 else line_end + 1
        clean_tail = q >= end or buf[q] in b"\r\n"
        line_start = _line_start_before(buf, start, i)
        delimiter = (line_start, content, close)
        lenient.append(delimiter)
        if at_line_start and clean_tail:
            strict.append(delimiter)
    readings = [_honour_close(strict), _honour_close(lenient), strict, lenient]
    return [r for r in readings if r]


_DASH_PROBES = 32  # memchr probes for "-" before falling back to a plain substring search


def _find_dashes(buf: bytes, needle: bytes, pos: int, end: int) -> int:
    """``buf.find(needle, pos, end)`` for a needle starting with "-", faster on mail bodies.

    "-" never occurs in base64, the bulk of most mail, and a one-byte find is a memchr
    (several times faster than a substring search there). Text full of dashes would make
    the probing loop slow, so after a few misses it falls back to the substring search.
    """
    for _ in range(_DASH_PROBES):
        i = buf.find(b"-", pos, end)
        if i == -1 or buf.startswith(needle, i, end):
            return i
        pos = i + 1
    return buf.find(needle, pos, end)


def _line_start_before(buf: bytes, start: int, i: int) -> int:
    """Where the line ending before offset ``i`` begins (it is part of the delimiter)."""
    if i > start and buf[i - 1] == 0x0A:
        i -= 1
        if i > start and buf[i - 1] == 0x0D:
            i -= 1
    elif i > start and buf[i - 1] == 0x0D:
        i -= 1
    return i


def _honour_close(delimiters: list[_Delimiter]) -> list[_Delimiter]:
    for index, (_s, _c, close) in enumerate(delimiters):
        if close:
            return delimiters[: index + 1]
    return delimiters


def _segments(reading: tuple[_Delimiter, ...], start: int, end: int):
    """Body parts between delimiters, plus the preamble and epilogue ranges."""
    preamble = (start, reading[0][0])
    segments = []
    for (_ls, content, close), nxt in zip(reading, reading[1:] + (None,)):
        if close and nxt is None:
            return segments, preamble, (content, end)
        segments.append((content, max(content, nxt[0]) if nxt is not None else end))
    return segments, preamble, None
