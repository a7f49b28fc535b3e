"""The settings tree (schema), its TOML store and where files live."""

from mailguard.settings.paths import Paths, resolve_paths
from mailguard.settings.schema import REGISTRY, Setting, lookup
from mailguard.settings.store import Settings, load_settings, save_settings, update_settings

__all__ = [
    "REGISTRY", "Paths", "Setting", "Settings", "load_settings", "lookup", "resolve_paths",
    "save_settings", "update_settings",
]
