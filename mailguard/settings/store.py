"""Settings values, and the TOML file that holds the ones that differ from the defaults.

Reading uses ``tomllib``; writing uses ``tomli-w`` and is atomic (``mailguard.files``) under an exclusive ``flock`` on a lock file
beside the settings file, so two ``config set`` runs at the same moment both survive.
A file that does not validate is never rewritten: every later ``set`` refuses until
the user fixes it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mailguard.errors import SettingsError, StorageError
from mailguard.settings.schema import PROTOCOLS, REGISTRY, lookup, port_list_key, unknown_key_message


class Settings:
    """Effective values: the defaults, overlaid with validated overrides."""

    def __init__(self, overrides: Mapping[str, Any] | None = None, source: Path | None = None) -> None:
        self._overrides = dict(overrides or {})
        self.source = source

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def defaults(cls) -> "Settings":
        return cls()

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "Settings":
        """Parse and validate ``values`` (command-line strings or typed values); raise SettingsError."""
        overrides, problems = {}, []
        for key, value in values.items():
            try:
                overrides[key] = lookup(key).parse(value)
            except KeyError as exc:
                problems.append(exc.args[0])
            except ValueError as exc:
                problems.append(f"{key}: {value!r}: {exc}")
        settings = cls(overrides)
        problems += settings.cross_check()
        if problems:
            raise SettingsError(problems[0], problems)
        return settings

    # -- reading ----------------------------------------------------------------------------------
    def get(self, key: str) -> Any:
        if key in self._overrides:
            return self._overrides[key]
        return lookup(key).default

    def values(self) -> dict[str, Any]:
        return {key: self.get(key) for key in REGISTRY}

    def origin(self, key: str) -> str:
        return "file" if key in self._overrides else "default"

    @property
    def overrides(self) -> dict[str, Any]:
        return dict(self._overrides)

    # -- changing (returns new objects: a Settings never changes under its reader) -----------------
    def with_value(self, key: str, value: Any) -> "Settings":
        setting = lookup(key)
        try:
            parsed = setting.parse(value)
        except ValueError as exc:
            raise SettingsError(f"{key}: {_show(value)}: {exc}") from None
        overrides = dict(self._overrides)
        if parsed == setting.default:
            overrides.pop(key, None)  # only values that differ from the defaults are stored
        else:
            overrides[key] = parsed
        changed = Settings(overrides, self.source)
        problems = changed.cross_check()
        if problems:
            raise SettingsError(problems[0], problems)
        return changed

    def without(self, key: str) -> "Settings":
        lookup(key)
        overrides = dict(self._overrides)
        overrides.pop(key, None)
        return Settings(overrides, self.source)

    # -- rules that span keys ---------------------------------------------------------------------
    def cross_check(self) -> list[str]:
        problems = []
        owner: dict[int, str] = {}
        for protocol in PROTOCOLS:
            for port in self.get(port_list_key(protocol)):
                if port in owner:
                    problems.append(
                        f"port {port} is in both the {owner[port]} and the {protocol} port lists; "
                        "a port may belong to one protocol only"
                    )
                owner[port] = protocol
        return problems


def _show(value: Any) -> str:
    return repr(value) if not isinstance(value, list) else repr(", ".join(map(str, value)))


# -- the file -------------------------------------------------------------------------------------
def load_settings(path: Path) -> Settings:
    """Read and validate the settings file; a missing file means all defaults."""
    import tomllib

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Settings(source=path)
    except OSError as exc:
        raise StorageError(f"cannot read settings file {path}: {exc.strerror}") from None
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SettingsError(f"{path}: not UTF-8 text; fix or remove the file") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}; fix or remove the file") from None

    lines = _key_lines(raw.decode("utf-8"))
    overrides, problems = {}, []
    for key, value in _flatten(document):
        where = f"{path}:{lines[key]}" if key in lines else str(path)
        if key not in REGISTRY:
            problems.append(f"{where}: {unknown_key_message(key)}")
            continue
        try:
            overrides[key] = REGISTRY[key].parse(value)
        except ValueError as exc:
            problems.append(f"{where}: {key} = {_show(value)}: {exc}")
            continue
        if hasattr(REGISTRY[key].type, "absolute"):  # a relative path in the file: from the file's folder
            overrides[key] = REGISTRY[key].type.absolute(overrides[key], str(path.parent))
    settings = Settings(overrides, source=path)
    problems += [f"{path}: {p}" for p in settings.cross_check()]
    if problems:
        raise SettingsError(problems[0], problems)
    return settings


def _flatten(table: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, value in table.items():
        key = f"{prefix}{name}"
        # A table is a branch of the tree unless the key itself is a setting (none holds a table).
        if isinstance(value, dict) and key not in REGISTRY:
            yield from _flatten(value, key + ".")
        else:
            yield key, value


def _key_lines(text: str) -> dict[str, int]:
    """Line number of each dotted key, so errors can say where (tomllib does not tell)."""
    import re

    lines: dict[str, int] = {}
    table = ""
    bare = r'(?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\')'
    dotted = rf"{bare}(?:\s*\.\s*{bare})*"
    for number, line in enumerate(text.splitlines(), 1):
        if m := re.match(rf"\s*\[\s*({dotted})\s*\]", line):
            table = _join(m[1]) + "."
        elif m := re.match(rf"\s*({dotted})\s*=", line):
            lines.setdefault(table + _join(m[1]), number)
    return lines


def _join(dotted: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in dotted.split("."))


def _nest(overrides: Mapping[str, Any]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key in sorted(overrides):
        *branches, leaf = key.split(".")
        node = document
        for branch in branches:
            node = node.setdefault(branch, {})
        node[leaf] = REGISTRY[key].type.to_toml(overrides[key])
    return document


def save_settings(settings: Settings, path: Path) -> None:
    """Write the non-default values atomically; the old file stays whole if anything fails."""
    import tomli_w

    text = "# mailguard settings: only values that differ from the defaults.\n"
    text += "# Edit with 'mailguard config set KEY VALUE'; see 'mailguard config list'.\n\n"
    text += tomli_w.dumps(_nest(settings.overrides))
    from mailguard.files import PUBLIC_FILE_MODE, write_atomic

    # A settings file that is a symlink (dotfiles repositories) is written through, and a file
    # the user made private stays private.
    target = Path(os.path.realpath(path))
    try:
        mode = target.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = PUBLIC_FILE_MODE
    write_atomic(target, text.encode("utf-8"), mode)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl

    lock_path = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StorageError(
            f"cannot write settings in {path.parent}: {exc.strerror or exc}; nothing was changed"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def update_settings(path: Path, change: Callable[[Settings], Settings]) -> Settings:
    """Read-modify-write under the file lock; returns the settings as saved."""
    with _locked(Path(os.path.realpath(path))):
        current = load_settings(path)
        changed = change(current)
        save_settings(changed, path)
        return changed
