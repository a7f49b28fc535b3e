"""Logging per tools.log-files.level/format.

The JSON-lines format as the detached engine writes it to STATE/mailguard.log is in test_daemon.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mailguard.service.logsetup import configure_logging
from mailguard.settings import Settings


def test_log_level_filters(tmp_path: Path) -> None:
    log_file = tmp_path / "level.log"
    configure_logging(Settings.from_values({"tools.log-files.level": "warning"}), log_file)
    try:
        logging.getLogger("mailguard.test").info("quiet")
        logging.getLogger("mailguard.test").warning("loud")
    finally:
        configure_logging(Settings.defaults(), None)
    text = log_file.read_text()
    assert "loud" in text and "quiet" not in text
