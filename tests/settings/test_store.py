"""The TOML store: validation with file and line, atomic writes, locking, paths."""

from __future__ import annotations

import multiprocessing
import os
import tomllib
from pathlib import Path

import pytest

from mailguard.errors import SettingsError, StorageError
from mailguard.settings import Settings, load_settings, resolve_paths, save_settings, update_settings

EC = "web-and-email.email-client."


def test_missing_file_means_defaults(tmp_path):
    settings = load_settings(tmp_path / "absent.toml")
    assert settings.overrides == {}
    assert settings.get(EC + "protocols.imaps.ports") == [585, 993]


def test_round_trip_writes_only_non_defaults(tmp_path):
    path = tmp_path / "config.toml"
    settings = (Settings.defaults()
                .with_value(EC + "response.action", "replace")
                .with_value(EC + "threatsense.limits.max-object-size", "512KB")
                .with_value(EC + "protocols.pop3.enabled", "true"))  # the default: not stored
    save_settings(settings, path)
    document = tomllib.loads(path.read_text())
    assert document == {"web-and-email": {"email-client": {
        "response": {"action": "replace"},
        "threatsense": {"limits": {"max-object-size": "512KB"}},
    }}}
    assert load_settings(path).values() == settings.values()


def test_setting_back_to_default_removes_the_key(tmp_path):
    path = tmp_path / "config.toml"
    update_settings(path, lambda s: s.with_value(EC + "response.action", "none"))
    update_settings(path, lambda s: s.with_value(EC + "response.action", "clean"))
    assert tomllib.loads(path.read_text()) == {}


def test_invalid_toml_names_file_and_line_and_is_left_untouched(tmp_path):
    path = tmp_path / "config.toml"
    original = b'[web-and-email.ssl-tls]\nenabled = true\nblock-obsolete = = no\n'
    path.write_bytes(original)
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    assert str(path) in str(info.value) and "line 3" in str(info.value)
    with pytest.raises(SettingsError):
        update_settings(path, lambda s: s.with_value(EC + "response.action", "none"))
    assert path.read_bytes() == original


def test_unknown_key_names_file_line_key_and_suggestion(tmp_path):
    path = tmp_path / "config.toml"
    original = b'# mine\n\n[web-and-email.email-client.protocols.imaps]\nenabled = true\nport = [993]\n'
    path.write_bytes(original)
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    message = str(info.value)
    assert f"{path}:5" in message
    assert "web-and-email.email-client.protocols.imaps.port" in message
    assert "did you mean web-and-email.email-client.protocols.imaps.ports" in message
    with pytest.raises(SettingsError):
        update_settings(path, lambda s: s.with_value(EC + "response.action", "none"))
    assert path.read_bytes() == original


def test_dotted_keys_in_file_are_located(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('tools.log-files.level = "loud"\n')
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    assert f"{path}:1" in str(info.value) and "debug, info, warning, error" in str(info.value)


def test_every_problem_is_listed(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[tools.log-files]\nlevel = "loud"\nformat = "xml"\n'
                    '[web-and-email.email-client.protocols.pop3]\nports = [993]\n')
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    problems = info.value.problems
    assert len(problems) == 3
    assert any("993" in p and "one protocol only" in p for p in problems)


def test_wrong_type_in_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[web-and-email.ssl-tls]\nenabled = "perhaps"\n')
    with pytest.raises(SettingsError, match="true/false"):
        load_settings(path)


def test_port_in_two_lists_is_refused():
    with pytest.raises(SettingsError, match="port 995 is in both"):
        Settings.defaults().with_value(EC + "protocols.imaps.ports", "993, 995")


def test_from_values_validates():
    settings = Settings.from_values({EC + "response.action": "replace"})
    assert settings.get(EC + "response.action") == "replace"
    with pytest.raises(SettingsError):
        Settings.from_values({EC + "response.action": "explode"})


def _update_as_unprivileged(path: str, results) -> None:
    if os.geteuid() == 0:  # root ignores folder permissions: act as an ordinary user would
        os.setgid(65534)
        os.setuid(65534)
    try:
        update_settings(Path(path), lambda s: s.with_value(EC + "response.action", "none"))
        results.put("saved")
    except StorageError as exc:
        results.put(f"StorageError: {exc}")


def test_unwritable_folder_is_a_clear_error_and_nothing_is_half_written(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "config.toml"
    path.write_text('[tools.log-files]\nlevel = "debug"\n')
    tmp_path.chmod(0o755)
    folder.chmod(0o555)
    path.chmod(0o644)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    try:
        child = context.Process(target=_update_as_unprivileged, args=(str(path), results))
        child.start()
        child.join(30)
        outcome = results.get(timeout=5)
        assert outcome.startswith("StorageError:") and "nothing was changed" in outcome
        assert path.read_text() == '[tools.log-files]\nlevel = "debug"\n'
        assert sorted(p.name for p in folder.iterdir()) == ["config.toml"]
    finally:
        folder.chmod(0o700)


def test_failed_write_leaves_old_file_whole(tmp_path, monkeypatch):
    """Even as root (where permissions do not stop us), a failing write changes nothing."""
    path = tmp_path / "config.toml"
    path.write_text('[tools.log-files]\nlevel = "debug"\n')

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(StorageError, match="No space left on device"):
        update_settings(path, lambda s: s.with_value(EC + "response.action", "none"))
    assert path.read_text() == '[tools.log-files]\nlevel = "debug"\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml", "config.toml.lock"]


def _set_many(path: str, key: str, values: list[str], start) -> None:
    start.wait()
    for value in values:
        update_settings(Path(path), lambda s, v=value: s.with_value(key, v))


def test_concurrent_sets_on_different_keys_both_survive(tmp_path):
    path = tmp_path / "config.toml"
    context = multiprocessing.get_context("fork")
    start = context.Event()
    writers = [
        context.Process(target=_set_many, args=(str(path), EC + "response.action", ["none", "replace"] * 15, start)),
        context.Process(target=_set_many, args=(str(path), "tools.log-files.level", ["debug", "error"] * 15, start)),
    ]
    for writer in writers:
        writer.start()
    start.set()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    settings = load_settings(path)
    assert settings.get(EC + "response.action") == "replace"
    assert settings.get("tools.log-files.level") == "error"


def test_paths_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("MAILGUARD_HOME")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    paths = resolve_paths()
    assert paths.config_file == tmp_path / "xdg-config/mailguard/config.toml"
    assert paths.state_dir == tmp_path / "xdg-state/mailguard"

    monkeypatch.setenv("MAILGUARD_HOME", str(tmp_path / "home"))
    paths = resolve_paths()
    assert paths.config_file == tmp_path / "home/config.toml"
    assert paths.state_dir == tmp_path / "home"

    monkeypatch.setenv("MAILGUARD_CONFIG", str(tmp_path / "env.toml"))
    assert resolve_paths().config_file == tmp_path / "env.toml"
    assert resolve_paths(tmp_path / "flag.toml").config_file == tmp_path / "flag.toml"


def test_root_paths(monkeypatch):
    monkeypatch.delenv("MAILGUARD_HOME")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    paths = resolve_paths()
    assert paths.config_file == Path("/etc/mailguard/config.toml")
    assert paths.state_dir == Path("/var/lib/mailguard")


def test_quarantine_dir_default_and_configured(tmp_path):
    paths = resolve_paths()
    assert paths.quarantine_dir(Settings.defaults()) == paths.state_dir / "quarantine"
    custom = Settings.defaults().with_value("tools.quarantine.path", str(tmp_path / "q"))
    assert paths.quarantine_dir(custom) == tmp_path / "q"


def test_a_symlinked_settings_file_is_written_through_and_keeps_its_mode(tmp_path):
    real = tmp_path / "dotfiles" / "mailguard.toml"
    real.parent.mkdir()
    real.write_text('[tools.log-files]\nlevel = "debug"\n')
    real.chmod(0o600)
    link = tmp_path / "config.toml"
    link.symlink_to(real)
    update_settings(link, lambda s: s.with_value(EC + "response.action", "none"))
    assert link.is_symlink()
    settings = load_settings(real)
    assert settings.get(EC + "response.action") == "none" and settings.get("tools.log-files.level") == "debug"
    assert real.stat().st_mode & 0o777 == 0o600


def test_relative_paths_in_the_file_are_taken_from_the_file_s_folder(tmp_path):
    path = tmp_path / "conf" / "config.toml"
    path.parent.mkdir()
    path.write_text('[detection-engine.signatures]\npaths = ["sigs/local.ndb", "/abs/x.hdb"]\n'
                    '[tools.quarantine]\npath = "q"\n')
    settings = load_settings(path)
    assert settings.get("detection-engine.signatures.paths") == [str(tmp_path / "conf/sigs/local.ndb"), "/abs/x.hdb"]
    assert settings.get("tools.quarantine.path") == str(tmp_path / "conf/q")


def test_paths_are_absolute_whatever_the_environment_says(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAILGUARD_HOME", "relative-home")
    paths = resolve_paths()
    assert paths.state_dir == tmp_path / "relative-home"
    assert resolve_paths("my.toml").config_file == tmp_path / "my.toml"
