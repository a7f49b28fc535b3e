"""Suite-wide fixtures and the rule that real-peer tests must run in CI.

Every test gets its own MAILGUARD_HOME, so nothing reads or writes a real settings
file or state folder. Tests marked ``peer`` or ``root`` skip with a reason on a
developer machine that lacks the peer or root; with ``CI=true`` such a skip is turned
into a failure, because CI installs every peer (scripts/test.sh) and runs as root.
"""

from __future__ import annotations

import os

import pytest

_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(autouse=True)
def mailguard_home(tmp_path, monkeypatch):
    home = tmp_path / "mailguard-home"
    monkeypatch.setenv("MAILGUARD_HOME", str(home))
    monkeypatch.delenv("MAILGUARD_CONFIG", raising=False)
    return home


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if _CI and report.skipped and (item.get_closest_marker("peer") or item.get_closest_marker("root")):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"real-peer test skipped in CI (CI=true), which must run it: {reason}"
    return report
