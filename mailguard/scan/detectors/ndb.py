"""ClamAV body signatures (.ndb): ``Name:TargetType:Offset:HexSignature[:MinFL[:MaxFL]]``.

The hex grammar (docs.clamav.net, "Body-based Signature Content Format") becomes Python
regular expressions on bytes:

    aa        the byte 0xaa               a? / ?a   a nibble fixed, the other free
    ??        any byte                    *         any number of bytes
    {n} {n-m} {-m} [n-m]   n to m bytes   {n-}      at least n bytes
    (aa|bbcc) one of the alternatives     !(aa|bb)  none of them (same length)
    (B) (L) (W)  word boundary, line boundary, non-alphanumeric byte

Offsets: ``*`` (anywhere), ``n``, ``n,m`` (starting within m bytes after n), ``EOF-n``
and ``EOF-n,m``. PE-relative offsets (``EP+n``, ``Sx+n``, ``SL+n``, ``SE``) and
``VI``/macro offsets need an executable parser: such lines are valid, so they are
counted as skipped, not refused.

Two engines run what this module parses: ``ndb_re`` (Python's ``re``, always there) and
``ndb_yara`` (YARA's, when yara-python is installed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEX = b"0123456789abcdefABCDEF"
_ALNUM = rb"A-Za-z0-9"
# ClamAV target types ([docs] "Target Types"); 0 is any file.
TARGET_TYPES = range(0, 15)
# Target types we can recognise by magic bytes; a signature for one of these only runs on such objects.
_TARGET_MAGIC = {
    1: (b"MZ",),                                                    # PE
    2: (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",),                      # OLE2
    6: (b"\x7fELF",),                                               # ELF
    9: (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe"),
    10: (b"%PDF",),                                                 # PDF
}
# Longest literal trigger kept per signature: longer ones only make the re engine's trie bigger.
_MAX_TRIGGER = 16


def target_magics(target: int) -> tuple[bytes, ...]:
    """The magic bytes a file of this target type starts with; () when any file qualifies."""
    return _TARGET_MAGIC.get(target, ())


class SignatureSyntaxError(ValueError):
    """A line that is not a valid body signature; the loader adds file and line number."""


class UnsupportedOffset(Exception):
    """A valid signature whose offset needs an executable parser (EP, sections, VI)."""


@dataclass(frozen=True)
class Piece:
    """Part of a signature between unbounded gaps, and the least gap before it."""

    pattern: re.Pattern[bytes]
    min_gap: int
    max_length: int  # the longest match (pieces have only bounded parts)


@dataclass(frozen=True)
class BodySignature:
    name: str
    target: int
    anchor: str                 # "any", "start" (offset from the start) or "eof" (from the end)
    offset: int                 # for "start" / "eof"
    window: int                 # extra bytes the start may float by (``n,m``)
    pieces: tuple[Piece, ...]
    trigger: bytes              # regex source: literal prefix or first piece, for the shared search
    first_bytes: frozenset[int]  # bytes a match can start with (empty: unknown, any byte)
    literal_prefix: bytes
    yara_hex: str | None = None  # the same signature as a YARA hex string, when YARA can say it

    def applies_to(self, data: bytes) -> bool:
        magics = _TARGET_MAGIC.get(self.target)
        return magics is None or data.startswith(magics)


def parse_line(line: str) -> BodySignature:
    """One .ndb line; raises SignatureSyntaxError or UnsupportedOffset."""
    fields = line.split(":")
    if len(fields) < 4 or len(fields) > 6:
        raise SignatureSyntaxError("expected Name:TargetType:Offset:HexSignature[:MinFL[:MaxFL]]")
    name, target_text, offset_text, hexsig = fields[:4]
    if not name:
        raise SignatureSyntaxError("empty signature name")
    if not target_text.isdigit() or int(target_text) not in TARGET_TYPES:
        raise SignatureSyntaxError(f"bad target type {target_text!r}")
    for level in fields[4:]:
        if level and not level.isdigit():
            raise SignatureSyntaxError(f"bad functionality level {level!r}")
    anchor, offset, window = _parse_offset(offset_text)
    pieces, first_tokens, yara_hex = _parse_hex(hexsig.strip())
    literal_prefix = _literal_prefix(first_tokens)
    trigger = re.escape(literal_prefix) if literal_prefix else pieces[0].pattern.pattern
    return BodySignature(name, int(target_text), anchor, offset, window, tuple(pieces), trigger,
                         _first_bytes(first_tokens), literal_prefix, yara_hex)


def _parse_offset(text: str) -> tuple[str, int, int]:
    text = text.strip()
    if text == "*":
        return "any", 0, 0
    base, _, window_text = text.partition(",")
    window = 0
    if window_text:
        if not window_text.isdigit():
            raise SignatureSyntaxError(f"bad offset {text!r}")
        window = int(window_text)
    if base.isdigit():
        return "start", int(base), window
    if base.startswith("EOF-") and base[4:].isdigit():
        return "eof", int(base[4:]), window
    if re.fullmatch(r"(EP[+-]\d+|S\d+\+\d+|SL[+-]\d+|SE\d+|VI|\$\d+\$)", base):
        raise UnsupportedOffset(text)
    raise SignatureSyntaxError(f"bad offset {text!r}")


@dataclass(frozen=True)
class _Token:
    """One element of a signature, rendered for both engines."""

    source: bytes                   # Python regex source
    first: frozenset[int] | None    # bytes a match can start with; None: unknown
    min_length: int
    max_length: int
    literal: int | None = None      # the byte, for a plain hex byte
    yara: str | None = None         # YARA hex-string syntax; None where YARA has no equivalent


_ANY_BYTE = _Token(b".", frozenset(range(256)), 1, 1, yara="??")


def _parse_hex(sig: str) -> tuple[list[Piece], list[_Token], str | None]:
    """Pieces for the regex engine, the first piece's tokens, and the YARA hex string (or None)."""
    if not sig:
        raise SignatureSyntaxError("empty hex signature")
    text = sig.encode("ascii", "replace")
    pieces: list[Piece] = []
    tokens: list[_Token] = []
    first_tokens: list[_Token] | None = None
    yara_parts: list[str | None] = []
    gap_before = 0
    i = 0

    def close_piece(next_gap: int) -> None:
        nonlocal tokens, gap_before, first_tokens
        if not any(t.max_length for t in tokens):
            raise SignatureSyntaxError("a signature may not start, end or be made only of wildcards")
        if first_tokens is None:
            first_tokens = tokens
        source = b"".join(t.source for t in tokens)
        pieces.append(Piece(re.compile(source, re.DOTALL), gap_before, sum(t.max_length for t in tokens)))
        if yara_parts:
            yara_parts.append(f"[{gap_before}-]")  # YARA's unbounded jump
        yara_parts.extend(t.yara for t in tokens)
        tokens, gap_before = [], next_gap

    while i < len(text):
        c = text[i:i + 1]
        if c == b"*":
            close_piece(0)
            i += 1
        elif c == b"{":
            end = text.find(b"}", i)
            if end < 0:
                raise SignatureSyntaxError("unclosed '{'")
            low, high = _parse_range(text[i + 1:end].decode(), "{}")
            if high is None:
                close_piece(low)
            else:
                if not tokens:
                    raise SignatureSyntaxError("a signature may not start with a gap")
                tokens.append(_Token(b".{%d,%d}?" % (low, high), None, low, high, yara=f"[{low}-{high}]"))
            i = end + 1
        elif c == b"[":
            end = text.find(b"]", i)
            if end < 0:
                raise SignatureSyntaxError("unclosed '['")
            low, high = _parse_range(text[i + 1:end].decode(), "[]")
            if high is None or not tokens:
                raise SignatureSyntaxError("'[n-m]' needs both bounds and bytes before it")
            tokens.append(_Token(b".{%d,%d}?" % (low, high), None, low, high, yara=f"[{low}-{high}]"))
            i = end + 1
        elif c in (b"(", b"!"):
            token, i = _parse_group(text, i)
            tokens.append(token)
        else:
            token = _parse_byte(text[i:i + 2])
            tokens.append(token)
            i += 2
    close_piece(0)
    assert first_tokens is not None
    yara_hex = None if None in yara_parts else " ".join(part for part in yara_parts if part)
    return pieces, first_tokens, yara_hex


def _parse_range(text: str, brackets: str) -> tuple[int, int | None]:
    """``n``, ``n-m``, ``-m`` or ``n-`` -> (low, high or None for unbounded)."""
    match = re.fullmatch(r"(\d*)(-?)(\d*)", text)
    if not match or not (match[1] or match[3]) or (not match[2] and not match[1]):
        raise SignatureSyntaxError(f"bad range {brackets[0]}{text}{brackets[1]}")
    low = int(match[1]) if match[1] else 0
    if not match[2]:
        return low, low
    high = int(match[3]) if match[3] else None
    if high is not None and high < low:
        raise SignatureSyntaxError(f"bad range {brackets[0]}{text}{brackets[1]}")
    return low, high


def _parse_byte(pair: bytes) -> _Token:
    if len(pair) != 2:
        raise SignatureSyntaxError("odd number of hex digits")
    high, low = pair[:1], pair[1:]
    if pair == b"??":
        return _ANY_BYTE
    if high in b"?" and low and low in _HEX:
        values = [(h << 4) | int(low, 16) for h in range(16)]
        return _Token(_byte_class(values), frozenset(values), 1, 1, yara="?" + low.decode().upper())
    if high and high in _HEX and low == b"?":
        base = int(high, 16) << 4
        return _Token(b"[\\x%02x-\\x%02x]" % (base, base | 0xF), frozenset(range(base, base + 16)), 1, 1,
                      yara=high.decode().upper() + "?")
    if high and low and high in _HEX and low in _HEX:
        value = int(pair, 16)
        return _Token(b"\\x%02x" % value, frozenset((value,)), 1, 1, literal=value, yara=f"{value:02X}")
    raise SignatureSyntaxError(f"bad hex byte {pair.decode('ascii', 'replace')!r}")


def _byte_class(values: list[int]) -> bytes:
    return b"[" + b"".join(b"\\x%02x" % v for v in values) + b"]"


_SPECIALS = {
    b"(B)": _Token(b"(?:[^%s]|\\A|\\Z)" % _ALNUM, None, 0, 1),
    b"(L)": _Token(b"(?:\\r\\n|[\\r\\n]|\\A|\\Z)", None, 0, 2),
    b"(W)": _Token(b"[^%s]" % _ALNUM, None, 1, 1),
}


def _parse_group(text: bytes, i: int) -> tuple[_Token, int]:
    for special, token in _SPECIALS.items():
        if text.startswith(special, i):
            return token, i + len(special)
    negated = text[i:i + 1] == b"!"
    start = i + 1 if negated else i
    if text[start:start + 1] != b"(":
        raise SignatureSyntaxError("'!' must be followed by '('")
    end = text.find(b")", start)
    if end < 0:
        raise SignatureSyntaxError("unclosed '('")
    alternatives = []
    for alternative in text[start + 1:end].split(b"|"):
        if not alternative or len(alternative) % 2:
            raise SignatureSyntaxError("empty or odd-length alternative in '(...)'")
        alternatives.append([_parse_byte(alternative[k:k + 2]) for k in range(0, len(alternative), 2)])
    lengths = {len(a) for a in alternatives}
    sources = [b"".join(t.source for t in a) for a in alternatives]
    first: set[int] = set()
    for alternative in alternatives:
        first |= alternative[0].first or set(range(256))
    if negated:
        if len(lengths) != 1:
            raise SignatureSyntaxError("alternatives of '!(...)' must have the same length")
        (length,) = lengths
        source = b"(?!(?:" + b"|".join(sources) + b"))" + (b".{%d}" % length)
        # YARA can negate one byte (~AA), not a set of alternatives.
        single = alternatives[0][0] if len(alternatives) == 1 and length == 1 else None
        yara = "~" + single.yara if single is not None and single.literal is not None else None
        return _Token(source, None, length, length, yara=yara), end + 1
    yara = "( " + " | ".join(" ".join(t.yara or "" for t in a) for a in alternatives) + " )"
    return _Token(b"(?:" + b"|".join(sources) + b")", frozenset(first), min(lengths), max(lengths),
                  yara=yara), end + 1


def _literal_prefix(tokens: list[_Token]) -> bytes:
    prefix = bytearray()
    for token in tokens:
        if token.literal is None or len(prefix) >= _MAX_TRIGGER:
            break
        prefix.append(token.literal)
    return bytes(prefix)


def _first_bytes(tokens: list[_Token]) -> frozenset[int]:
    first = tokens[0].first
    return frozenset() if first is None or len(first) == 256 else first
