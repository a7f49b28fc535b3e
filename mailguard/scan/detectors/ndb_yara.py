"""Body signatures run by YARA's engine, when yara-python (the ``yara`` extra) is installed.

Python's ``re`` tries the alternatives of one big pattern one after another at each
position, so its cost grows with the number of signatures (bench/detectors.py: about
120 MB/s with 10 body signatures, 13 MB/s with 100). YARA finds atoms of all strings
at once (Aho-Corasick) and its speed hardly depends on the count. ClamAV's hex grammar
and YARA's hex strings are nearly the same language, so each signature YARA can express
exactly is translated into one rule:

    ndb  Name:1:EOF-8:4142??(43|4444)*5a5a
    yara rule r0 { strings: $s = { 41 42 ?? ( 43 | 44 44 ) [0-] 5A 5A }
                   condition: $s at filesize - 8 and (uint8(0) == 0x4D and uint8(1) == 0x5A) }

The rest (``(B)``, ``(L)``, ``(W)``, ``!(..|..)``, and anything YARA's compiler refuses)
stays with the ``re`` engine of ``ndb``, as does any signature YARA reports "too many
matches" for on a buffer: YARA stops recording matches of a string after a million, which
a hostile attachment could use to push the real match out, so that signature is checked
again by the engine that has no such cap.

A signature at a fixed offset of one piece (``0:4d5a...``, ``EOF-8:...``) never reaches
YARA: ``ndb_anchored`` checks it where it sits, with YARA's meaning, instead of YARA
reading the whole object to test one place. When only such signatures are configured
(a common case: a database with the EICAR file at offset 0), YARA is not called at all.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from mailguard.scan.detectors import ndb, ndb_anchored, ndb_re
from mailguard.scan.detectors.base import DetectorFailed

_SYNTAX_ERROR_LINE = re.compile(r"line (\d+)")


def yara_available() -> bool:
    try:
        import yara  # noqa: F401
    except ImportError:
        return False
    return True


def _condition(signature: ndb.BodySignature) -> str:
    if signature.anchor == "any":
        where = "$s"
    else:
        start = str(signature.offset) if signature.anchor == "start" else f"filesize - {signature.offset}"
        where = f"$s at {start}" if not signature.window else f"$s in ({start}..{start} + {signature.window})"
    magics = ndb.target_magics(signature.target)
    if not magics:
        return where
    checks = " or ".join("(" + " and ".join(f"uint8({i}) == 0x{b:02X}" for i, b in enumerate(magic)) + ")"
                         for magic in magics)
    return f"{where} and ({checks})"


def _rule(index: int, signature: ndb.BodySignature) -> str:
    return f"rule r{index} {{ strings: $s = {{ {signature.yara_hex} }} condition: {_condition(signature)} }}"


class YaraBodyMatcher:
    """The signatures YARA can run; ``leftovers`` are those it cannot, for the ``re`` engine.

    ``signatures`` are those compiled into YARA rules, ``anchored`` those of them checked in
    place instead (all of them are, unless ``anchored_in_place`` is False: the tests compare both).
    """

    def __init__(self, signatures: Sequence[ndb.BodySignature], timeout: float = 60.0, *,
                 anchored_in_place: bool = True) -> None:
        import yara

        self._timeout = max(1, math.ceil(timeout))
        expressible = [s for s in signatures if s.yara_hex is not None]
        self.leftovers = [s for s in signatures if s.yara_hex is None]
        in_place = [s for s in expressible if anchored_in_place and ndb_anchored.handles(s)]
        self.anchored = ndb_anchored.AnchoredMatcher(in_place)
        candidates = [s for s in expressible if not (anchored_in_place and ndb_anchored.handles(s))]
        # Compile; a rule YARA refuses is moved to the leftovers and the rest compiled again.
        while True:
            self.signatures = candidates
            if not candidates:
                self._rules: Any = None
                break
            source = "\n".join(_rule(index, s) for index, s in enumerate(candidates))
            try:
                self._rules = yara.compile(source=source)
                break
            except yara.SyntaxError as exc:
                found = _SYNTAX_ERROR_LINE.search(str(exc))
                if not found or not 1 <= int(found[1]) <= len(candidates):
                    raise
                self.leftovers.append(candidates.pop(int(found[1]) - 1))

    def match(self, data: bytes) -> list[str]:
        """Names found by the YARA rules and the in-place checks (sorted, unique)."""
        if self._rules is None:
            return self.anchored.match(data)
        return sorted(set(self.match_rules(data)) | set(self.anchored.match(data)))

    def match_rules(self, data: bytes) -> list[str]:
        """Names found by the YARA rules alone (sorted, unique)."""
        if self._rules is None:
            return []
        import yara

        overflowed: list[int] = []

        def on_warning(kind: int, detail: Any) -> int:
            if kind == yara.CALLBACK_TOO_MANY_MATCHES:
                overflowed.append(int(detail.rule[1:]))
            return yara.CALLBACK_CONTINUE

        try:
            matches = self._rules.match(data=data, timeout=self._timeout, warnings_callback=on_warning)
        except yara.TimeoutError:
            raise DetectorFailed("body signatures timed out (YARA)") from None
        except yara.Error as exc:
            raise DetectorFailed(f"body signatures failed (YARA): {exc}") from None
        names = {self.signatures[int(m.rule[1:])].name for m in matches}
        if overflowed:
            recheck = ndb_re.BodyMatcher([self.signatures[i] for i in set(overflowed)])
            names.update(recheck.match(data))
        return sorted(names)
