"""ClamAV-format databases: hash and body signatures from files and folders; bad lines named."""

from __future__ import annotations

import hashlib
import re

import pytest

from mailguard.errors import ScanError
from mailguard.scan.detectors.base import ScanObject
from mailguard.scan.detectors.clamav_db import ClamavDbDetector, SignatureDatabase
from mailguard.scan.verdict import Finding

PAYLOAD = b"MZ this stands in for a piece of malware " * 3
OTHER = b"a harmless file of the very same length!! " * 3


def names(detector: ClamavDbDetector, data: bytes) -> list[str]:
    return [f.name for f in detector.scan(ScanObject(data, "2/a.bin"))]


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_hash_signatures(tmp_path):
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    sha1 = hashlib.sha1(PAYLOAD).hexdigest()
    sha256 = hashlib.sha256(PAYLOAD).hexdigest()
    write(tmp_path, "a.hdb", f"# comment\n\n{md5}:{len(PAYLOAD)}:Test.MD5\n")
    write(tmp_path, "b.hsb", f"{sha1}:{len(PAYLOAD)}:Test.SHA1\n{sha256}:*:Test.SHA256:73\n")
    detector = ClamavDbDetector.from_paths([str(tmp_path)])
    assert names(detector, PAYLOAD) == ["Test.MD5", "Test.SHA1", "Test.SHA256"]
    assert names(detector, OTHER) == []
    assert detector.database.signature_count == 3


def test_hash_with_the_wrong_size_does_not_match(tmp_path):
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    write(tmp_path, "a.hdb", f"{md5}:{len(PAYLOAD) + 1}:Test.MD5\n")
    assert names(ClamavDbDetector.from_paths([str(tmp_path / "a.hdb")]), PAYLOAD) == []


def test_body_signatures_and_findings(tmp_path):
    write(tmp_path, "sigs.ndb", "Test.Body:0:*:7468697320{-10}7374616e6473\nTest.Start:0:0:4d5a\n")
    detector = ClamavDbDetector.from_paths([str(tmp_path / "sigs.ndb")])
    assert detector.scan(ScanObject(PAYLOAD, "2/x.zip/a.exe")) == [
        Finding("Test.Body", "clamav-db", "2/x.zip/a.exe"),
        Finding("Test.Start", "clamav-db", "2/x.zip/a.exe"),
    ]


def test_folder_takes_known_extensions_only(tmp_path):
    write(tmp_path, "notes.txt", "this is not a signature file")
    write(tmp_path, "x.ndb", "Test.X:0:*:414243\n")
    database = SignatureDatabase.load([str(tmp_path)])
    assert [p.name for p in database.files] == ["x.ndb"]


def test_a_folder_with_clamavs_signed_databases_says_they_are_not_read(tmp_path, caplog):
    write(tmp_path, "daily.cvd", "ClamAV-VDB:...")
    write(tmp_path, "x.ndb", "Test.X:0:*:414243\n")
    SignatureDatabase.load([str(tmp_path)])
    assert "daily.cvd" in caplog.text and "clamd" in caplog.text


def test_executable_relative_offsets_are_skipped_and_counted(tmp_path):
    write(tmp_path, "x.ndb", "Exe.Sig:1:EP+0:4142\nTest.X:0:*:414243\n")
    database = SignatureDatabase.load([str(tmp_path)])
    assert database.skipped == 1
    assert [s.name for s in database.bodies] == ["Test.X"]


@pytest.mark.parametrize("file,text,line,message", [
    ("a.hdb", "0123:10:Short.Hash", 1, "bad hash"),
    ("a.hdb", "# ok\n" + "a" * 40 + ":10:SHA1.In.Hdb", 2, "32 hex digits"),
    ("a.hdb", "g" * 32 + ":10:Not.Hex", 1, "bad hash"),
    ("a.hdb", "a" * 32 + ":ten:Bad.Size", 1, "bad size"),
    ("a.hdb", "a" * 32 + ":10:", 1, "empty signature name"),
    ("a.hdb", "a" * 32 + ":10", 1, "expected hash:size:name"),
    ("a.hsb", "a" * 32 + ":10:MD5.In.Hsb", 1, "40 or 64 hex digits"),
    ("a.hsb", "a" * 64 + ":*:Bad.Level:x", 1, "bad functionality level"),
    ("a.ndb", "Good:0:*:4142\n\nBad:0:*:4", 3, "odd number of hex digits"),
    ("a.ndb", "Bad:0:*:41(42", 1, "unclosed '('"),
    ("a.ndb", "Bad:0:sometimes:4142", 1, "bad offset"),
])
def test_bad_lines_name_file_and_line(tmp_path, file, text, line, message):
    path = write(tmp_path, file, text + "\n")
    with pytest.raises(ScanError, match=re.escape(f"{path}:{line}: bad signature:") + ".*" + re.escape(message)):
        SignatureDatabase.load([str(path)])


def test_missing_and_unsupported_paths(tmp_path):
    with pytest.raises(ScanError, match="no such signature file or folder"):
        SignatureDatabase.load([str(tmp_path / "absent.ndb")])
    path = write(tmp_path, "main.cvd", "")
    with pytest.raises(ScanError, match="unsupported signature file type"):
        SignatureDatabase.load([str(path)])
