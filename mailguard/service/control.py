"""The engine's control socket: JSON lines over a 0600 unix socket in the state folder.

One request per line, one answer per line::

    -> {"command": "status"}
    <- {"ok": true, "result": {...}}
    <- {"ok": false, "error": "why"}

Commands: ``status`` (the engine's snapshot), ``reload`` (re-read the settings file), ``stop``
(graceful stop; answered before the engine winds down). The socket is the way the CLI talks to a
running engine; signals (SIGHUP, SIGTERM) do the same for systemd and ``kill``.

Who may talk to it: the file is 0600 inside a 0700 state folder, and every connection is checked
once more with SO_PEERCRED (same uid as the engine, or root), so a mode change on the folder
cannot open the engine to other local users.

The server half is asyncio (imported lazily); the client half is plain blocking sockets so the CLI
does not pay for importing asyncio.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailguard.errors import ServiceError

if TYPE_CHECKING:
    import asyncio

    from mailguard.settings import Paths

COMMANDS = ("status", "reload", "stop")

# Requests are a few dozen bytes; anything longer is not ours. Answers carry a status snapshot
# (listeners, counters, the nftables ruleset), which stays well under this.
MAX_REQUEST_BYTES = 4 * 1024
MAX_RESPONSE_BYTES = 1024 * 1024
# A client that connects and says nothing is dropped after this long.
REQUEST_TIMEOUT_SECONDS = 5.0
# How long the CLI waits for an answer. A reload re-reads the settings and may rebuild listeners.
CLIENT_TIMEOUT_SECONDS = 30.0
# sun_path is 108 bytes on Linux including the NUL.
_MAX_SUN_PATH = 107

Handler = Callable[[str], Awaitable[dict[str, Any]]]


class ServiceNotRunningError(ServiceError):
    """No engine answers on the control socket."""


def _connectable_address(path: Path) -> str:
    """A unix socket address for ``path``, short enough for sun_path.

    Deep state folders (MAILGUARD_HOME under a long temp path) can exceed sun_path; reaching the
    socket through a short absolute alias is not possible portably, so we refuse clearly.
    """
    address = os.fsdecode(path)
    if len(os.fsencode(address)) > _MAX_SUN_PATH:
        raise ServiceError(
            f"the control socket path is too long for a unix socket ({len(address)} bytes, "
            f"at most {_MAX_SUN_PATH}): {address}; use a shorter MAILGUARD_HOME or state folder"
        )
    return address


# --- server -------------------------------------------------------------------------------------


class ControlServer:
    """Answers JSON-lines requests on the control socket by calling ``handler(command)``."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        import asyncio

        address = _connectable_address(self.path)
        self._remove_stale_socket()
        # Create the socket 0600 from the start: a chmod after bind would leave a window in which
        # another user could connect.
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=address, limit=MAX_REQUEST_BYTES
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def _remove_stale_socket(self) -> None:
        """A socket file left by an engine that died. The pid file lock has already told the
        caller that no engine runs, so nothing listens on it."""
        try:
            if self.path.is_socket():
                self.path.unlink()
            elif self.path.exists():
                raise ServiceError(f"{self.path} exists and is not a socket; remove it by hand")
        except FileNotFoundError:
            pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import asyncio

        try:
            sock = writer.get_extra_info("socket")
            if sock is None or not _peer_allowed(sock):
                await _write_answer(writer, {"ok": False, "error": "permission denied"})
                return
            try:
                line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT_SECONDS)
            except (asyncio.TimeoutError, asyncio.LimitOverrunError, ValueError):
                await _write_answer(writer, {"ok": False, "error": "request too long or too slow"})
                return
            await _write_answer(writer, await self._answer(line))
        except (ConnectionError, OSError):
            pass  # the client went away; nothing to tell it
        finally:
            writer.close()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            command = request["command"]
        except (ValueError, TypeError, KeyError):
            return {"ok": False, "error": 'expected one JSON object per line: {"command": "..."}'}
        if command not in COMMANDS:
            return {"ok": False, "error": f"unknown command {command!r}; known: {', '.join(COMMANDS)}"}
        try:
            return {"ok": True, "result": await self._handler(command)}
        except ServiceError as exc:
            return {"ok": False, "error": str(exc)}


async def _write_answer(writer: asyncio.StreamWriter, answer: dict[str, Any]) -> None:
    writer.write(json.dumps(answer).encode() + b"\n")
    await writer.drain()


def _peer_allowed(sock: socket.socket) -> bool:
    """SO_PEERCRED: the connecting process runs as the engine's uid, or as root."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid in (0, os.geteuid())


# --- client -------------------------------------------------------------------------------------


def request(paths: Paths, command: str, timeout: float = CLIENT_TIMEOUT_SECONDS) -> dict[str, Any]:
    """Send one command to the running engine (``paths.control_socket``) and return its ``result``.

    Raises ServiceNotRunningError when nothing listens, ServiceError when the engine refuses.
    """
    path = paths.control_socket
    address = _connectable_address(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ServiceNotRunningError(f"the engine is not running (no answer on {path})") from exc
        except PermissionError as exc:
            raise ServiceError(f"not allowed to talk to the engine on {path}: {exc.strerror}") from exc
        try:
            sock.sendall(json.dumps({"command": command}).encode() + b"\n")
            answer = _read_line(sock)
        except socket.timeout as exc:
            raise ServiceError(f"the engine did not answer {command!r} within {timeout:g}s") from exc
        except OSError as exc:
            raise ServiceError(f"talking to the engine on {path} failed: {exc}") from exc
    try:
        decoded = json.loads(answer)
    except ValueError as exc:
        raise ServiceError(f"the engine sent an answer that is not JSON: {answer[:80]!r}") from exc
    if not decoded.get("ok"):
        raise ServiceError(f"the engine refused {command!r}: {decoded.get('error', 'no reason given')}")
    result = decoded.get("result")
    return result if isinstance(result, dict) else {}


def _read_line(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(64 * 1024)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if chunk.endswith(b"\n"):
            break
        if size > MAX_RESPONSE_BYTES:
            raise ServiceError(f"the engine's answer exceeds {MAX_RESPONSE_BYTES} bytes")
    return b"".join(chunks)
