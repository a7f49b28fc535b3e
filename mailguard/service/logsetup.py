"""The engine's logging, per ``tools.log-files.level`` and ``tools.log-files.format``.

Text lines or JSON lines, to STATE/mailguard.log (detached engine) or to stderr (foreground, where
systemd's journal picks them up). ``configure_logging`` runs again on every reload, so a changed
level or format applies without a restart.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailguard.settings import Settings


class JsonLineFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(settings: Settings, log_file: Path | None) -> None:
    """Log per tools.log-files.level/format, to ``log_file`` or (None) to stderr.

    Called again on reload, so a changed level or format applies at once.
    """
    from logging.handlers import WatchedFileHandler

    root = logging.getLogger("mailguard")
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    # WatchedFileHandler reopens the file when logrotate moves it away.
    handler: logging.Handler = (
        WatchedFileHandler(log_file, encoding="utf-8") if log_file else logging.StreamHandler(sys.stderr)
    )
    if settings.get("tools.log-files.format") == "json":
        handler.setFormatter(JsonLineFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(settings.get("tools.log-files.level").upper())
    root.propagate = False
