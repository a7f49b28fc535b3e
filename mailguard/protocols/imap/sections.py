"""Cutting FETCH sections and partials out of a message (RFC 9051 §6.4.5, RFC 3516).

Everything served for a message is cut from one buffer, the (rewritten) message, so
a section, a partial window and the size announced for it can never disagree.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

from mailguard.errors import RemoteProtocolError
from mailguard.protocols.imap.structure import Entity, find_part, header_end

_FIELDS = re.compile(rb"^(HEADER\.FIELDS(?:\.NOT)?)\s*\((.*)\)\s*$", re.IGNORECASE | re.DOTALL)
_FIELD_START = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.MULTILINE)


@dataclass(frozen=True)
class Section:
    #: part numbers, () for the whole message
    part: tuple[int, ...]
    #: HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME, or "" for the part itself
    text: str
    #: field names of HEADER.FIELDS[.NOT], lower case
    fields: tuple[bytes, ...] = ()


def parse_section(spec: bytes) -> Section:
    """``1.2.HEADER.FIELDS (From Date)`` -> Section((1, 2), "HEADER.FIELDS", (b"from", b"date"))."""
    part: list[int] = []
    rest = spec.strip()
    while rest:
        number, dot, tail = rest.partition(b".")
        if not number.isdigit():
            break
        if int(number) == 0:
            raise RemoteProtocolError(f"section part number 0 in {spec!r}")
        part.append(int(number))
        rest = tail if dot else b""
    upper = rest.upper()
    if upper in (b"", b"HEADER", b"TEXT", b"MIME"):
        if upper == b"MIME" and not part:
            raise RemoteProtocolError("MIME section without a part number")
        return Section(tuple(part), upper.decode())
    match = _FIELDS.match(rest)
    if match is None:
        raise RemoteProtocolError(f"unknown section {spec!r}")
    names = tuple(name.strip(b'"').lower() for name in match.group(2).split())
    if not names:
        raise RemoteProtocolError(f"empty header field list in {spec!r}")
    return Section(tuple(part), match.group(1).upper().decode(), names)


def cut_section(data: bytes, root: Entity, section: Section) -> bytes | None:
    """The bytes of ``section`` in ``data``, or None when the message has no such part."""
    if section.part:
        entity = find_part(root, section.part)
        if entity is None:
            return None
        if section.text == "":
            return data[entity.body_start : entity.end]
        if section.text == "MIME":
            return data[entity.start : entity.header_end]
        if entity.message is None:
            # HEADER/TEXT of a part only exist for an attached message (RFC 9051 §6.4.5)
            return None
        entity = entity.message
    else:
        entity = root
    if section.text == "":
        return data[entity.start : entity.end]
    if section.text == "TEXT":
        return data[entity.body_start : entity.end]
    header = data[entity.start : entity.header_end]
    if section.text == "HEADER":
        return header
    return filter_header(header, section.fields, keep=section.text == "HEADER.FIELDS")


def filter_header(header: bytes, names: tuple[bytes, ...], keep: bool) -> bytes:
    """The fields of ``header`` named (or, with keep=False, not named) in ``names``, each with its
    folded lines as they are, followed by the blank line that ends a header."""
    wanted = set(names)
    body_end = header_end(header, 0, len(header))
    blank = header[body_end - 2 : body_end] if header[body_end - 2 : body_end] == b"\r\n" else b"\r\n"
    out = []
    starts = [m for m in _FIELD_START.finditer(header, 0, body_end)]
    for index, match in enumerate(starts):
        stop = starts[index + 1].start() if index + 1 < len(starts) else body_end
        raw_field = header[match.start() : stop]
        if raw_field.endswith(b"\r\n\r\n") or (stop == body_end and raw_field.endswith(b"\n\n")):
            raw_field = raw_field[: -len(blank)]
        if (match.group(1).lower() in wanted) == keep:
            out.append(raw_field)
    return b"".join(out) + blank


def apply_partial(data: bytes, origin: int | None, length: int | None) -> bytes:
    """RFC 9051 §6.4.5: octets ``origin`` .. ``origin + length``; empty when ``origin`` is past the end."""
    if origin is None or length is None:
        return data
    return data[origin : origin + length]


def decode_transfer_encoding(data: bytes, encoding: bytes | None) -> bytes:
    """The content of a part with its Content-Transfer-Encoding undone (what BINARY serves)."""
    name = (encoding or b"7bit").strip().lower()
    if name == b"base64":
        # Non-alphabet characters are ignored (RFC 2045 §6.8), as clients do.
        clean = re.sub(rb"[^A-Za-z0-9+/]", b"", data.split(b"=", 1)[0])
        clean = clean[: len(clean) - (len(clean) % 4 == 1)]
        return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))
    if name == b"quoted-printable":
        return binascii.a2b_qp(data)
    return data


def cut_binary(data: bytes, root: Entity, section: Section) -> bytes | None:
    """BINARY[part]: the decoded content of a part (RFC 3516 §4.1); the message itself for ``[]``."""
    if section.text:
        raise RemoteProtocolError("BINARY takes only part numbers")
    if not section.part:
        return data
    entity = find_part(root, section.part)
    if entity is None:
        return None
    body = data[entity.body_start : entity.end]
    if entity.is_multipart or entity.message is not None:
        return body
    return decode_transfer_encoding(body, entity.field(b"content-transfer-encoding"))
