"""Header fields of a MIME entity: the field list, parameters, and every derivable file name.

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
from dataclasses import dataclass, field

# A header line is "name:" where name is printable US-ASCII without ":" (RFC 5322 §2.2).
# Whitespace before the colon is tolerated: "Content-type :" is read by clients
# (docs/pitfalls.md#boundary-tricks).
_FIELD_NAME = re.compile(rb"([!-9;-~]+)[ \t]*:")
# One whole ordinary LF/CRLF header line: a field (name, value) or a continuation (value),
# values without the surrounding spaces and tabs, exactly as the general code strips them.
# (Greedy values, right-stripped by the caller: a lazy ``*?`` retries the tail at every byte.)
_SIMPLE_LINE = re.compile(rb"(?:([!-9;-~]+)[ \t]*:[ \t]*([^\r\n]*)|[ \t]+([^\r\n]*))\r?\n")
_FIELD_NAMES: dict[bytes, str] = {}  # raw field name -> lower-case str (the few names mail uses)
_MAX_CACHED_NAMES = 512
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
    # Fast path (LF and CRLF mail): one regex match per ordinary line, a field or a
    # continuation; any other line (the blank line, bare CRs, no line ending, a non-field)
    # falls through to the general per-line code below, which decides as before.
    fast = _SIMPLE_LINE.match if eol == b"\n" else None
    names = _FIELD_NAMES
    general = False  # some line took the general path
    while pos < end:
        if fast is not None and (m := fast(buf, pos, end)) is not None:
            raw_name = m.group(1)
            if raw_name is None:
                if fields:
                    current = fields[-1]
                    current.end = line_end = m.end()
                    current.value = current.value + b" " + m.group(3).rstrip(b" \t")
                    pos = line_end
                    continue
            elif len(fields) < MAX_HEADER_FIELDS:
                name = names.get(raw_name)
                if name is None:
                    name = raw_name.decode("ascii").lower()
                    if len(names) < _MAX_CACHED_NAMES and len(raw_name) <= 64:
                        names[raw_name] = name
                line_end = m.end()
                fields.append(Header(name, pos, line_end, m.group(2).rstrip(b" \t")))
                pos = line_end
                continue
        nl = buf.find(eol, pos, end)
        line_end = end if nl == -1 else nl + 1
        content_end = line_end
        while content_end > pos and buf[content_end - 1] in b"\r\n":
            content_end -= 1
        if content_end == pos:  # the blank line
            header_end, body_start = pos, line_end
            break
        general = True
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
    # Only the general code keeps a CR inside a value; fast-path values never hold one.
    bare_cr = eol == b"\n" and general and _recover_hidden_fields(fields)
    return HeaderBlock(fields, header_end, body_start, bare_cr)


# An ordinary LF/CRLF header block (as ``_SIMPLE_LINE`` reads it, line by line): a field line
# first, then field or continuation lines, each ended by LF or CRLF, with no other CR. Found
# without a regex pass over every byte: the first line start that begins neither a field
# nor a continuation (the blank line, usually) ends the run.
_FIELD_START = re.compile(rb"[!-9;-~]++[ \t]*:")
_RUN_END = re.compile(rb"\n(?![!-9;-~]++[ \t]*:|[ \t])")
# A Content-* field the walk reads (RFC 2045 §3), matched at a line start of the run.
_CONTENT_FIELD = re.compile(
    rb"(content-(?:type|disposition|transfer-encoding))[ \t]*:[ \t]*([^\r\n]*)\r?\n((?:[ \t][^\r\n]*\r?\n)*)",
    re.IGNORECASE)
_BLOCK_CACHE: dict[bytes, tuple[tuple, int, int]] = {}  # header bytes -> (Content-* fields, end, body start)
_MAX_BLOCK_CACHE = 1024
_MAX_CACHED_BLOCK = 256  # top-level headers (unique, and longer) are not kept
_CONTENT_NAMES: dict[bytes, str] = {}  # raw spelling -> lower-case name (few spellings exist)

# What ``describe_key`` reads: (name, value, hidden) of the Content-* fields, in field order.
DescribedFields = tuple[tuple[str, bytes, bool], ...]


def scan_header_block(buf: bytes, start: int, end: int, eol: bytes
                      ) -> tuple[DescribedFields, int, int, bool, list[Header] | None]:
    """What the walk needs of a header block, without a ``Header`` per field when it can.

    ``(content fields, end, body_start, bare_cr, fields)``: the same as ``parse_header_block``
    gives, where ``fields`` is None when the block is made of ordinary lines only (nearly
    all mail); the caller then parses the full field list only if someone asks for it.
    """
    cached = None
    if eol == b"\n":
        # Everything here is a function of the bytes up to the first blank line, and part
        # headers repeat ("Content-Type: text/plain; charset=utf-8"): short blocks are memoised.
        limit = min(end, start + _MAX_CACHED_BLOCK)
        crlf = buf.find(b"\n\r\n", start, limit)
        lf = buf.find(b"\n\n", start, limit if crlf == -1 else crlf + 2)
        if lf != -1 or crlf != -1:
            cached = buf[start:lf + 2 if lf != -1 else crlf + 3]
            if (hit := _BLOCK_CACHE.get(cached)) is not None:
                return hit[0], start + hit[1], start + hit[2], False, None
    if eol == b"\n" and _FIELD_START.match(buf, start, end) and (m := _RUN_END.search(buf, start, end)):
        p = m.end()  # the first line after the run
        if p == end:
            body_start = end
        elif buf[p] == 0x0A:
            body_start = p + 1
        elif buf.startswith(b"\r\n", p, end):
            body_start = p + 2
        else:
            body_start = -1  # some other line ends the run: the general code decides
        if (body_start != -1 and buf.count(b"\r", start, p) == buf.count(b"\r\n", start, p)
                and buf.count(b"\n", start, p) < MAX_HEADER_FIELDS):
            block = buf[start:p]
            key = []
            lower = block.lower()
            i = 0 if lower.startswith(b"content-") else lower.find(b"\ncontent-", 0) + 1 or -1
            while i != -1:
                if (f := _CONTENT_FIELD.match(block, i)) is not None:
                    raw_name, value, more = f.groups()
                    name = _CONTENT_NAMES.get(raw_name)
                    if name is None:
                        name = _CONTENT_NAMES[raw_name] = raw_name.decode("ascii").lower()
                    value = value.rstrip(b" \t")
                    if more:
                        for line in more.split(b"\n")[:-1]:
                            value = value + b" " + line.rstrip(b"\r").strip(b" \t")
                    key.append((name, value, False))
                i = lower.find(b"\ncontent-", i) + 1 or -1
            key = tuple(key)
            if cached is not None:
                if len(_BLOCK_CACHE) >= _MAX_BLOCK_CACHE:
                    _BLOCK_CACHE.clear()
                _BLOCK_CACHE[cached] = (key, p - start, body_start - start)
            return key, (end if p == end else p), body_start, False, None
    block = parse_header_block(buf, start, end, eol)
    key = tuple([(f.name, f.value, f.hidden) for f in block.fields if f.name in _DESCRIBED_FIELDS])
    return key, block.end, block.body_start, block.bare_cr, block.fields


def _recover_hidden_fields(fields: list[Header]) -> bool:
    """Add the fields some clients see behind a bare CR (``X: a\rContent-Type: ...``).

    The visible field keeps only the text before the CR (what a CR-splitting client
    reads); the recovered fields are marked ``hidden``. Both readings are then scanned.
    """
    found = False
    for header in list(fields):
        if b"\r" not in header.value:
            continue
        found = True
        visible, *rest = header.value.split(b"\r")
        header.value = visible.rstrip(b" \t")
        for piece in rest:
            if m := _FIELD_NAME.match(piece):
                name = m.group(1).decode("ascii").lower()
                fields.append(Header(name, header.start, header.end, piece[m.end():].strip(b" \t"), True))
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
    if "\\" not in text:
        # Without escapes a quote always toggles: the even chunks between quotes are outside.
        pieces = [""]
        for index, chunk in enumerate(text.split('"')):
            if index:
                pieces[-1] += '"'
            if index % 2:
                pieces[-1] += chunk
            else:
                first, *rest = chunk.split(";")
                pieces[-1] += first
                pieces.extend(rest)
        return pieces
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
    if "\\" not in value:
        return value[1:].partition('"')[0]
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


# The usual shape of a field with parameters: ``type/subtype; name="value"`` or ``...; name=value``,
# one parameter, printable ASCII, no quotes inside, no comments, escapes or RFC 2231 stars.
# ``parse_parameterized`` reads these exactly as ``_simple_parameterized`` does (checked by
# tests/scan/test_walk_equivalence.py); mail repeats the shape with a new boundary or file name
# each time, where the describe memo cannot help.
_SIMPLE_PARAMETERIZED = re.compile(
    r"[ \t]*([!#-'+-:<-\[\]-~]*)[ \t]*;[ \t]*([A-Za-z0-9-]+)=(?:\"([^\"\\]*)\"|([!#-'+-:<-\[\]-~]*))[ \t]*", re.ASCII)


def _simple_parameterized(text: str) -> tuple[str, list[tuple[str, str]]] | None:
    if (m := _SIMPLE_PARAMETERIZED.fullmatch(text)) is None:
        return None
    head, name, quoted, bare = m.groups()
    return head.lower(), [(name.lower(), (bare if quoted is None else quoted)[:MAX_PARAM_VALUE_CHARS])]


def parameter_values(params: list[tuple[str, str]], wanted: str) -> list[str]:
    """Every value a client could read for parameter ``wanted``: plain and RFC 2231 forms."""
    plain = [v for n, v in params if n == wanted]
    if not any("*" in n for n, _ in params):  # no RFC 2231 forms (the common case)
        return _distinct(plain)
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
    # Derived once here (infos are memoised), read for every part by the walk and the engine:
    declared_type: str = field(init=False)   # the first media type with a "/", "" when none is usable
    multipart: bool = field(init=False)      # some Content-Type declares multipart/*

    def __post_init__(self) -> None:
        declared = ""
        multipart = False
        for media_type in self.media_types:  # nearly always one
            if not declared and "/" in media_type:
                declared = media_type
            if media_type.startswith("multipart/"):
                multipart = True
        object.__setattr__(self, "declared_type", declared)
        object.__setattr__(self, "multipart", multipart)


# What ``describe_entity`` reads, and a memo of its answers: mail repeats the same few
# Content-* fields ("text/plain; charset=utf-8", "base64") in every message.
_DESCRIBED_FIELDS = frozenset({"content-type", "content-disposition", "content-transfer-encoding"})
_DESCRIBE_CACHE: dict[tuple, EntityInfo] = {}
_MAX_DESCRIBE_CACHE = 2048
_MAX_CACHED_FIELD_BYTES = 512  # long (unusual) fields are described afresh, not kept in memory


def describe_entity(fields: list[Header]) -> EntityInfo:
    """What ``fields`` declare (a pure function of the Content-* fields, so it is memoised)."""
    return describe_key(tuple([(f.name, f.value, f.hidden) for f in fields if f.name in _DESCRIBED_FIELDS]))


def describe_key(key: DescribedFields) -> EntityInfo:
    """``describe_entity`` from the (name, value, hidden) of the Content-* fields alone."""
    info = _DESCRIBE_CACHE.get(key)
    if info is None:
        info = _describe(key)
        if sum(len(k[1]) for k in key) <= _MAX_CACHED_FIELD_BYTES:
            if len(_DESCRIBE_CACHE) >= _MAX_DESCRIBE_CACHE:
                _DESCRIBE_CACHE.clear()
            _DESCRIBE_CACHE[key] = info
    return info


def _describe(fields: tuple[tuple[str, bytes, bool], ...]) -> EntityInfo:
    if len(fields) == 1 and fields[0][0] == "content-type" and not fields[0][2]:
        # One plain Content-Type (a multipart's, with its own boundary, misses the memo once
        # per message): what the general code below gives for it, without its lists.
        text = decode_header_bytes(fields[0][1])
        if "*" not in text and "(" not in text and (simple := _simple_parameterized(text)) is not None:
            head, ((param, value),) = simple
            found = ()
            if param in ("boundary", "name"):
                found = tuple(_distinct([v for v in (value, decode_encoded_words(value)) if v]))
            return EntityInfo((head,), found if param == "boundary" else (), (),
                              found if param == "name" else (), 1)
    media_types: list[str] = []
    boundaries: list[str] = []
    names: list[str] = []
    encodings: list[str] = []
    ct_fields = 0
    # Visible fields first so the primary reading is the one a strict client uses.
    if any(hidden for _, _, hidden in fields):
        fields = tuple(sorted(fields, key=lambda f: f[2]))
    for name, value, _hidden in fields:
        if name == "content-type":
            ct_fields += 1
            text = decode_header_bytes(value)
            head, params = _simple_parameterized(text) or parse_parameterized(text)
            media_types.append(head)
            if "*" in text or "(" in text:
                boundaries.extend(parameter_values(params, "boundary"))
                names.extend(_names_from(text, "name", params))
            else:
                # No RFC 2231 sections and no comments: the plain values are every reading
                # (repeats are dropped by the _distinct below, keeping first-seen order).
                for param, param_value in params:
                    if param == "boundary":
                        boundaries.append(param_value)
                    elif param == "name":
                        names.append(param_value)
                        names.append(decode_encoded_words(param_value))
        elif name == "content-disposition":
            text = decode_header_bytes(value)
            if "*" in text or "(" in text:
                names.extend(_names_from(text, "filename"))
            else:  # as for Content-Type above: the plain values are every reading
                for param, param_value in (_simple_parameterized(text) or parse_parameterized(text))[1]:
                    if param == "filename":
                        names.append(param_value)
                        names.append(decode_encoded_words(param_value))
        elif name == "content-transfer-encoding":
            token = _strip_comments(decode_header_bytes(value)).strip().strip('"').lower()
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
