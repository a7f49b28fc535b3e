"""The built-in EICAR signature follows EICAR's own rules, and nothing looser."""

from __future__ import annotations

import pytest

from mailguard.scan.detectors.base import ScanObject
from mailguard.scan.detectors.eicar import EICAR, EicarDetector
from mailguard.scan.verdict import Finding


def found(data: bytes) -> list[Finding]:
    return EicarDetector().scan(ScanObject(data, "2/eicar.com", ("eicar.com",)))


@pytest.mark.parametrize("data", [
    EICAR,
    EICAR + b"\r\n",
    EICAR + b" \t\x1a\n",
    EICAR + b" " * 60,          # exactly 128 bytes
])
def test_the_test_file(data):
    assert found(data) == [Finding("Eicar-Test-Signature", "eicar", "2/eicar.com")]


@pytest.mark.parametrize("data", [
    b"",
    EICAR[:-1],                                   # truncated
    EICAR[:67] + b"?",                            # one byte off
    b"Our AV test string is " + EICAR + b", do not worry.",   # mentioned in prose
    b" " + EICAR,                                 # not at the start
    EICAR + b" " * 61,                            # longer than 128 bytes
    EICAR + b"\r\nand some text",                 # followed by something other than white space
    EICAR.lower(),
])
def test_not_the_test_file(data):
    assert found(data) == []
