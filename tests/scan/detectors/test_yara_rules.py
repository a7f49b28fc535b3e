"""YARA rules through yara-python: matches, bad rules, and the missing-package error."""

from __future__ import annotations

import builtins

import pytest

from mailguard.errors import ScanError
from mailguard.scan.detectors.base import ScanObject
from mailguard.scan.detectors.yara_rules import YaraDetector
from mailguard.scan.verdict import Finding

RULES = """
rule Suspicious_Macro_Words {
    strings: $a = "AutoOpen" $b = "Shell(" nocase
    condition: all of them
}
"""


def test_rules_from_a_folder_match(tmp_path):
    pytest.importorskip("yara")
    (tmp_path / "office.yar").write_text(RULES)
    (tmp_path / "ignored.txt").write_text("not a rule")
    detector = YaraDetector.from_paths([str(tmp_path)], timeout=5)
    assert detector.scan(ScanObject(b"Sub AutoOpen()\n x = SHELL(cmd)", "2/doc.bin")) == [
        Finding("Suspicious_Macro_Words", "yara", "2/doc.bin")]
    assert detector.scan(ScanObject(b"Sub AutoOpen()\n MsgBox 1", "2/doc.bin")) == []


def test_two_files_may_reuse_a_rule_name(tmp_path):
    pytest.importorskip("yara")
    (tmp_path / "a.yar").write_text('rule same { strings: $a = "alpha" condition: $a }')
    (tmp_path / "b.yara").write_text('rule same { strings: $b = "beta" condition: $b }')
    detector = YaraDetector.from_paths([str(tmp_path / "a.yar"), str(tmp_path / "b.yara")], timeout=5)
    assert [f.name for f in detector.scan(ScanObject(b"beta", ""))] == ["same"]


def test_bad_rule_is_a_scan_error(tmp_path):
    pytest.importorskip("yara")
    (tmp_path / "bad.yar").write_text("rule broken { condition: $nothing }")
    with pytest.raises(ScanError, match="bad YARA rule"):
        YaraDetector.from_paths([str(tmp_path)], timeout=5)


def test_missing_rules_path(tmp_path):
    pytest.importorskip("yara")
    with pytest.raises(ScanError, match="no such YARA rule file or folder"):
        YaraDetector.from_paths([str(tmp_path / "absent.yar")], timeout=5)


def test_missing_package_is_a_clear_error(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_yara(name, *args, **kwargs):
        if name == "yara":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_yara)
    (tmp_path / "a.yar").write_text(RULES)
    with pytest.raises(ScanError, match=r"yara-python is not installed: pip install 'mailguard\[yara\]'"):
        YaraDetector.from_paths([str(tmp_path)], timeout=5)
