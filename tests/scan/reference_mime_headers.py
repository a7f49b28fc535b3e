"""Frozen copy of the walk before the speed work: the oracle for test_walk_equivalence.py.

Header fields of a MIME entity: the field list, parameters, and every derivable file name.

Lenient on purpose. Mail clients accept folded, duplicated, commented, RFC 2047-encoded and
RFC 2231-split parameters, each in its own way; a scanner that reads a name or a boundary
differently from the client can be steered around (docs/pitfalls.md#mime-and-content). So the functions
here return *every* reading, and the caller decides (scan all of them, or treat as ambiguous).
"""

from __future__ import annotations

import binascii
import codecs
import re
import urllib.parse
from dataclasses import dataclass

# A header line is "name:" where name is printable US-ASCII without ":" (RFC 5322 §2.2).
# Whitespace before the colon is tolerated: "Content-type :" is read by clients
# (docs/pitfalls.md#boundary-tricks).
_FIELD_NAME = re.compile(rb"([!-9;-~]+)[ \t]*:")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"(\?=)\s+(=\?)")
_SECTION = re.compile(r"^(.*?)\*(\d+)(\*?)$")

MAX_HEADER_FIELDS = 1000      # per entity; more is abuse, and the rest is treated as body
MAX_PARAM_VALUE_CHARS = 8192  # per parameter after RFC 2231 joining


@dataclass(slots=True)
class Header:
    """One header field as it sits in the buffer."""

    name: str        # lower-case field name, e.g. "content-type"
    start: int       # offset of the field's first byte
    end: int         # offset after the field's last line ending
    value: bytes     # unfolded value without the leading/trailing whitespace
    hidden: bool = False  # behind a bare CR in another field (docs/pitfalls.md#boundary-tricks)

    def text(self) -> str:
        return decode_header_bytes(self.value)


@dataclass(slots=True)
class HeaderBlock:
    fields: list[Header]
    end: int          # offset where the header fields end (the blank line, or the body)
    body_start: int   # offset of the first body byte
    bare_cr: bool     # some field hides a bare CR: clients split it differently


def decode_header_bytes(value: bytes) -> str:
    """Header bytes as text: UTF-8 (RFC 6532) when valid, else Latin-1 (never fails)."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def parse_header_block(buf: bytes, start: int, end: int, eol: bytes) -> HeaderBlock:
    """Read header fields from ``buf[start:end]`` up to the blank line (RFC 5322 §2.1).

    A line that is neither a field nor a continuation ends the header block and starts the
    body, as in the stdlib feed parser and common clients. ``eol`` is ``b"\\n"`` (LF and
    CRLF) or ``b"\\r"`` for CR-only messages.
    """
    fields: list[Header] = []
    pos = start
    header_end = body_start = end
    while pos < end:
        nl = buf.find(eol, pos, end)
        line_end = end if nl == -1 else nl + 1
        content_end = line_end
        while content_end > pos and buf[content_end - 1] in b"\r\n":
            content_end -= 1
        if content_end == pos:  # the blank line
            header_end, body_start = pos, line_end
            break
        if buf[pos] in b" \t" and fields:
            current = fields[-1]
            current.end = line_end
            current.value = current.value + b" " + buf[pos:content_end].strip(b" \t")
        elif len(fields) < MAX_HEADER_FIELDS and (m := _FIELD_NAME.match(buf, pos, content_end)):
            name = m.group(1).decode("ascii").lower()
            fields.append(Header(name, pos, line_end, buf[m.end():content_end].strip(b" \t")))
        else:
            header_end = body_start = pos
            break
        pos = line_end
    bare_cr = eol == b"\n" and _recover_hidden_fields(fields)
    return HeaderBlock(fields, header_end, body_start, bare_cr)


def _recover_hidden_fields(fields: list[Header]) -> bool:
    """Add the fields some clients see behind a bare CR (``X: a\rContent-Type: ...``).

    The visible field keeps only the text before the CR (what a CR-splitting client
    reads); the recovered fields are marked ``hidden``. Both readings are then scanned.
    """
    found = False
    for field in list(fields):
        if b"\r" not in field.value:
            continue
        found = True
        visible, *rest = field.value.split(b"\r")
        field.value = visible.rstrip(b" \t")
        for piece in rest:
            if m := _FIELD_NAME.match(piece):
                name = m.group(1).decode("ascii").lower()
                fields.append(Header(name, field.start, field.end, piece[m.end():].strip(b" \t"), True))
    return found


# ---------------------------------------------------------------- parameters (RFC 2045 §5.1)


def _strip_comments(text: str) -> str:
    """Remove RFC 5322 §3.2.2 comments outside quoted strings (nesting allowed)."""
    if "(" not in text:
        return text
    out = []
    depth = 0
    quoted = False
    escaped = False
    for ch in text:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(ch)
            continue
        if ch == "\\":
            escaped = True
            if depth == 0:
                out.append(ch)
            continue
        if quoted:
            quoted = ch != '"'
            out.append(ch)
        elif ch == '"' and depth == 0:
            quoted = True
            out.append(ch)
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def _split_params(text: str) -> list[str]:
    """Split at ";" outside quoted strings."""
    if '"' not in text:
        return text.split(";")
    pieces = []
    current: list[str] = []
    quoted = False
    escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            pieces.append("".join(current))
            current = []
            continue
        current.append(ch)
    pieces.append("".join(current))
    return pieces


def _unquote(value: str) -> str:
    value = value.strip()
    if not value.startswith('"'):
        return value
    out = []
    escaped = False
    for ch in value[1:]:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            break
        else:
            out.append(ch)
    return "".join(out)


def parse_parameterized(value: str, *, strip_comments: bool = True) -> tuple[str, list[tuple[str, str]]]:
    """``type/subtype; a=b; c="d"`` -> (``"type/subtype"``, [(``"a"``, ``"b"``), ...]).

    Every occurrence of every parameter is kept, in order, names lower-cased, values
    unquoted but otherwise raw (RFC 2231 sections stay separate: see ``joined_parameter``).
    """
    text = _strip_comments(value) if strip_comments else value
    pieces = _split_params(text)
    head = pieces[0].strip().lower()
    params = []
    for piece in pieces[1:]:
        name, sep, raw = piece.partition("=")
        if not sep:
            continue
        params.append((name.strip().lower(), _unquote(raw)[:MAX_PARAM_VALUE_CHARS]))
    return head, params


def parameter_values(params: list[tuple[str, str]], wanted: str) -> list[str]:
    """Every value a client could read for parameter ``wanted``: plain and RFC 2231 forms."""
    plain = [v for n, v in params if n == wanted]
    extended = [_decode_2231_value(v) for n, v in params if n == wanted + "*"]
    sections: dict[int, list[tuple[str, bool]]] = {}
    for name, value in params:
        m = _SECTION.match(name)
        if m and m.group(1) == wanted:
            sections.setdefault(int(m.group(2)), []).append((value, bool(m.group(3))))
    joined = _join_sections(sections) if sections else []
    return _distinct(plain + extended + joined)


def _join_sections(sections: dict[int, list[tuple[str, bool]]]) -> list[str]:
    """RFC 2231 §3-4 continuations, joined in numeric order (out-of-order input tolerated).

    Duplicated section numbers give one joining per choice of first/last occurrence.
    """
    results = []
    for pick in (0, -1):
        charset = ""
        chunks = []
        for index in sorted(sections):
            value, encoded = sections[index][pick]
            if encoded:
                if index == sorted(sections)[0] and value.count("'") >= 2:
                    charset, _lang, value = value.split("'", 2)
                chunks.append(urllib.parse.unquote_to_bytes(value))
            else:
                chunks.append(value.encode("utf-8", "surrogateescape"))
        joined = b"".join(chunks)
        results.append(_decode_charset(joined, charset or "utf-8")[:MAX_PARAM_VALUE_CHARS])
    return results


def _decode_2231_value(value: str) -> str:
    """``charset'lang'percent-encoded`` (RFC 2231 §4); a value without quotes is only unescaped."""
    charset = "utf-8"
    if value.count("'") >= 2:
        charset, _lang, value = value.split("'", 2)
    return _decode_charset(urllib.parse.unquote_to_bytes(value), charset or "utf-8")


def _decode_charset(data: bytes, charset: str) -> str:
    charset = charset.split("*", 1)[0].strip().lower()  # RFC 2231 §5 language suffix
    try:
        codecs.lookup(charset)
    except LookupError:
        charset = "utf-8"
    try:
        return data.decode(charset)
    except UnicodeDecodeError:
        return data.decode(charset, "replace")
    except Exception:  # noqa: BLE001 - exotic codecs raise their own errors
        return data.decode("latin-1")


def decode_encoded_words(text: str) -> str:
    """RFC 2047 encoded words, also where §5 forbids them (inside quotes): clients decode them."""
    if "=?" not in text:
        return text
    text = _BETWEEN_WORDS.sub(r"\1\2", text)  # §6.2: whitespace between encoded words is dropped
    return _ENCODED_WORD.sub(_decode_word, text)


def _decode_word(m: re.Match[str]) -> str:
    charset, kind, payload = m.group(1), m.group(2).upper(), m.group(3)
    data = payload.encode("latin-1", "replace")
    if kind == "B":
        clean = data.translate(None, b"=")
        clean = clean[: len(clean) - len(clean) % 4] if len(clean) % 4 == 1 else clean
        try:
            raw = binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))
        except binascii.Error:
            return m.group(0)
    else:
        raw = binascii.a2b_qp(data.replace(b"_", b" "))
    return _decode_charset(raw, charset)


def _distinct(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


# ---------------------------------------------------------------- names and types of one entity


@dataclass(frozen=True, slots=True)
class EntityInfo:
    """What an entity's header fields declare, with every reading kept."""

    media_types: tuple[str, ...]        # every Content-Type media type, first field first ("" = none)
    boundaries: tuple[str, ...]         # every boundary a client could read, primary first
    encodings: tuple[str, ...]          # every Content-Transfer-Encoding token, lower-case
    filenames: tuple[str, ...]          # every derivable file name
    content_type_fields: int            # how many Content-Type fields (incl. hidden ones)


def describe_entity(fields: list[Header]) -> EntityInfo:
    media_types: list[str] = []
    boundaries: list[str] = []
    names: list[str] = []
    encodings: list[str] = []
    ct_fields = 0
    # Visible fields first so the primary reading is the one a strict client uses.
    for field in sorted(fields, key=lambda f: f.hidden):
        if field.name == "content-type":
            ct_fields += 1
            text = field.text()
            head, params = parse_parameterized(text)
            media_types.append(head)
            boundaries.extend(parameter_values(params, "boundary"))
            names.extend(_names_from(text, "name", params))
        elif field.name == "content-disposition":
            names.extend(_names_from(field.text(), "filename"))
        elif field.name == "content-transfer-encoding":
            token = _strip_comments(field.text()).strip().strip('"').lower()
            encodings.append(token)
    boundaries.extend(decode_encoded_words(b) for b in list(boundaries))
    return EntityInfo(
        media_types=tuple(_distinct(media_types)),
        boundaries=tuple(_distinct([b for b in boundaries if b])),
        encodings=tuple(_distinct(encodings)),
        filenames=tuple(_distinct([n for n in names if n])),
        content_type_fields=ct_fields,
    )


def _names_from(value: str, param: str, stripped: list[tuple[str, str]] | None = None) -> list[str]:
    """Every name a client could derive from one field (docs/pitfalls.md#hidden-file-names).

    ``stripped`` is the field's parameter list already parsed with comments removed.
    """
    if stripped is None:
        stripped = parse_parameterized(value)[1]
    readings = [stripped]
    if "(" in value:  # clients that do not know RFC 5322 comments keep "(...)" in the name
        readings.append(parse_parameterized(value, strip_comments=False)[1])
    found: list[str] = []
    for params in readings:
        for raw in parameter_values(params, param):
            found.append(raw)
            found.append(decode_encoded_words(raw))
    return found
