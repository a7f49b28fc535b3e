"""`mailguard config`, `ports`, `enable`/`disable` through Typer's runner and the real console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailguard.cli.app import app

EC = "web-and-email.email-client."
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def config_file(home: Path) -> dict:
    path = home / "config.toml"
    return tomllib.loads(path.read_text()) if path.exists() else {}


def test_version():
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("mailguard 0.")


def test_get_default_and_json():
    result = run("config", "get", EC + "protocols.imaps.ports")
    assert (result.exit_code, result.stdout) == (0, "585, 993\n")
    result = run("config", "get", EC + "threatsense.limits.max-object-size", "--json")
    data = json.loads(result.stdout)
    assert data["value"] == 100 * 1024**2 and data["origin"] == "default"


def test_set_get_unset(mailguard_home):
    assert run("config", "set", EC + "response.action", "replace").exit_code == 0
    assert run("config", "get", EC + "response.action").stdout == "replace\n"
    assert config_file(mailguard_home) == {"web-and-email": {"email-client": {"response": {"action": "replace"}}}}
    assert run("config", "unset", EC + "response.action").exit_code == 0
    assert run("config", "get", EC + "response.action").stdout == "clean\n"
    assert config_file(mailguard_home) == {}


def test_set_list_takes_repeated_or_comma_values():
    assert run("config", "set", "detection-engine.signatures.paths", "/a.ndb", "/b.hdb").exit_code == 0
    assert run("config", "get", "detection-engine.signatures.paths").stdout == "/a.ndb, /b.hdb\n"
    assert run("config", "set", "detection-engine.signatures.paths", "/c.ndb, /d.hdb").exit_code == 0
    assert run("config", "get", "detection-engine.signatures.paths").stdout == "/c.ndb, /d.hdb\n"


def test_scalar_refuses_several_values(mailguard_home):
    result = run("config", "set", EC + "response.action", "none", "clean")
    assert result.exit_code == 2 and "takes one value" in result.stderr
    assert not (mailguard_home / "config.toml").exists()


def test_unknown_key_suggests_nearest():
    result = run("config", "get", "web-and-email.ssl-tls.enable")
    assert result.exit_code == 2
    assert "did you mean web-and-email.ssl-tls.enabled" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("key,value,says", [
    ("web-and-email.ssl-tls.enabled", "perhaps", "true/false"),
    (EC + "protocols.pop3.ports", "70000", "1–65535"),
    (EC + "threatsense.limits.archive-nesting-level", "1000", "between 0 and 100"),
    (EC + "response.action", "delete", "none, clean, replace"),
    (EC + "threatsense.limits.max-object-size", "lots", "512KB"),
])
def test_bad_values_are_refused_with_what_is_allowed(key, value, says, mailguard_home):
    result = run("config", "set", key, value)
    assert result.exit_code == 2
    assert says in result.stderr and key in result.stderr
    assert not (mailguard_home / "config.toml").exists()


def test_list_and_changed_and_prefix():
    run("config", "set", "tools.log-files.level", "debug")
    everything = run("config", "list").stdout.splitlines()
    from mailguard.settings import REGISTRY

    assert len(everything) == len(REGISTRY)
    # Default and origin on every line, changed or not (the output here is not a terminal).
    assert "tools.log-files.format = text    (default: text; origin: default)" in everything
    assert ("web-and-email.protocol-filtering.limits.max-sessions = 1000    (default: 1000; origin: default)"
            in everything)
    changed = run("config", "list", "--changed").stdout.splitlines()
    assert changed == ["tools.log-files.level = debug    (default: info; origin: file)"]
    tls = json.loads(run("config", "list", "web-and-email.ssl-tls.", "--json").stdout)
    assert {e["key"] for e in tls} == {
        "web-and-email.ssl-tls.enabled", "web-and-email.ssl-tls.block-obsolete",
        "web-and-email.ssl-tls.certificate-validity.unverifiable",
        "web-and-email.ssl-tls.certificate-validity.corrupted", "web-and-email.ssl-tls.excluded-domains",
        "web-and-email.ssl-tls.trusted-ca-file", "web-and-email.ssl-tls.root-certificate.name-constraints"}
    assert all(set(e) >= {"key", "value", "default", "origin"} for e in tls)


def test_check_valid_and_invalid(mailguard_home):
    assert run("config", "check").exit_code == 0
    mailguard_home.mkdir(parents=True, exist_ok=True)
    (mailguard_home / "config.toml").write_text('[tools.log-files]\nlevel = "loud"\nformat = "xml"\n')
    result = run("config", "check", "--json")
    assert result.exit_code == 2
    report = json.loads(result.stdout)
    assert report["valid"] is False and len(report["problems"]) == 2
    assert all(":2:" in p or ":3:" in p for p in report["problems"])


def test_bad_file_is_never_rewritten(mailguard_home):
    mailguard_home.mkdir(parents=True, exist_ok=True)
    path = mailguard_home / "config.toml"
    path.write_text("this is = not [toml\n")
    result = run("config", "set", EC + "response.action", "none")
    assert result.exit_code == 2 and "not valid TOML" in result.stderr and str(path) in result.stderr
    assert path.read_text() == "this is = not [toml\n"


def test_config_flag_before_or_after_the_command(tmp_path):
    other = tmp_path / "other.toml"
    assert run("--config", str(other), "config", "set", EC + "response.action", "none").exit_code == 0
    assert run("config", "get", EC + "response.action", "--config", str(other)).stdout == "none\n"
    assert run("config", "get", EC + "response.action").stdout == "clean\n"
    assert run("config", "path", "--config", str(other)).stdout == f"{other}\n"


def test_ports_add_well_known_just_works():
    result = run("ports", "add", "993")
    assert result.exit_code == 0
    assert json.loads(run("ports", "list", "--json").stdout)["imaps"] == [585, 993]


def test_ports_add_unknown_needs_protocol():
    result = run("ports", "add", "2993")
    assert result.exit_code == 2
    assert "--protocol" in result.stderr
    for name in ("imap", "imaps", "pop3", "pop3s"):
        assert name in result.stderr
    assert run("ports", "add", "2993", "--protocol", "imaps").exit_code == 0
    assert json.loads(run("ports", "list", "--json").stdout)["imaps"] == [585, 993, 2993]


def test_port_in_another_list_is_refused():
    result = run("ports", "add", "995", "--protocol", "imaps")
    assert result.exit_code == 2 and "port 995 is in both" in result.stderr


def test_ports_remove_finds_the_list():
    assert run("ports", "remove", "585").exit_code == 0
    assert json.loads(run("ports", "list", "--json").stdout)["imaps"] == [993]
    result = run("ports", "remove", "585")
    assert result.exit_code == 2 and "not in any port list" in result.stderr


def test_ports_out_of_range_is_usage_error():
    assert run("ports", "add", "70000").exit_code == 2


def test_enable_disable():
    assert run("disable").exit_code == 0
    assert run("config", "get", EC + "protocols.enabled").stdout == "false\n"
    assert run("enable").exit_code == 0
    assert run("config", "get", EC + "protocols.enabled").stdout == "true\n"


def _console_script() -> str:
    script = Path(sys.executable).with_name("mailguard")
    if not script.exists():
        pytest.skip("the mailguard console script is not installed in this environment")
    return str(script)


def test_installed_console_script(tmp_path):
    env = {**os.environ, "MAILGUARD_HOME": str(tmp_path / "h")}
    script = _console_script()
    done = subprocess.run([script, "ports", "add", "1995", "--protocol", "pop3s"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([script, "ports", "list", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert json.loads(done.stdout)["pop3s"] == [995, 1995]
    assert (tmp_path / "h" / "config.toml").exists()
    done = subprocess.run([sys.executable, "-m", "mailguard", "config", "get", "nope"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == "" and "unknown key" in done.stderr


def test_set_makes_relative_paths_absolute_from_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run("config", "set", "detection-engine.yara.rules", "rules/a.yar", "/etc/b.yar").exit_code == 0
    assert run("config", "get", "detection-engine.yara.rules").stdout == f"{tmp_path}/rules/a.yar, /etc/b.yar\n"


def test_check_json_answers_even_for_an_unreadable_file(mailguard_home):
    mailguard_home.mkdir(parents=True, exist_ok=True)
    (mailguard_home / "config.toml").mkdir()  # a folder where the file should be: reading fails
    result = run("config", "check", "--json")
    assert result.exit_code == 2
    report = json.loads(result.stdout)
    assert report["valid"] is False and "cannot read settings file" in report["problems"][0]


def test_unknown_prefix_is_an_error_with_or_without_changed():
    assert run("config", "list", "zzz").exit_code == 2
    assert run("config", "list", "zzz", "--changed").exit_code == 2
