"""A small, exact detector the engine tests use, independent of mailguard.scan.detectors.

It knows two things: the EICAR test file (an object that *is* the 68-byte string, optionally
followed by whitespace, as the EICAR rules allow: a mention inside prose is not a match) and
MD5 hashes of whole objects (like a ClamAV ``.hdb``). That is enough to tell whether the
MIME walk, the decoders and the rewriting handed every byte to the detectors, without
depending on the detector package being built at the same time.
"""

from __future__ import annotations

import hashlib

from mailguard.scan.detectors.base import ScanObject
from mailguard.scan.verdict import Finding

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_NAME = "Eicar-Test-Signature"
_EICAR_MAX_LENGTH = 128  # the EICAR rules: the file may be padded with whitespace up to 128 bytes


class ReferenceDetector:
    name = "reference"

    def __init__(self, md5_names: dict[str, str] | None = None) -> None:
        self.md5_names = dict(md5_names or {})
        self.seen: list[str] = []  # paths of the objects scanned, in order

    def scan(self, obj: ScanObject) -> list[Finding]:
        self.seen.append(obj.path)
        data = obj.data
        found = []
        if (data.startswith(EICAR) and len(data) <= _EICAR_MAX_LENGTH
                and not data[len(EICAR):].strip(b" \t\r\n\x1a")):
            found.append(Finding(EICAR_NAME, self.name, obj.path))
        if self.md5_names:
            name = self.md5_names.get(hashlib.md5(data).hexdigest())
            if name:
                found.append(Finding(name, self.name, obj.path))
        return found

    def close(self) -> None:
        pass
