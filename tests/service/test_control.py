"""The control socket: JSON lines, 0600, peer credentials, and the blocking client."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailguard.errors import ServiceError
from mailguard.service.control import (
    MAX_REQUEST_BYTES,
    ControlServer,
    ServiceNotRunningError,
    request,
)
from mailguard.settings import Paths


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    return Paths(config_file=tmp_path / "config.toml", state_dir=state)


class LoopThread:
    """An event loop in a thread, so the blocking client can be tested from the test's thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@pytest.fixture
def served(paths: Paths) -> Iterator[tuple[ControlServer, list[str]]]:
    """A control server whose handler records the commands it was given."""
    seen: list[str] = []

    async def handler(command: str) -> dict:
        seen.append(command)
        if command == "reload":
            raise ServiceError("the settings file is broken")
        return {"command": command, "pid": os.getpid()}

    loop = LoopThread()
    server = ControlServer(paths.control_socket, handler)
    loop.run(server.start())
    try:
        yield server, seen
    finally:
        loop.run(server.stop())
        loop.close()


def test_socket_is_created_0600(served, paths: Paths) -> None:
    mode = paths.control_socket.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


def test_request_returns_the_handlers_result(served, paths: Paths) -> None:
    _, seen = served
    assert request(paths, "status") == {"command": "status", "pid": os.getpid()}
    assert request(paths, "stop")["command"] == "stop"
    assert seen == ["status", "stop"]


def test_engine_errors_reach_the_client_as_engine_errors(served, paths: Paths) -> None:
    with pytest.raises(ServiceError, match="the settings file is broken"):
        request(paths, "reload")


def test_unknown_command_is_refused_without_calling_the_handler(served, paths: Paths) -> None:
    _, seen = served
    with pytest.raises(ServiceError, match="unknown command 'explode'"):
        request(paths, "explode")
    assert seen == []


def _raw_exchange(path: Path, payload: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        if payload:  # even an empty send fails with EPIPE once a refusing engine has hung up
            sock.sendall(payload)
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def _answer_without_asking(path: Path) -> dict:
    return _raw_exchange(path, b"")  # connect, send nothing, read what the engine says


def test_garbage_and_oversized_requests_get_an_error_answer(served, paths: Paths) -> None:
    _, seen = served
    assert _raw_exchange(paths.control_socket, b"not json\n")["ok"] is False
    assert _raw_exchange(paths.control_socket, b'["status"]\n')["ok"] is False
    huge = b'{"command": "' + b"x" * (MAX_REQUEST_BYTES * 2) + b'"}\n'
    answer = _raw_exchange(paths.control_socket, huge)
    assert answer == {"ok": False, "error": "request too long or too slow"}
    assert seen == []


def test_no_engine_means_engine_not_running(paths: Paths) -> None:
    with pytest.raises(ServiceNotRunningError):
        request(paths, "status")


def test_a_stale_socket_file_is_not_a_running_engine_and_is_replaced(paths: Paths) -> None:
    # A socket left by an engine that was killed: nothing listens on it.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(paths.control_socket))
    stale.close()
    with pytest.raises(ServiceNotRunningError):
        request(paths, "status")

    async def handler(command: str) -> dict:
        return {"fresh": True}

    loop = LoopThread()
    server = ControlServer(paths.control_socket, handler)
    try:
        loop.run(server.start())
        assert request(paths, "status") == {"fresh": True}
        loop.run(server.stop())
        assert not paths.control_socket.exists()
    finally:
        loop.close()


def test_a_regular_file_in_the_sockets_place_is_not_removed(paths: Paths) -> None:
    paths.control_socket.write_text("precious")

    async def handler(command: str) -> dict:
        return {}

    loop = LoopThread()
    try:
        with pytest.raises(ServiceError, match="is not a socket"):
            loop.run(ControlServer(paths.control_socket, handler).start())
    finally:
        loop.close()
    assert paths.control_socket.read_text() == "precious"


def test_a_socket_path_too_long_for_sun_path_is_refused_clearly(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    paths = Paths(config_file=tmp_path / "c.toml", state_dir=deep)
    with pytest.raises(ServiceError, match="too long for a unix socket"):
        request(paths, "status")


@pytest.mark.root
def test_other_users_are_refused_even_if_the_socket_mode_is_loosened(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    import tempfile

    seen: list[str] = []

    async def handler(command: str) -> dict:
        seen.append(command)
        return {"secret": True}

    # pytest's own temp root is 0700, so this test's socket lives in a world-traversable folder,
    # and its mode is loosened: only the SO_PEERCRED check is left to refuse the other user.
    state = Path(tempfile.mkdtemp(prefix="mg-peercred-"))
    loop = LoopThread()
    try:
        os.chmod(state, 0o755)
        paths = Paths(config_file=state / "config.toml", state_dir=state)
        server = ControlServer(paths.control_socket, handler)
        loop.run(server.start())
        os.chmod(paths.control_socket, 0o666)
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - child process
            try:
                os.close(read_end)
                os.setgid(65534)
                os.setuid(65534)
                # Read before writing: a refused peer is answered and dropped at once, so a
                # request written after that would fail with EPIPE instead of showing the answer.
                answer = _answer_without_asking(paths.control_socket)
            except BaseException as exc:
                answer = {"child failed": repr(exc)}
            os.write(write_end, json.dumps(answer).encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            answer = json.loads(pipe.read() or b"{}")
        os.waitpid(child, 0)
        loop.run(server.stop())
    finally:
        loop.close()
        import shutil

        shutil.rmtree(state, ignore_errors=True)
    assert answer == {"ok": False, "error": "permission denied"}
    assert seen == []
