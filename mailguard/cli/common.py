"""Options and helpers shared by the command modules."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

if TYPE_CHECKING:
    from mailguard.settings import Paths, Settings

ConfigOption = Annotated[
    Optional[Path],
    typer.Option("--config", metavar="FILE", help="Settings file to use (default: see 'mailguard config path').",
                 show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print plain JSON on stdout.")]


# The --config given before the command name; the root callback sets it on every run.
root_config: Path | None = None


def config_override(config: Path | None) -> Path | None:
    """The command's own --config, else the one given before the command name."""
    return config if config is not None else root_config


def resolve(config: Path | None) -> "Paths":
    from mailguard.settings import resolve_paths

    return resolve_paths(config_override(config))


def open_settings(config: Path | None) -> tuple["Paths", "Settings"]:
    """Paths and validated settings for a command; a bad file raises SettingsError (exit 2)."""
    from mailguard.settings import load_settings

    paths = resolve(config)
    return paths, load_settings(paths.config_file)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def note(message: str) -> None:
    """A diagnostic for people: stderr, never mixed into data on stdout."""
    sys.stderr.write(message + "\n")


def tell_running_engine(paths: "Paths") -> bool:
    """Ask a running engine to re-read its settings; False when none runs.

    Settings changes are saved first and are the truth; telling the engine is a courtesy, so a
    failure here is reported but not fatal.
    """
    if not paths.control_socket.exists():
        return False
    try:
        from mailguard.service import control
    except ImportError:
        return False
    try:
        control.request(paths, "reload")
    except Exception as exc:  # noqa: BLE001 - any failure to reach it means "not running"
        note(f"mailguard: saved, but the running engine could not be told: {exc}")
        return False
    return True
