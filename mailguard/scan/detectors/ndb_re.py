"""The ``re`` engine for ClamAV body signatures (parsed by ``ndb``).

Every byte of every mail goes past these, so the many signatures are searched
together: each floating signature contributes a *trigger* (its leading literal bytes, or
its first piece when it has none) to one alternation, factored into a trie of literal
prefixes so ``re`` rejects most positions on the first byte. Only where a trigger
matches do we run the candidate signatures whose first byte is that one, each with its
own compiled pattern. An unbounded gap (``*``, ``{n-}``) splits a signature into pieces
matched one after another with ``search``, never as ``.*`` inside one pattern: that keeps
a signature from rescanning the rest of the buffer at every trigger hit (quadratic time).
"""

from __future__ import annotations

import re
from collections import defaultdict

from mailguard.scan.detectors.ndb import BodySignature


class _Attempts:
    """Per-buffer memory of where each signature's tail already failed.

    The pieces after the first are found with forward searches, so if they cannot be found
    after position e they cannot be found after any later position either. Remembering the
    least such e per signature keeps a frequent first piece with an absent tail from
    rescanning the buffer at every occurrence (which would be quadratic).
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._dead_after: dict[int, int] = {}

    def match_at(self, signature: BodySignature, pos: int) -> bool:
        """Does ``signature`` match with its first piece starting exactly at ``pos``?"""
        first = signature.pieces[0].pattern.match(self.data, pos)
        return first is not None and self._rest(signature, first.end())

    def search_window(self, signature: BodySignature, start: int, window: int) -> bool:
        """Does it match with its first piece starting within ``window`` bytes after ``start``?"""
        data = self.data
        if start < 0 or start > len(data):
            return False
        first = signature.pieces[0]
        end = min(len(data), start + window + first.max_length)
        for found in first.pattern.finditer(data, start, end):
            if found.start() > start + window:
                return False
            if self._rest(signature, found.end()):
                return True
        return False

    def dead_from(self, signature: BodySignature, pos: int) -> bool:
        """True when no match whose first piece starts at ``pos`` or later is possible."""
        return self._dead_after.get(id(signature), len(self.data) + 1) <= pos

    def _rest(self, signature: BodySignature, pos: int) -> bool:
        if len(signature.pieces) == 1:
            return True
        key = id(signature)
        if pos >= self._dead_after.get(key, len(self.data) + 1):
            return False
        # Taking each piece at its earliest place leaves the most room for the next, so one
        # forward pass decides the whole signature.
        start = pos
        for piece in signature.pieces[1:]:
            found = piece.pattern.search(self.data, pos + piece.min_gap)
            if found is None:
                self._dead_after[key] = min(start, self._dead_after.get(key, start))
                return False
            pos = found.end()
        return True


class BodyMatcher:
    """All body signatures of a database, searched together (see the module docstring)."""

    def __init__(self, signatures: list[BodySignature]) -> None:
        self.signatures = signatures
        floating = [s for s in signatures if s.anchor == "any"]
        self._anchored = [s for s in signatures if s.anchor != "any"]
        # Signatures whose first byte we know go behind the shared trigger; the rest search alone.
        indexed = [s for s in floating if s.first_bytes]
        self._alone = [s for s in floating if not s.first_bytes]
        self._by_first_byte: dict[int, list[BodySignature]] = defaultdict(list)
        for signature in indexed:
            for byte in signature.first_bytes:
                self._by_first_byte[byte].append(signature)
        self._trigger = _compile_trigger(indexed) if indexed else None
        self._indexed_count = len(indexed)

    def match(self, data: bytes) -> list[str]:
        """Names of the signatures found in ``data`` (sorted, unique)."""
        found: set[str] = set()
        attempts = _Attempts(data)
        for signature in self._anchored:
            if signature.name not in found and signature.applies_to(data) and _anchored_match(
                    attempts, signature, data):
                found.add(signature.name)
        for signature in self._alone:
            if signature.name not in found and signature.applies_to(data) and attempts.search_window(
                    signature, 0, len(data)):
                found.add(signature.name)
        if self._trigger is not None:
            self._match_triggered(attempts, found)
        return sorted(found)

    def _match_triggered(self, attempts: _Attempts, found: set[str]) -> None:
        # Every position where some trigger matches is visited (the search resumes one byte
        # after the last hit, not after its end), and there every signature that can start
        # with that byte is tried: overlapping signatures cannot hide one another.
        # A signature is retired once found, or once its tail failed from before this position
        # (no later start can do better); when all are retired the search stops early.
        data = attempts.data
        search = self._trigger.search  # type: ignore[union-attr]
        by_first_byte = self._by_first_byte
        retired: set[int] = set()
        hit = search(data)
        while hit is not None:
            pos = hit.start()
            for signature in by_first_byte[data[pos]]:
                key = id(signature)
                if key in retired:
                    continue
                if signature.name in found or not signature.applies_to(data):
                    retired.add(key)
                elif attempts.match_at(signature, pos):
                    found.add(signature.name)
                    retired.add(key)
                elif attempts.dead_from(signature, pos + 1):
                    retired.add(key)
            if len(retired) == self._indexed_count:
                break
            hit = search(data, pos + 1)


def _anchored_match(attempts: _Attempts, signature: BodySignature, data: bytes) -> bool:
    start = signature.offset if signature.anchor == "start" else len(data) - signature.offset
    if signature.window:
        return attempts.search_window(signature, start, signature.window)
    return 0 <= start <= len(data) and attempts.match_at(signature, start)


def _compile_trigger(signatures: list[BodySignature]) -> re.Pattern[bytes]:
    """One alternation of every trigger, literal prefixes merged into a trie.

    ``re`` tries alternatives in order but skips one whose first byte differs from the
    input at once; merging prefixes makes those first bytes unique at each level, so a
    position costs about one comparison per distinct first byte, not one per signature.
    """
    literals = sorted({s.literal_prefix for s in signatures if s.literal_prefix})
    others = sorted({s.trigger for s in signatures if not s.literal_prefix})
    branches = [_trie_source(literals)] if literals else []
    branches += others
    return re.compile(b"|".join(branches), re.DOTALL)


def _trie_source(literals: list[bytes]) -> bytes:
    # A literal that another extends is enough on its own as a trigger: keep the shorter.
    kept: list[bytes] = []
    for literal in literals:  # sorted, so a prefix comes right before its extensions
        if kept and literal.startswith(kept[-1]):
            continue
        kept.append(literal)
    return _trie(kept)


def _trie(literals: list[bytes]) -> bytes:
    if len(literals) == 1:
        return re.escape(literals[0])
    groups: dict[int, list[bytes]] = defaultdict(list)
    for literal in literals:
        groups[literal[0]].append(literal[1:])
    branches = []
    for byte, rests in sorted(groups.items()):
        head = re.escape(bytes((byte,)))
        if b"" in rests:  # this byte alone completes a trigger
            branches.append(head)
        else:
            branches.append(head + _group(_trie(rests)) if len(rests) > 1 else head + re.escape(rests[0]))
    return b"(?:" + b"|".join(branches) + b")" if len(branches) > 1 else branches[0]


def _group(source: bytes) -> bytes:
    return source if source.startswith(b"(?:") else b"(?:" + source + b")"
