"""A quarantine folder another user could change is refused by every command that would use it.

Its owner could rename or delete the originals kept there; the old code chmod'ed such a folder to
0700 and used it. Each command here must refuse it with the reason on stderr and exit code 2,
having changed nothing. Creating a folder owned by ``nobody`` needs root (CI runs as root).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mailguard.quarantine import Quarantine
from mailguard.scan.verdict import Finding, Verdict
from tests.mailbox.fixtures import EICAR, message
from tests.peers import require_root

MAILGUARD = str(Path(sys.executable).with_name("mailguard"))
NOBODY = 65534


def mailguard(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MAILGUARD, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def theirs(tmp_path: Path, mailguard_home: Path) -> Path:
    """tools.quarantine.path set to a folder owned by nobody, as one might find it."""
    require_root()
    folder = tmp_path / "theirs"
    folder.mkdir()
    os.chown(folder, NOBODY, NOBODY)
    os.chmod(folder, 0o755)
    mailguard_home.mkdir(parents=True, exist_ok=True)
    (mailguard_home / "config.toml").write_text(f'[tools.quarantine]\npath = "{folder}"\n')
    return folder


def refused(run: subprocess.CompletedProcess, folder: Path) -> bool:
    return (run.returncode == 2 and f"refusing the quarantine folder {folder}" in run.stderr
            and "owned by nobody" in run.stderr)


def unchanged(folder: Path) -> bool:
    info = folder.stat()
    return info.st_uid == NOBODY and stat.S_IMODE(info.st_mode) == 0o755 and not list(folder.iterdir())


def test_scan_action_refuses_it_and_changes_no_mailbox(tmp_path: Path, theirs: Path):
    mail = tmp_path / "infected.eml"
    original = message(1, EICAR + b"\n")
    mail.write_bytes(original)
    for action in ("clean", "tag"):
        run = mailguard("scan", str(mail), "--action", action)
        assert refused(run, theirs), (run.returncode, run.stderr)
        assert mail.read_bytes() == original and unchanged(theirs)
    assert mailguard("scan", str(mail)).returncode == 1  # a report-only scan keeps nothing: it runs


@pytest.mark.parametrize("command", [["quarantine", "list"], ["quarantine", "show", "20250401-0123456789ab"],
                                     ["quarantine", "restore", "20250401-0123456789ab"],
                                     ["quarantine", "delete", "20250401-0123456789ab"]])
def test_quarantine_commands_refuse_it(theirs: Path, command: list[str]):
    run = mailguard(*command)
    assert refused(run, theirs), (run.returncode, run.stderr)
    assert unchanged(theirs)


def test_quarantine_commands_refuse_entries_planted_in_it(tmp_path: Path, theirs: Path):
    # What nobody may have put there (or may replace at any time) is not shown as ours.
    os.chown(theirs, 0, 0)
    entry_id = Quarantine(theirs).add(message(1), Verdict.build([Finding("X", "eicar", "1")], []), "test")
    os.chown(theirs, NOBODY, NOBODY)
    run = mailguard("quarantine", "restore", entry_id, "--to", str(tmp_path / "out.eml"))
    assert refused(run, theirs) and not (tmp_path / "out.eml").exists()


@pytest.mark.parametrize("foreground", [False, True])
def test_start_refuses_it_and_starts_nothing(mailguard_home: Path, theirs: Path, foreground: bool):
    try:
        run = mailguard("start", *(["--foreground"] if foreground else []))
        assert refused(run, theirs), (run.returncode, run.stderr)
        assert not (mailguard_home / "mailguard.pid").exists() and unchanged(theirs)
    finally:
        mailguard("stop")


def test_reload_refuses_it_and_the_engine_keeps_its_settings(tmp_path: Path, mailguard_home: Path):
    require_root()
    mailguard_home.mkdir(parents=True, exist_ok=True)
    try:
        started = mailguard("start")
        assert started.returncode == 0, started.stderr
        folder = tmp_path / "theirs"
        folder.mkdir()
        os.chown(folder, NOBODY, NOBODY)
        (mailguard_home / "config.toml").write_text(f'[tools.quarantine]\npath = "{folder}"\n')
        run = mailguard("reload")
        assert run.returncode == 2 and "reload refused" in run.stderr and "owned by nobody" in run.stderr
        assert json.loads(mailguard("status", "--json").stdout)["running"] is True
        assert folder.stat().st_uid == NOBODY and not list(folder.iterdir())
    finally:
        mailguard("stop")
