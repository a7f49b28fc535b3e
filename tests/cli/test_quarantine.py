"""`mailguard quarantine list|show|restore|delete` through Typer's runner."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from typer.testing import CliRunner

from mailguard.cli.app import app
from mailguard.quarantine import Quarantine
from mailguard.scan.verdict import Finding, Verdict

runner = CliRunner(mix_stderr=False) if "mix_stderr" in CliRunner.__init__.__code__.co_varnames else CliRunner()
MESSAGE = (b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: =?utf-8?q?R=C3=A9sum=C3=A9?=\r\n"
           b"Message-ID: <42@example.org>\r\n\r\nHello\r\n")
VERDICT = Verdict.build([Finding("Eicar-Test-Signature", "eicar", "2/eicar.com")], [])


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def kept(mailguard_home):
    """One message in the quarantine of the test's MAILGUARD_HOME; its id."""
    quarantine = Quarantine(mailguard_home / "quarantine")
    return quarantine.add(MESSAGE, VERDICT, "imap 127.0.0.1:1143 -> imap.example.org:993, UID 7",
                          now=dt.datetime(2025, 4, 1, 10, 0, tzinfo=dt.timezone.utc))


def test_list_empty(mailguard_home):
    result = run("quarantine", "list")
    assert result.exit_code == 0 and result.stdout == ""
    assert "is empty" in result.stderr
    data = json.loads(run("quarantine", "list", "--json").stdout)
    assert data == {"quarantine": str(mailguard_home / "quarantine"), "entries": []}


def test_list_for_scripts_is_tab_separated(kept):
    result = run("quarantine", "list")
    assert result.exit_code == 0
    assert result.stdout == (f"{kept}\t2025-04-01 10:00:00\tinfected\tEicar-Test-Signature\t"
                             "Alice <alice@example.org>\tRésumé\n")


def test_list_json(kept):
    (entry,) = json.loads(run("quarantine", "list", "--json").stdout)["entries"]
    assert {k: entry[k] for k in ("id", "created", "verdict", "subject", "source")} == {
        "id": kept, "created": "2025-04-01T10:00:00Z", "verdict": "infected", "subject": "Résumé",
        "source": "imap 127.0.0.1:1143 -> imap.example.org:993, UID 7"}
    assert entry["detections"] == [{"name": "Eicar-Test-Signature", "detector": "eicar", "part": "2/eicar.com"}]


def test_show(kept):
    result = run("quarantine", "show", kept)
    assert result.exit_code == 0
    assert f"ID:         {kept}" in result.stdout
    assert "Detection:  Eicar-Test-Signature in 2/eicar.com [eicar]" in result.stdout
    assert "Subject: Résumé" in result.stdout and "Message-ID: <42@example.org>" in result.stdout
    data = json.loads(run("quarantine", "show", kept, "--json").stdout)
    assert data["id"] == kept and ["To", "bob@example.net"] in data["headers"]


def test_restore_default_to_the_current_folder(kept, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("quarantine", "restore", kept)
    assert result.exit_code == 0
    assert (tmp_path / f"{kept}.eml").read_bytes() == MESSAGE
    assert result.stdout.strip().endswith(f"{kept}.eml")
    again = run("quarantine", "restore", kept)
    assert again.exit_code == 2 and "exists already" in again.stderr


def test_restore_to_a_file_and_to_stdout(kept, tmp_path):
    assert run("quarantine", "restore", kept, "--to", str(tmp_path / "x.eml")).exit_code == 0
    assert (tmp_path / "x.eml").read_bytes() == MESSAGE
    result = runner.invoke(app, ["quarantine", "restore", kept, "--to", "-"], catch_exceptions=False)
    assert result.stdout_bytes == MESSAGE


def test_delete(kept):
    result = run("quarantine", "delete", kept)
    assert result.exit_code == 0 and kept in result.stderr
    assert json.loads(run("quarantine", "list", "--json").stdout)["entries"] == []


@pytest.mark.parametrize("command", [["show"], ["restore"], ["delete"]])
def test_unknown_id_is_exit_2_with_a_clear_message(kept, command):
    result = run("quarantine", *command, "20990101-0123456789ab")
    assert result.exit_code == 2
    assert "no quarantined message with id '20990101-0123456789ab'" in result.stderr


def test_delete_checks_every_id_before_deleting_any(kept):
    result = run("quarantine", "delete", kept, "20990101-0123456789ab")
    assert result.exit_code == 2
    assert len(json.loads(run("quarantine", "list", "--json").stdout)["entries"]) == 1


def test_configured_quarantine_path(tmp_path, mailguard_home):
    folder = tmp_path / "elsewhere"
    assert run("config", "set", "tools.quarantine.path", str(folder)).exit_code == 0
    entry_id = Quarantine(folder).add(MESSAGE, VERDICT, "test")
    (entry,) = json.loads(run("quarantine", "list", "--json").stdout)["entries"]
    assert entry["id"] == entry_id
