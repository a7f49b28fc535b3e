"""The engine's lifecycle: detaching, readiness, signals, reload, logging to its file, stopping.

These tests run the real daemon code (double fork, pid lock, control socket, signals) around a
small stand-in for the FilterServer, so they hold whatever the proxy core does; the end-to-end
runs with the real FilterServer are in tests/cli/test_engine.py. The pid lock and the logging
setup on their own are in test_pidlock.py and test_logsetup.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailguard.errors import ServiceError
from mailguard.processes import process_alive
from mailguard.service import control
from mailguard.service.daemon import run_foreground, start_detached, stop_running
from mailguard.service.pidlock import running_pid
from mailguard.settings import Paths, Settings, save_settings

PROTECTION = "web-and-email.email-client.protocols.enabled"


class StandInServer:
    """Listens on 127.0.0.1 and greets with +OK, like a relay would; reports its settings."""

    fail_start: str | None = None

    def __init__(self, settings: Settings, paths: Paths) -> None:
        self.settings = settings
        self.reloads = 0
        self.stopped_with_grace: float | None = None
        self._server: asyncio.base_events.Server | None = None
        self.connections = 0

    async def start(self) -> None:
        if self.fail_start:
            raise ServiceError(self.fail_start)
        self._server = await asyncio.start_server(self._greet, "127.0.0.1", 0)

    async def _greet(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(b"+OK stand-in\r\n")
        await writer.drain()
        writer.close()

    async def reload(self, settings: Settings) -> None:
        self.settings = settings
        self.reloads += 1

    async def stop(self, grace: float) -> None:
        self.stopped_with_grace = grace
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def snapshot(self) -> dict[str, Any]:
        port = self._server.sockets[0].getsockname()[1] if self._server else None
        return {
            "listeners": [f"127.0.0.1:{port}"],
            "counters": {"connections": self.connections, "reloads": self.reloads},
            "log_level": self.settings.get("tools.log-files.level"),
        }


class FailingServer(StandInServer):
    fail_start = "cannot listen on 127.0.0.1:1: permission denied"


def process_gone(pid: int) -> bool:
    return not process_alive(pid)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.fixture
def paths(mailguard_home: Path) -> Paths:
    return Paths(config_file=mailguard_home / "config.toml", state_dir=mailguard_home)


@pytest.fixture
def daemon(paths: Paths) -> Iterator[Callable[..., int]]:
    """Start detached engines; whatever is still running at the end is stopped and checked gone."""
    started: list[int] = []

    def start(factory: Any = StandInServer, settings: Settings | None = None) -> int:
        pid = start_detached(paths, settings or Settings.defaults(), server_factory=factory)
        started.append(pid)
        return pid

    try:
        yield start
    finally:
        for pid in started:
            if not process_gone(pid):
                os.kill(pid, signal.SIGKILL)
                wait_for(lambda: process_gone(pid))


# --- detached engine ----------------------------------------------------------------------------


def test_start_detached_runs_a_daemon_that_answers_and_stops(paths: Paths, daemon) -> None:
    pid = daemon()
    assert pid != os.getpid()
    assert running_pid(paths) == pid
    # Not our child and not a session leader with a terminal: a proper daemon.
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ppid, session = int(fields[1]), int(fields[3])
    assert ppid != os.getpid()
    assert session != os.getsid(0)
    assert session != pid  # the second fork: not a session leader, cannot regain a terminal
    assert os.readlink(f"/proc/{pid}/fd/1") == "/dev/null"

    mode = paths.control_socket.stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    status = control.request(paths, "status")
    assert status["running"] is True
    assert status["pid"] == pid
    assert status["mode"] == "explicit"
    assert status["protection"] == "on"
    assert status["uptime"] >= 0
    assert status["transparent"]["installed"] is False and status["transparent"]["problem"] == ""
    # The stand-in's listener really listens.
    host, port = status["listeners"][0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        assert conn.recv(100) == b"+OK stand-in\r\n"

    assert stop_running(paths) == pid
    wait_for(lambda: process_gone(pid))
    assert running_pid(paths) is None
    assert not paths.pid_file.exists()
    assert not paths.control_socket.exists()
    assert "engine stopped" in paths.log_file.read_text()


def test_starting_twice_is_refused(paths: Paths, daemon) -> None:
    pid = daemon()
    with pytest.raises(ServiceError, match=f"already running \\(pid {pid}\\)"):
        daemon()
    assert running_pid(paths) == pid
    stop_running(paths)


def test_start_over_a_stale_pid_file_works(paths: Paths, daemon) -> None:
    paths.state_dir.mkdir()
    paths.pid_file.write_text(f"{os.getppid()}\n")
    pid = daemon()
    assert paths.pid_file.read_text() == f"{pid}\n"
    stop_running(paths)


def test_a_failed_start_reports_why_and_leaves_nothing(paths: Paths, daemon) -> None:
    with pytest.raises(ServiceError, match="cannot listen on 127.0.0.1:1: permission denied"):
        daemon(FailingServer)
    assert running_pid(paths) is None
    assert not paths.control_socket.exists()


def test_stop_with_nothing_running_returns_none(paths: Paths) -> None:
    assert stop_running(paths) is None


def test_sigterm_stops_gracefully(paths: Paths, daemon) -> None:
    pid = daemon()
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: process_gone(pid))
    assert running_pid(paths) is None
    assert "SIGTERM received, stopping" in paths.log_file.read_text()


def test_sighup_reloads_a_changed_setting(paths: Paths, daemon) -> None:
    pid = daemon(settings=Settings.defaults())
    assert control.request(paths, "status")["protection"] == "on"
    save_settings(Settings.from_values({PROTECTION: False, "tools.log-files.level": "debug"}), paths.config_file)
    os.kill(pid, signal.SIGHUP)
    wait_for(lambda: control.request(paths, "status")["counters"]["reloads"] == 1)
    status = control.request(paths, "status")
    assert status["protection"] == "off"
    assert status["log_level"] == "debug"
    stop_running(paths)


def test_reload_over_the_socket_refuses_a_broken_file_and_keeps_running(paths: Paths, daemon) -> None:
    daemon()
    paths.config_file.write_text("[web-and-email.email-client.protocols]\nenabled = 'maybe'\n")
    with pytest.raises(ServiceError, match="reload refused, the settings in force stay"):
        control.request(paths, "reload")
    status = control.request(paths, "status")
    assert status["protection"] == "on"
    assert status["counters"]["reloads"] == 0
    stop_running(paths)


def test_json_log_format_writes_one_object_per_line(paths: Paths, daemon) -> None:
    pid = daemon(settings=Settings.from_values({"tools.log-files.format": "json"}))
    stop_running(paths)
    # stop_running returns once the pid lock is released; "engine stopped" is logged just after.
    wait_for(lambda: process_gone(pid))
    lines = paths.log_file.read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    assert entries[0]["level"] == "info"
    assert any(e["message"] == "engine stopped" for e in entries)


# --- foreground ---------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_foreground_logs_to_stderr_and_stops_on_signal(paths: Paths, signum: int) -> None:
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - child process
        code = 0
        try:
            os.close(read_end)
            os.dup2(write_end, 2)
            sys.stderr = open(2, "w", buffering=1, closefd=False)  # pytest replaced sys.stderr
            run_foreground(paths, Settings.defaults(), server_factory=StandInServer)
        except BaseException:
            code = 1
        os._exit(code)
    os.close(write_end)
    try:
        wait_for(lambda: running_pid(paths) == child)
        wait_for(paths.control_socket.exists)
        os.kill(child, signum)
        _, status = os.waitpid(child, 0)
    finally:
        if not process_gone(child):
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
    with os.fdopen(read_end, "rb") as pipe:
        stderr = pipe.read().decode()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0  # not killed by the signal
    assert "engine started" in stderr and "engine stopped" in stderr
    assert not paths.log_file.exists()
    assert running_pid(paths) is None
