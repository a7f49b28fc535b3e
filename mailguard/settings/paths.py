"""Where the settings file and the state folder live (docs/settings.md#where-settings-and-state-live).

Precedence for the settings file: ``--config FILE``, then ``MAILGUARD_CONFIG``, then
``MAILGUARD_HOME/config.toml``, then ``/etc/mailguard/config.toml`` for root, then
``$XDG_CONFIG_HOME/mailguard/config.toml``. The state folder: ``MAILGUARD_HOME``, then
``/var/lib/mailguard`` for root, then ``$XDG_STATE_HOME/mailguard``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailguard.settings.store import Settings


@dataclass(frozen=True)
class Paths:
    config_file: Path
    state_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "mailguard.pid"

    @property
    def control_socket(self) -> Path:
        return self.state_dir / "control.sock"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "mailguard.log"

    def quarantine_dir(self, settings: "Settings") -> Path:
        configured = settings.get("tools.quarantine.path")
        return Path(configured).expanduser() if configured else self.state_dir / "quarantine"


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _xdg(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable)
    # The XDG spec says relative paths are invalid and must be ignored.
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / fallback


def resolve_paths(config: str | os.PathLike[str] | None = None) -> Paths:
    home = os.environ.get("MAILGUARD_HOME")
    if home:
        # Absolute, because the detached engine runs from "/" and must find the same files.
        state_dir = Path(os.path.abspath(Path(home).expanduser()))
        default_config = state_dir / "config.toml"
    elif _is_root():
        state_dir = Path("/var/lib/mailguard")
        default_config = Path("/etc/mailguard/config.toml")
    else:
        state_dir = _xdg("XDG_STATE_HOME", ".local/state") / "mailguard"
        default_config = _xdg("XDG_CONFIG_HOME", ".config") / "mailguard" / "config.toml"

    chosen = config or os.environ.get("MAILGUARD_CONFIG") or default_config
    return Paths(config_file=Path(os.path.abspath(Path(chosen).expanduser())), state_dir=state_dir)
