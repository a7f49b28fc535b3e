"""ClamAV-format signature databases (``detection-engine.signatures.paths``).

Loaded from files or folders (a folder contributes its files with a known extension, in
name order):

- ``.hdb``/``.hdu``: ``MD5:size:Name``; ``.hsb``/``.hsu``: ``SHA1-or-SHA256:size:Name``, where
  ``size`` may be ``*`` (any size; ClamAV wants functionality level 73 for it, which we
  accept with or without the trailing level fields);
- ``.ndb``/``.ndu``: body signatures, see ``ndb``.

A line we cannot read is a ScanError naming the file and line number: a typo in a
signature must not silently shrink protection. Comment lines (``#``) and blank lines are
skipped. Hashing costs a full pass over an object, so each algorithm runs only when some
signature of it has the object's exact size (or ``*``).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import defaultdict
from pathlib import Path

from mailguard.errors import ScanError
from mailguard.scan.detectors import ndb, ndb_re
from mailguard.scan.detectors.base import ScanObject
from mailguard.scan.verdict import Finding

log = logging.getLogger(__name__)

HASH_EXTENSIONS = {".hdb": "md5", ".hdu": "md5", ".hsb": "sha", ".hsu": "sha"}
BODY_EXTENSIONS = {".ndb", ".ndu"}
KNOWN_EXTENSIONS = set(HASH_EXTENSIONS) | BODY_EXTENSIONS
# freshclam's signed, compressed databases: clamd reads them, we do not.
SIGNED_EXTENSIONS = {".cvd", ".cld", ".cud"}
_HASH_LENGTHS = {32: "md5", 40: "sha1", 64: "sha256"}
_HEX_DIGITS = re.compile(r"[0-9a-fA-F]+")
ANY_SIZE = -1


class SignatureDatabase:
    """Every hash and body signature from the configured paths."""

    def __init__(self) -> None:
        # algorithm -> size (or ANY_SIZE) -> digest -> name
        self.hashes: dict[str, dict[int, dict[bytes, str]]] = defaultdict(lambda: defaultdict(dict))
        self.bodies: list[ndb.BodySignature] = []
        self.skipped = 0  # valid lines we cannot use (PE-relative offsets)
        self.files: list[Path] = []

    @classmethod
    def load(cls, paths: tuple[str, ...] | list[str]) -> "SignatureDatabase":
        database = cls()
        for entry in paths:
            path = Path(entry).expanduser()
            if path.is_dir():
                files = sorted(p for p in path.iterdir() if p.suffix.lower() in KNOWN_EXTENSIONS and p.is_file())
                signed = sorted(p.name for p in path.iterdir() if p.suffix.lower() in SIGNED_EXTENSIONS)
                if signed:
                    log.warning("%s: ClamAV's signed databases (%s) are not read by mailguard; let clamd use "
                                "them (detection-engine.clamd.enabled)", path, ", ".join(signed))
            elif path.is_file():
                if path.suffix.lower() not in KNOWN_EXTENSIONS:
                    raise ScanError(f"{path}: unsupported signature file type (use "
                                    f"{', '.join(sorted(KNOWN_EXTENSIONS))})")
                files = [path]
            else:
                raise ScanError(f"{path}: no such signature file or folder")
            for file in files:
                database._load_file(file)
        if database.skipped:
            log.warning("skipped %d body signatures with executable-relative offsets (EP, sections)",
                        database.skipped)
        return database

    @property
    def signature_count(self) -> int:
        return len(self.bodies) + sum(len(by_digest) for sizes in self.hashes.values()
                                      for by_digest in sizes.values())

    def _load_file(self, file: Path) -> None:
        try:
            text = file.read_text(encoding="utf-8", errors="surrogateescape")
        except OSError as exc:
            raise ScanError(f"{file}: cannot read: {exc.strerror}") from None
        suffix = file.suffix.lower()
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                if suffix in BODY_EXTENSIONS:
                    self.bodies.append(ndb.parse_line(line))
                else:
                    self._add_hash(line, HASH_EXTENSIONS[suffix])
            except ndb.UnsupportedOffset:
                self.skipped += 1
            except (ndb.SignatureSyntaxError, re.error) as exc:
                raise ScanError(f"{file}:{number}: bad signature: {exc}") from None
        self.files.append(file)

    def _add_hash(self, line: str, family: str) -> None:
        fields = line.split(":")
        if len(fields) < 3 or len(fields) > 5:
            raise ndb.SignatureSyntaxError("expected hash:size:name[:MinFL[:MaxFL]]")
        digest_text, size_text, name = fields[:3]
        algorithm = _HASH_LENGTHS.get(len(digest_text))
        if not _HEX_DIGITS.fullmatch(digest_text) or algorithm is None or (
                (family == "md5") != (algorithm == "md5")):
            expected = "32 hex digits (MD5)" if family == "md5" else "40 or 64 hex digits (SHA-1 or SHA-256)"
            raise ndb.SignatureSyntaxError(f"bad hash {digest_text!r}, expected {expected}")
        if size_text == "*":
            size = ANY_SIZE
        elif size_text.isdigit():
            size = int(size_text)
        else:
            raise ndb.SignatureSyntaxError(f"bad size {size_text!r}, expected a number or '*'")
        if not name:
            raise ndb.SignatureSyntaxError("empty signature name")
        for level in fields[3:]:
            if level and not level.isdigit():
                raise ndb.SignatureSyntaxError(f"bad functionality level {level!r}")
        self.hashes[algorithm][size][bytes.fromhex(digest_text)] = name


class ClamavDbDetector:
    """Hash and body signatures. Body signatures run on YARA's engine when yara-python is
    installed (see ``ndb_yara``: its speed does not fall with the number of signatures), and
    on the ``re`` engine of ``ndb`` otherwise, or for what YARA cannot express."""

    name = "clamav-db"

    def __init__(self, database: SignatureDatabase, *, timeout: float = 60.0, use_yara: bool | None = None) -> None:
        from mailguard.scan.detectors import ndb_yara

        self.database = database
        bodies = database.bodies
        self._yara = None
        if use_yara or (use_yara is None and bodies and ndb_yara.yara_available()):
            self._yara = ndb_yara.YaraBodyMatcher(bodies, timeout)
            bodies = self._yara.leftovers
        self._matcher = ndb_re.BodyMatcher(bodies)
        # algorithm -> sizes that have signatures; ANY_SIZE means every object is hashed
        self._sizes = {algorithm: set(by_size) for algorithm, by_size in database.hashes.items()}
        # Only the engines that hold signatures run: each costs a call or a pass per object.
        self._body_matchers = [match for match, count in (
            (self._matcher.match, len(self._matcher.signatures)),
            (self._yara.match_rules, len(self._yara.signatures)) if self._yara else (None, 0),
            (self._yara.anchored.match, len(self._yara.anchored.signatures)) if self._yara else (None, 0),
        ) if count]

    @classmethod
    def from_paths(cls, paths: tuple[str, ...] | list[str], *, timeout: float = 60.0,
                   use_yara: bool | None = None) -> "ClamavDbDetector":
        return cls(SignatureDatabase.load(paths), timeout=timeout, use_yara=use_yara)

    @property
    def engines(self) -> dict[str, int]:
        """How many body signatures each engine runs (for status and the bench)."""
        return {"yara": len(self._yara.signatures) if self._yara else 0,
                "in place": len(self._yara.anchored.signatures) if self._yara else 0,
                "re": len(self._matcher.signatures)}

    def scan(self, obj: ScanObject) -> list[Finding]:
        data = obj.data
        names = [name for match in self._body_matchers for name in match(data)]
        size = len(data)
        for algorithm, sizes in self._sizes.items():
            if size in sizes or ANY_SIZE in sizes:
                digest = hashlib.new(algorithm, data).digest()
                by_size = self.database.hashes[algorithm]
                name = by_size.get(size, {}).get(digest) or by_size.get(ANY_SIZE, {}).get(digest)
                if name:
                    names.append(name)
        return [Finding(name, self.name, obj.path) for name in sorted(set(names))] if names else []

    def close(self) -> None:
        pass
