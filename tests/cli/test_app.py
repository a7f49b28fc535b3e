"""The root command: exit code 1 is kept for "threats found", whatever else goes wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from mailguard.cli import config as config_commands
from mailguard.cli.app import app

MAILGUARD = str(Path(sys.executable).with_name("mailguard"))


def test_a_bug_exits_2_with_its_traceback(monkeypatch):
    def broken(_config):
        raise RuntimeError("boom")

    monkeypatch.setattr(config_commands, "open_settings", broken)
    result = CliRunner().invoke(app, ["config", "get", "tools.log-files.level"])
    assert result.exit_code == 2
    assert "RuntimeError: boom" in result.stderr and "internal error" in result.stderr


def test_a_closed_pipe_exits_2_not_1(tmp_path):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written (as after `| head -1`)
    try:
        done = subprocess.run([MAILGUARD, "config", "list", "--json"], stdout=write_end, stderr=subprocess.PIPE,
                              env={**os.environ, "MAILGUARD_HOME": str(tmp_path)}, timeout=60)
    finally:
        os.close(write_end)
    assert done.returncode == 2, done.stderr
    assert b"Traceback" not in done.stderr
