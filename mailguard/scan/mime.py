"""The lenient MIME walk: raw message bytes in, a tree of parts with byte offsets out.

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

from collections.abc import Iterator
from dataclasses import dataclass, field

from mailguard.scan.decoders import decodings_for
from mailguard.scan.mime_headers import (EntityInfo, Header, describe_entity, describe_key, parse_header_block,
                                         scan_header_block)

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
    _headers: list[Header] | None  # None until asked for: see ``headers``
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
        return self.info.declared_type or self.default_type

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

    @property
    def headers(self) -> list[Header]:
        """Every header field. The walk reads only the Content-* fields, so the full list is
        parsed (by the same function, from the same bytes) only when someone asks for it."""
        fields = self._headers
        if fields is None:
            fields = self._headers = parse_header_block(self.source, self.header_start, self.body_end,
                                                        self.eol).fields
        return fields

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
            if part.children or part.alternates:  # most parts are leaves
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
        key, header_end, body_start, bare_cr, fields = scan_header_block(buf, start, end, eol)
        info = describe_key(key)
        part = Part(number, is_message, buf, start, header_end, body_start, end, fields,
                    info, eol, message_depth, default_type, detached, parent=parent)
        if bare_cr:
            part.ambiguous.append("bare CR inside a header field")
        if info.content_type_fields > 1 and len(set(info.media_types)) > 1:
            part.ambiguous.append("conflicting Content-Type fields")
        media_type = info.declared_type or default_type
        if depth >= MAX_MIME_DEPTH or self.count >= MAX_PARTS or self.examined > self.max_examined:
            if media_type.startswith("multipart/") or media_type in _MESSAGE_TYPES:
                part.problems.append("MIME nesting, part count or walk size limit reached")
            return part
        if info.multipart:
            self._split_multipart(part, depth)
        elif media_type in _MESSAGE_TYPES and self.email_files:
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
        if len(readings) == 4 and readings[0] is readings[1] is readings[2] is readings[3]:
            readings = [tuple(readings[0])]  # one boundary read one way (nearly all mail): nothing to hash
        else:
            readings = [r for r in dict.fromkeys(tuple(r) for r in readings) if r]
        media_type = part.media_type
        is_multipart = media_type.startswith("multipart/")
        guessed = False
        if not part.info.boundaries:
            # RFC 2046 §5.1.1 makes the boundary parameter mandatory. Without one, strict parsers
            # (Python's email package, mutt) split nothing: the body is one part, shown as text,
            # and is scanned so (the part stays a leaf). Lenient ones split it anyway (mpack's
            # munpack at every line starting "--"), so that reading, and the readings with the
            # boundaries of the first few delimiter-like lines, are scanned too, as alternates
            # (docs/pitfalls.md#multipart-without-a-boundary).
            for boundary in _delimiter_like_lines(part.source, part.body_start, part.body_end, part.eol):
                readings.extend(_delimiter_readings(part.source, part.body_start, part.body_end, boundary, part.eol))
            readings.append(_dash_lines(part.source, part.body_start, part.body_end, part.eol))
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
            if is_multipart and part.info.boundaries:
                part.ambiguous.append("multipart without any delimiter line")
            return
        if len(readings) > 1:
            part.ambiguous.append("delimiters can be read in more than one way")
        if not is_multipart:
            part.ambiguous.append("multipart declared only by a secondary Content-Type")
        prefix = part.number
        child_type = "message/rfc822" if media_type == "multipart/digest" else "text/plain"
        for index, reading in enumerate(readings):
            target = part.children if index == 0 and is_multipart and not guessed else part.alternates
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


# RFC 2046 §5.1.1 bchars: a boundary is 1 to 70 of them, not ending in a space.
_BCHARS = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? ")
_MAX_BOUNDARY = 70


def _delimiter_like_lines(buf: bytes, start: int, end: int, eol: bytes) -> list[bytes]:
    """The boundaries a client guessing one could take: the first few distinct lines ``--`` +
    1-70 bchars (a close delimiter ``--b--`` of one already found is not another)."""
    found: list[bytes] = []
    pos = start
    while len(found) < MAX_BOUNDARY_READINGS - 1 and (i := buf.find(b"--", pos, end)) != -1:
        pos = i + 2
        if i != start and buf[i - 1] not in b"\r\n":
            continue
        line_end = buf.find(eol, pos, end)
        candidate = buf[pos:end if line_end == -1 else line_end].rstrip(b" \t\r")
        if (0 < len(candidate) <= _MAX_BOUNDARY and _BCHARS.issuperset(candidate) and candidate not in found
                and not (candidate.endswith(b"--") and candidate[:-2] in found)):
            found.append(candidate)
    return found


def _dash_lines(buf: bytes, start: int, end: int, eol: bytes) -> list[_Delimiter]:
    """Every line starting ``--`` as a delimiter: how munpack splits a multipart without a boundary.

    Whatever boundary a client guesses, its delimiter lines are among these, so an attachment
    (base64 has no such lines) is one of this reading's parts however many decoys come first.
    """
    found: list[_Delimiter] = []
    pos = start
    while (i := buf.find(b"--", pos, end)) != -1:
        pos = i + 2
        if i != start and buf[i - 1] not in b"\r\n":
            continue
        # The line ending before it belongs to the delimiter (RFC 2046 §5.1.1).
        line_start = i
        if i != start:
            line_start = i - 2 if buf[i - 1] == 0x0A and i - 1 > start and buf[i - 2] == 0x0D else i - 1
        line_end = buf.find(eol, pos, end)
        content = end if line_end == -1 else line_end + 1
        found.append((line_start, content, False))
        pos = content
    return found


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
    length = len(needle)
    eol_byte = eol[0]
    lf = eol == b"\n"
    find_eol = buf.find
    strict: list[_Delimiter] = []
    lenient: list[_Delimiter] = []
    strict_closes = 0
    pos = start
    while (i := _find_dashes(buf, needle, pos, end)) != -1:
        pos = i + length
        if i == start:
            at_line_start = True
            line_start = i
        else:
            before = buf[i - 1]
            at_line_start = before == eol_byte
            # A delimiter after a bare CR (lenient clients only), else not a delimiter at all.
            if not at_line_start and not (lf and before == 0x0D):
                continue
            # The line ending before it (LF, CRLF or CR) belongs to the delimiter (RFC 2046 §5.1.1).
            line_start = i - 2 if before == 0x0A and i - 1 > start and buf[i - 2] == 0x0D else i - 1
        close = buf.startswith(b"--", pos, end)
        q = pos + 2 if close else pos
        if q < end:
            tail = buf[q]
            while tail in _PADDING:
                q += 1
                if q >= end:
                    break
                tail = buf[q]
        if q >= end:
            content, clean_tail = end, True
        else:
            line_end = find_eol(eol, q, end)
            content = end if line_end == -1 else line_end + 1
            clean_tail = buf[q] in b"\r\n"
        delimiter = (line_start, content, close)
        lenient.append(delimiter)
        if at_line_start and clean_tail:
            strict.append(delimiter)
            strict_closes += close
    if strict == lenient and (not strict_closes or (strict_closes == 1 and strict[-1][2])):
        # The common well-formed case: one reading, close delimiter (if any) last.
        return [strict, strict, strict, strict] if strict else []
    readings = [_honour_close(strict), _honour_close(lenient), strict, lenient]
    return [r for r in readings if r]


_DASH_PROBES = 32    # dashes looked at (each with its window) before a plain substring search
_DASH_WINDOW = 512   # bytes after a dash searched for the whole needle at once


def _find_dashes(buf: bytes, needle: bytes, pos: int, end: int) -> int:
    """``buf.find(needle, pos, end)`` for a needle starting with "-", faster on mail bodies.

    "-" never occurs in base64, the bulk of most mail, and a one-byte find is a memchr
    (several times faster than a substring search there): it skips to where a needle could
    start. Dashes come in clusters (the part header after a delimiter: ``Content-Type``,
    ``octet-stream``, ``Content-Transfer-Encoding``), so from a dash the needle is searched
    for in the next ``_DASH_WINDOW`` bytes in one call, not dash by dash. Text full of dashes
    would make the loop slow, so after a few windows it falls back to the substring search.
    """
    span = _DASH_WINDOW + len(needle)
    for _ in range(_DASH_PROBES):
        i = buf.find(b"-", pos, end)
        if i == -1:
            return -1
        # Finds every needle starting in [i, i + _DASH_WINDOW]; none starts in [pos, i).
        j = buf.find(needle, i, min(end, i + span))
        if j != -1:
            return j
        pos = i + _DASH_WINDOW + 1
    return buf.find(needle, pos, end)


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
