"""Suite-wide fixtures and the rule that real-peer tests must run in CI.

Every test gets its own MAILGUARD_HOME, so nothing reads or writes a real settings
file or state folder, and no test meets the machine's own clamd: detection-engine.clamd.enabled
is auto by default, which would scan through a clamav-daemon running on the host (slower, and
verdicts that depend on its signatures). Tests of clamd start their own, at an address of theirs. Tests marked ``peer`` or ``root`` skip with a reason on a
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


@pytest.fixture(autouse=True)
def no_system_clamd(monkeypatch):
    """The places a distribution's clamd listens (the setting's default) answer nothing."""
    from mailguard.scan.detectors import clamd

    system = {clamd.DEFAULT_ADDRESS, *clamd.DISTRIBUTION_ADDRESSES}
    command = clamd.command

    def hidden(address: str, *args, **kwargs):
        if address in system:
            raise ConnectionRefusedError(f"{address}: the machine's clamd is not used in tests")
        return command(address, *args, **kwargs)

    monkeypatch.setattr(clamd, "command", hidden)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if _CI and report.skipped and (item.get_closest_marker("peer") or item.get_closest_marker("root")):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"real-peer test skipped in CI (CI=true), which must run it: {reason}"
    return report
