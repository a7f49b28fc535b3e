"""Body signatures at a fixed place (``n``, ``n,m``, ``EOF-n``, ``EOF-n,m``), checked where they sit.

YARA finds every occurrence of a string in the whole object first and tests the
condition (``$s at 0``) afterwards, so an anchored signature costs a full pass over every
object, the raw message and each decoded part alike: tens of microseconds per message
for what is one comparison. Here such a signature is checked at its offset only: a plain
byte string with ``startswith``/``find`` in the window, anything else with its compiled
piece (``match`` at the offset, ``search`` bounded to the window plus the piece's longest
match). That is exact only for a signature of one piece (no ``*`` or ``{n-}``): a later
piece may sit anywhere after the first, so those stay with YARA (see ``handles``).

This runs the signatures ``ndb_yara`` would give YARA, so it keeps YARA's reading of a
window that starts before the file does (``EOF-n,m`` with n larger than the file): the
part of the window inside the file still counts (``$s in (filesize - n .. filesize - n + m)``
matches at 0). ``tests/scan/detectors/test_ndb_anchored.py`` checks it against YARA on
random buffers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from mailguard.scan.detectors.ndb import BodySignature, target_magics

_LITERAL_SOURCE = re.compile(rb"(?:\\x[0-9a-f]{2})+")
# data -> does the signature match there
_Check = Callable[[bytes], bool]


def handles(signature: BodySignature) -> bool:
    """True for a signature this module checks exactly: anchored, and of one piece."""
    return signature.anchor != "any" and len(signature.pieces) == 1


def literal_of(signature: BodySignature) -> bytes | None:
    """The bytes a one-piece signature stands for when it is nothing but plain hex bytes."""
    source = signature.pieces[0].pattern.pattern
    if not _LITERAL_SOURCE.fullmatch(source):
        return None  # ``ndb`` writes every plain byte as \\xNN: anything else is not a literal
    return bytes.fromhex(source.replace(b"\\x", b"").decode("ascii"))


class AnchoredMatcher:
    """Signatures for which ``handles`` is true; each checked at its offset (module docstring)."""

    def __init__(self, signatures: Sequence[BodySignature]) -> None:
        for signature in signatures:
            if not handles(signature):
                raise ValueError(f"{signature.name}: not an anchored one-piece signature")
        self.signatures = list(signatures)
        # (name, the magic bytes its target type starts with or None, check): ``applies_to`` unrolled.
        self._checks = [(s.name, target_magics(s.target) or None, _check(s)) for s in signatures]

    def match(self, data: bytes) -> list[str]:
        """Names of the signatures found in ``data`` (sorted, unique)."""
        found = [name for name, magics, check in self._checks
                 if (magics is None or data.startswith(magics)) and check(data)]
        return sorted(set(found)) if found else found


def _check(signature: BodySignature) -> _Check:
    offset, window = signature.offset, signature.window
    from_end = signature.anchor == "eof"
    literal = literal_of(signature)
    piece = signature.pieces[0]
    if literal is not None:
        if not window:
            if from_end:
                return lambda data: len(data) >= offset and data.startswith(literal, len(data) - offset)
            return lambda data: data.startswith(literal, offset)
        # find() with an end bound only reports occurrences that fit before it: starts up to ``last``.
        return lambda data: _window(data, offset, window, from_end,
                                    lambda first, last: data.find(literal, first, last + len(literal)) >= 0)
    pattern = piece.pattern
    if not window:
        if from_end:
            return lambda data: len(data) >= offset and pattern.match(data, len(data) - offset) is not None
        return lambda data: offset <= len(data) and pattern.match(data, offset) is not None
    # search() gives the leftmost start at or after ``first``; a match starting by ``last`` ends
    # within max_length of it, so the bound cuts off nothing that counts.
    longest = piece.max_length

    def in_window(data: bytes) -> bool:
        def search(first: int, last: int) -> bool:
            found = pattern.search(data, first, last + longest)
            return found is not None and found.start() <= last
        return _window(data, offset, window, from_end, search)

    return in_window


def _window(data: bytes, offset: int, window: int, from_end: bool, search: Callable[[int, int], bool]) -> bool:
    first = len(data) - offset if from_end else offset
    last = first + window
    if last < 0 or first > len(data):
        return False
    return search(max(first, 0), last)
