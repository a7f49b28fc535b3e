"""``mailguard start/stop/restart/reload/status`` through the real console script.

The engine runs detached with MAILGUARD_HOME in the test's folder, in front of the demo POP3
server; every test stops what it started and checks that nothing is left running.
"""

from __future__ import annotations

import json
import os
import poplib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailguard.cli.app import app
from mailguard.demo.mailbox import EICAR
from mailguard.demo.server import DemoServer
from mailguard.processes import process_alive
from mailguard.settings import Paths, Settings, load_settings, save_settings
from tests.peers import free_port

MAILGUARD = str(Path(sys.executable).with_name("mailguard"))
ROUTES = "web-and-email.protocol-filtering.routes"
PROTECTION = "web-and-email.email-client.protocols.enabled"


def mailguard(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([MAILGUARD, *args], capture_output=True, text=True, timeout=timeout)


def process_gone(pid: int) -> bool:
    return not process_alive(pid)


@pytest.fixture
def paths(mailguard_home: Path) -> Paths:
    return Paths(config_file=mailguard_home / "config.toml", state_dir=mailguard_home)




@pytest.fixture
def engine(paths: Paths, demo_server: DemoServer) -> Iterator[dict]:
    """Settings with a POP3 route to the demo server; the engine is killed if a test left it."""
    listen = f"127.0.0.1:{free_port()}"
    save_settings(Settings.from_values({ROUTES: [f"{listen}=127.0.0.1:{demo_server.pop3_port}"]}), paths.config_file)
    info = {"listen": listen}
    try:
        yield info
    finally:
        mailguard("stop")
        if paths.pid_file.exists():
            pid = int(paths.pid_file.read_text() or 0)
            if pid and not process_gone(pid):
                os.kill(pid, signal.SIGKILL)


def status() -> dict:
    result = mailguard("status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def fetch_all(listen: str) -> list[bytes]:
    host, port = listen.rsplit(":", 1)
    client = poplib.POP3(host, int(port), timeout=30)
    try:
        client.user("demo")
        client.pass_("demo")
        count, _ = client.stat()
        return [b"\r\n".join(client.retr(n)[1]) + b"\r\n" for n in range(1, count + 1)]
    finally:
        client.quit()


# --- without an engine --------------------------------------------------------------------------


def test_status_when_not_running(paths: Paths) -> None:
    result = mailguard("status", "--json")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["running"] is False and report["pid"] is None and report["state"] == "stopped"
    assert report["protection"] == "on"
    assert set(report) >= {"running", "pid", "uptime", "listeners", "protection", "counters", "transparent"}
    text = mailguard("status")
    assert text.returncode == 0 and text.stdout.startswith("mailguard is not running")


def test_stop_when_not_running_is_a_noted_success(paths: Paths) -> None:
    result = mailguard("stop")
    assert (result.returncode, result.stdout) == (0, "")
    assert "not running" in result.stderr


def test_reload_when_not_running_is_an_error(paths: Paths) -> None:
    result = mailguard("reload")
    assert result.returncode == 2
    assert "not running" in result.stderr


def test_start_with_a_broken_settings_file_fails_and_starts_nothing(paths: Paths) -> None:
    paths.state_dir.mkdir(parents=True)
    paths.config_file.write_text("[web-and-email.protocol-filtering]\nmode = 'sideways'\n")
    result = mailguard("start")
    assert result.returncode == 2
    assert "mode" in result.stderr
    assert not paths.pid_file.exists()


def test_transparent_mode_without_root_is_refused_clearly(paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailguard.transparent import netfilter

    monkeypatch.setattr(netfilter, "has_net_admin", lambda: False)
    save_settings(Settings.from_values({"web-and-email.protocol-filtering.mode": "transparent"}), paths.config_file)
    result = CliRunner().invoke(app, ["start"])
    assert result.exit_code == 2
    assert "transparent mode needs root" in result.output
    assert not paths.pid_file.exists()


@pytest.mark.parametrize(("values", "said"), [
    ({"transparent.listen": "192.0.2.7:8143"}, "use 127.0.0.1:8143 (desktop) or 0.0.0.0:8143 (every address)"),
    ({"transparent.role": "gateway"}, "needs web-and-email.protocol-filtering.transparent.listen on every address"),
])
def test_transparent_settings_that_cannot_work_are_refused_at_start(paths: Paths, values: dict, said: str) -> None:
    pf = "web-and-email.protocol-filtering."
    save_settings(Settings.from_values({pf + "mode": "transparent", **{pf + k: v for k, v in values.items()}}),
                  paths.config_file)
    result = CliRunner().invoke(app, ["start"])
    assert result.exit_code == 2
    assert said in " ".join(result.output.split())
    assert not paths.pid_file.exists()


@pytest.mark.parametrize("mode", ["explicit", "transparent"])
def test_status_without_root_does_not_guess_the_kernels_rules(paths: Paths, monkeypatch: pytest.MonkeyPatch,
                                                               mode: str) -> None:
    from mailguard.transparent import netfilter

    monkeypatch.setattr(netfilter, "has_net_admin", lambda: False)
    save_settings(Settings.from_values({"web-and-email.protocol-filtering.mode": mode}), paths.config_file)
    result = CliRunner().invoke(app, ["status", "--json"])
    assert result.exit_code == 0
    section = json.loads(result.stdout)["transparent"]
    if mode == "transparent":  # unknown, and said why, rather than "not installed"
        assert section["installed"] is None and "needs root" in section["error"]
    else:  # explicit mode: only a leftover table would matter, and none can be ours without root
        assert section["installed"] is False and "error" not in section


# --- with the engine ----------------------------------------------------------------------------


def test_start_status_twice_stop(paths: Paths, engine: dict) -> None:
    started = mailguard("start")
    assert started.returncode == 0, started.stderr
    report = status()
    pid = report["pid"]
    assert report["running"] is True and report["protection"] == "on" and report["mode"] == "explicit"
    assert report["uptime"] >= 0
    assert set(report["counters"]) >= {"connections", "messages_scanned", "infected", "unscanned", "bytes", "errors"}
    assert engine["listen"] in json.dumps(report["listeners"])
    assert oct(paths.control_socket.stat().st_mode & 0o777) == "0o600"

    again = mailguard("start")
    assert again.returncode == 2
    assert f"already running (pid {pid})" in again.stderr

    text = mailguard("status")
    assert f"mailguard is running (pid {pid}" in text.stdout

    stopped = mailguard("stop")
    assert stopped.returncode == 0 and f"pid {pid}" in stopped.stderr
    assert process_gone(pid)
    assert not paths.pid_file.exists() and not paths.control_socket.exists()
    assert status()["running"] is False


def test_start_over_a_stale_pid_file(paths: Paths, engine: dict) -> None:
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    paths.pid_file.write_text(f"{os.getpid()}\n")  # a live process that does not hold the lock
    started = mailguard("start")
    assert started.returncode == 0, started.stderr
    pid = status()["pid"]
    assert pid != os.getpid()
    assert mailguard("stop").returncode == 0
    assert process_gone(pid)


def test_mail_is_scanned_and_disable_enable_act_at_once(paths: Paths, engine: dict) -> None:
    assert mailguard("start").returncode == 0
    messages = fetch_all(engine["listen"])
    infected = [m for m in messages if b"X-MailGuard-Result: infected" in m]
    assert len(infected) >= 1
    assert not any(EICAR in m for m in messages)

    disabled = mailguard("disable")
    assert disabled.returncode == 0 and "applied to the running engine" in disabled.stderr
    assert status()["protection"] == "off"
    relayed = fetch_all(engine["listen"])
    assert any(EICAR in m for m in relayed)  # relayed unscanned, as asked
    assert not any(b"X-MailGuard-Result" in m for m in relayed)

    assert mailguard("enable").returncode == 0
    assert status()["protection"] == "on"
    assert not any(EICAR in m for m in fetch_all(engine["listen"]))
    assert mailguard("stop").returncode == 0


def test_sighup_and_reload_apply_a_changed_setting(paths: Paths, engine: dict) -> None:
    assert mailguard("start").returncode == 0
    pid = status()["pid"]
    save_settings(load_settings(paths.config_file).with_value(PROTECTION, False), paths.config_file)
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while status()["protection"] != "off":
        assert time.monotonic() < deadline, "SIGHUP did not apply the setting"
        time.sleep(0.05)
    assert mailguard("config", "set", PROTECTION, "true").returncode == 0
    reloaded = mailguard("reload")
    assert reloaded.returncode == 0, reloaded.stderr
    assert status()["protection"] == "on"
    assert status()["pid"] == pid  # a reload is not a restart


def test_restart_gives_a_new_engine(paths: Paths, engine: dict) -> None:
    assert mailguard("start").returncode == 0
    first = status()["pid"]
    restarted = mailguard("restart")
    assert restarted.returncode == 0, restarted.stderr
    second = status()["pid"]
    assert second != first and process_gone(first)
    assert mailguard("stop").returncode == 0
    assert process_gone(second)


@pytest.mark.root
@pytest.mark.peer
def test_stop_removes_rules_left_by_a_killed_transparent_engine(paths: Paths) -> None:
    import uuid

    from tests import peers

    peers.require_root()
    peers.require("nft")
    peers.require("ip")
    ns = f"mgt-stop-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        save_settings(Settings.from_values({"web-and-email.protocol-filtering.mode": "transparent"}), paths.config_file)
        install = (
            "from mailguard.transparent import netfilter; from mailguard.settings import Settings; "
            "netfilter.install(Settings.defaults())"
        )
        subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", install], check=True)
        listed = ["ip", "netns", "exec", ns, "nft", "list", "table", "inet", "mailguard"]
        assert subprocess.run(listed, capture_output=True).returncode == 0
        stopped = subprocess.run(["ip", "netns", "exec", ns, MAILGUARD, "stop"], capture_output=True, text=True)
        assert stopped.returncode == 0
        assert "removed the transparent-mode rules" in stopped.stderr
        assert subprocess.run(listed, capture_output=True).returncode != 0
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_foreground_logs_to_stderr_and_stops_on_sigterm(paths: Paths, engine: dict) -> None:
    save_settings(load_settings(paths.config_file).with_value("tools.log-files.format", "json"), paths.config_file)
    process = subprocess.Popen([MAILGUARD, "start", "--foreground"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while status()["state"] != "running":
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert status()["pid"] == process.pid
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert stdout == b""  # stdout is for data; the engine has none
    messages = [json.loads(line)["message"] for line in stderr.decode().splitlines() if line.startswith("{")]
    assert any(m.startswith("engine started") for m in messages) and "engine stopped" in messages
    assert not paths.log_file.exists()


def test_start_says_when_clamd_is_not_found_and_status_and_log_say_it_too(paths: Paths, engine: dict) -> None:
    absent = f"unix:{paths.state_dir / 'no-clamd.sock'}"
    settings = load_settings(paths.config_file)
    save_settings(Settings.from_values({**{ROUTES: settings.get(ROUTES)},
                                        "detection-engine.clamd.address": absent}), paths.config_file)
    started = mailguard("start")
    assert started.returncode == 0, started.stderr
    assert f"clamd not found (looked at {absent}): scanning without it" in started.stderr
    assert "warning: only the built-in EICAR test signature" in started.stderr
    detection = status()["detection"]
    assert detection["clamd"]["state"] == "not found" and detection["generation"]
    assert "clamd: not found" in mailguard("status").stdout
    assert mailguard("stop").returncode == 0
    log = paths.log_file.read_text()
    assert f"clamd not found (looked at {absent})" in log and "only the built-in EICAR" in log
