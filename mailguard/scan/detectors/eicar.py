"""The built-in EICAR test signature, exactly as EICAR defines the test file.

EICAR's rules (eicar.org, "Anti Malware Testfile"): the file starts with the 68-byte
string, which may be followed by white space only (space, tab, LF, CR, Ctrl-Z), and the
whole file is at most 128 bytes. So a message that merely quotes the string in prose, or
a truncated copy, is not a detection, which is what keeps our false-positive rate at zero
on mail that talks about EICAR.
"""

from __future__ import annotations

from mailguard.scan.detectors.base import ScanObject
from mailguard.scan.verdict import Finding

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
DETECTION_NAME = "Eicar-Test-Signature"
MAX_FILE_SIZE = 128
_TRAILING_WHITESPACE = b" \t\r\n\x1a"


def is_eicar(data: bytes) -> bool:
    return (len(data) <= MAX_FILE_SIZE and data.startswith(EICAR)
            and not data[len(EICAR):].strip(_TRAILING_WHITESPACE))


class EicarDetector:
    name = "eicar"

    def scan(self, obj: ScanObject) -> list[Finding]:
        if is_eicar(obj.data):
            return [Finding(DETECTION_NAME, self.name, obj.path)]
        return []

    def close(self) -> None:
        pass
