"""YARA rules (``detection-engine.yara.rules``) through yara-python, the optional ``yara`` extra.

Rules are compiled once, from files or folders (``*.yar``, ``*.yara`` in name order), each
file in its own namespace so two files may reuse a rule name. A finding is named after
the rule (``Finding.detector`` already says "yara"). A rule that takes longer than the
message's scan time is a DetectorFailed, so the object is unscanned, never clean.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mailguard.errors import ScanError
from mailguard.scan.detectors.base import DetectorFailed, ScanObject
from mailguard.scan.verdict import Finding

RULE_EXTENSIONS = {".yar", ".yara"}


def rule_files(paths: tuple[str, ...] | list[str]) -> list[Path]:
    files: list[Path] = []
    for entry in paths:
        path = Path(entry).expanduser()
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in RULE_EXTENSIONS and p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise ScanError(f"{path}: no such YARA rule file or folder")
    return files


class YaraDetector:
    name = "yara"

    def __init__(self, rules: Any, timeout: float) -> None:
        self._rules = rules
        # yara-python takes whole seconds; never 0, which would mean "no time-out".
        self._timeout = max(1, math.ceil(timeout))

    @classmethod
    def from_paths(cls, paths: tuple[str, ...] | list[str], timeout: float) -> "YaraDetector":
        try:
            import yara
        except ImportError:
            raise ScanError("YARA rules are configured (detection-engine.yara.rules) but yara-python is "
                            "not installed: pip install 'mailguard[yara]'") from None
        files = rule_files(paths)
        if not files:
            return cls(None, timeout)  # an empty rules folder: nothing to match yet
        try:
            rules = yara.compile(filepaths={f"r{index}": str(file) for index, file in enumerate(files)})
        except yara.SyntaxError as exc:
            raise ScanError(f"bad YARA rule: {exc}") from None
        except yara.Error as exc:
            raise ScanError(f"cannot load YARA rules: {exc}") from None
        return cls(rules, timeout)

    def scan(self, obj: ScanObject) -> list[Finding]:
        if self._rules is None:
            return []
        import yara

        try:
            matches = self._rules.match(data=obj.data, timeout=self._timeout)
        except yara.TimeoutError:
            raise DetectorFailed("YARA rules timed out") from None
        except yara.Error as exc:
            raise DetectorFailed(f"YARA failed: {exc}") from None
        return [Finding(name, self.name, obj.path) for name in sorted({m.rule for m in matches})]

    def close(self) -> None:
        pass
