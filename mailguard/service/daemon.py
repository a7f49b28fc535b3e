"""Running the filtering engine: in the foreground (systemd) or detached, and stopping it again.

Pieces, in the order a start goes through them:

- ``start_detached``: the classic double fork (fork, setsid, fork) so the engine has no terminal
  and is not a session leader; stdin/stdout/stderr go to /dev/null and logs to STATE/mailguard.log.
  The parent waits on a pipe until the engine reports that it listens (or why it could not), so
  ``mailguard start`` succeeds only for an engine that is really up.
- ``Service``: the running engine: the pid lock (pidlock.py), the FilterServer, transparent-mode
  rules when asked for, the control socket, and the signals: SIGTERM and SIGINT stop gracefully,
  SIGHUP re-reads settings (and reconfigures logging, logsetup.py).
- ``stop_running``: the CLI side of ``mailguard stop``: asks over the control socket (SIGTERM if
  the socket does not answer) and waits until the lock is released.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from mailguard.errors import ServiceError, MailguardError
from mailguard.processes import process_alive
from mailguard.service.logsetup import configure_logging
from mailguard.service.pidlock import PidLock, running_pid

if TYPE_CHECKING:
    from mailguard.settings import Paths, Settings

log = logging.getLogger("mailguard.engine")

# Messages in flight get this long to finish on stop before connections are closed (the server
# keeps its copy of anything not delivered: POP3 deletes only on QUIT, RFC 1939 §6).
STOP_GRACE_SECONDS = 10.0
# How long ``mailguard stop`` waits for the engine to be gone: the grace period plus slack.
STOP_WAIT_SECONDS = STOP_GRACE_SECONDS + 10.0
# How long ``mailguard start`` waits for the detached engine to report that it listens.
START_WAIT_SECONDS = 60.0
# The readiness message on the start pipe ("ready PID" or "error MESSAGE") is one short line.
MAX_READY_MESSAGE_BYTES = 64 * 1024

_FILTERING = "web-and-email.protocol-filtering."
_PROTECTION = "web-and-email.email-client.protocols.enabled"


class FilterServerLike(Protocol):
    async def start(self) -> None: ...
    async def reload(self, settings: Settings) -> None: ...
    async def stop(self, grace: float) -> None: ...
    def snapshot(self) -> dict[str, Any]: ...


ServerFactory = Callable[["Settings", "Paths"], FilterServerLike]


def ensure_state_dir(paths: Paths) -> None:
    try:
        paths.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ServiceError(f"cannot create the state folder {paths.state_dir}: {exc.strerror}") from exc


# --- the running engine -------------------------------------------------------------------------


def _default_server_factory(settings: Settings, paths: Paths) -> FilterServerLike:
    from mailguard.proxy.server import FilterServer

    return FilterServer(settings, paths)


class Service:
    """The FilterServer plus what makes it a service: pid lock, control socket, signals, rules."""

    def __init__(
        self,
        paths: Paths,
        settings: Settings,
        *,
        foreground: bool,
        server_factory: ServerFactory = _default_server_factory,
    ) -> None:
        self.paths = paths
        self.settings = settings
        self.foreground = foreground
        self._server_factory = server_factory
        self._server: FilterServerLike | None = None
        self._stopping: Any = None  # asyncio.Event, made inside the loop
        self._started_at = time.time()
        self._started_monotonic = time.monotonic()
        self._rules_installed = False
        self._blocked: dict[str, str] = {}

    async def run(self, ready: Callable[[], None]) -> None:
        """Start everything, call ``ready()``, serve until asked to stop, and clean up."""
        import asyncio

        from mailguard.service.control import ControlServer

        self._stopping = asyncio.Event()
        ensure_state_dir(self.paths)
        lock = PidLock(self.paths)
        lock.acquire()
        control = ControlServer(self.paths.control_socket, self.handle_command)
        try:
            # Stop signals are caught before anything can be seen from outside (the control
            # socket), so a SIGTERM/SIGINT sent as soon as the engine looks started always stops
            # it cleanly; one that comes during start-up stops it once started.
            self._install_stop_signal_handlers()
            server = self._server_factory(self.settings, self.paths)
            await server.start()
            self._server = server  # only a started server is stopped below
            await self._apply_transparent_rules()
            await control.start()
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_reload_signal)
            log.info("engine started (pid %d, mode %s)", os.getpid(), self._mode())
            ready()
            await self._stopping.wait()
        finally:
            self._remove_signal_handlers()
            await control.stop()
            await self._remove_transparent_rules()
            if self._server is not None:
                await self._server.stop(grace=STOP_GRACE_SECONDS)
            # Logged while the pid lock is still held: `mailguard stop` returns once the lock is
            # free, and by then the log must be complete.
            log.info("engine stopped")
            lock.release()

    def request_stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    async def handle_command(self, command: str) -> dict[str, Any]:
        if command == "status":
            return await self.status()
        if command == "reload":
            await self.reload()
            return await self.status()
        if command == "stop":
            log.info("stop requested over the control socket")
            self.request_stop()
            return {"stopping": True, "pid": os.getpid()}
        raise ServiceError(f"unknown command {command!r}")

    async def status(self) -> dict[str, Any]:
        snapshot = self._server.snapshot() if self._server is not None else {}
        status: dict[str, Any] = dict(snapshot)
        status.update(
            running=True,
            pid=os.getpid(),
            started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self._started_at)),
            uptime=round(time.monotonic() - self._started_monotonic, 3),
            mode=self._mode(),
            config_file=str(self.paths.config_file),
        )
        status.setdefault("protection", self._protection())
        status["transparent"] = await self._transparent_status()
        return status

    async def reload(self) -> None:
        """Re-read the settings file; a bad file leaves the running settings in force."""
        from mailguard.settings import load_settings

        try:
            settings = load_settings(self.paths.config_file)
            if settings.get(_FILTERING + "mode") == "transparent":
                from mailguard.transparent.plan import TransparentPlan

                TransparentPlan.from_settings(settings)  # a role or listen address that cannot work
            if settings.get("web-and-email.email-client.response.quarantine"):
                from mailguard.quarantine import Quarantine

                Quarantine(self.paths.quarantine_dir(settings)).prepare()  # one another user could change
        except MailguardError as exc:
            log.error("reload refused, the settings in force stay: %s", exc)
            raise ServiceError(f"reload refused, the settings in force stay: {exc}") from exc
        was_transparent = self._mode() == "transparent"
        self.settings = settings
        configure_logging(settings, None if self.foreground else self.paths.log_file)
        if self._server is not None:
            await self._server.reload(settings)
        if self._mode() == "transparent":
            await self._apply_transparent_rules()
        elif was_transparent:
            await self._remove_transparent_rules()
        log.info("settings reloaded from %s (protection %s)", self.paths.config_file, self._protection())

    def _mode(self) -> str:
        return str(self.settings.get(_FILTERING + "mode"))

    def _protection(self) -> str:
        on = self.settings.get(_FILTERING + "enabled") and self.settings.get(_PROTECTION)
        return "on" if on else "off"

    # Transparent mode: nft runs as a subprocess, so it goes to a thread to keep the loop free.

    async def _apply_transparent_rules(self) -> None:
        import asyncio

        if self._mode() != "transparent":
            return
        from mailguard.transparent import netfilter

        # A family the server could not listen in gets its mail ports blocked, not left open.
        unlistened = dict(getattr(self._server, "unlistened", {}))
        _, self._blocked = await asyncio.to_thread(netfilter.install, self.settings, unlistened)
        self._rules_installed = True
        for family, why in self._blocked.items():
            log.warning("transparent mode: %s mail ports are blocked: %s", family, why)

    async def _remove_transparent_rules(self) -> None:
        import asyncio

        if not self._rules_installed:
            return
        from mailguard.transparent import netfilter

        try:
            await asyncio.to_thread(netfilter.remove)
            self._rules_installed = False
        except MailguardError as exc:
            log.error("could not remove the transparent-mode rules: %s", exc)

    async def _transparent_status(self) -> dict[str, Any]:
        """Read back from the kernel, not from memory (transparent/status.py)."""
        import asyncio

        from mailguard.transparent.plan import ROLE_KEY
        from mailguard.transparent.status import read_ruleset, transparent_section

        snapshot = self._server.snapshot() if self._server is not None else {}
        listening = {"ipv6" if str(item.get("listen")).startswith("[") else "ipv4"
                     for item in snapshot.get("listeners", [])
                     if isinstance(item, dict) and item.get("kind") == "transparent"}
        transparent = self._mode() == "transparent"
        ruleset, error = await asyncio.to_thread(read_ruleset, transparent)
        return transparent_section(
            mode=self._mode(), role=self.settings.get(ROLE_KEY) if transparent else None, running=True,
            listening=listening, blocked=self._blocked if transparent else {}, ruleset=ruleset, error=error)

    # Signals

    def _install_stop_signal_handlers(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self._on_stop_signal, "SIGINT")

    def _remove_signal_handlers(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)

    def _on_stop_signal(self, name: str) -> None:
        log.info("%s received, stopping", name)
        self.request_stop()

    def _on_reload_signal(self) -> None:
        import asyncio

        log.info("SIGHUP received, reloading settings")
        task = asyncio.get_running_loop().create_task(self.reload(), name="mailguard-reload")
        task.add_done_callback(_log_reload_failure)


def _log_reload_failure(task: Any) -> None:
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        if not isinstance(exc, MailguardError):  # MailguardErrors were logged by reload itself
            log.error("reload failed", exc_info=exc)


def run_foreground(paths: Paths, settings: Settings, server_factory: ServerFactory | None = None) -> None:
    """``mailguard start --foreground``: serve until SIGTERM/SIGINT, logging to stderr."""
    import asyncio

    configure_logging(settings, None)
    service = Service(paths, settings, foreground=True, **_factory_kwargs(server_factory))
    asyncio.run(service.run(ready=lambda: None))


def _factory_kwargs(server_factory: ServerFactory | None) -> dict[str, Any]:
    return {} if server_factory is None else {"server_factory": server_factory}


# --- detaching ----------------------------------------------------------------------------------


def start_detached(paths: Paths, settings: Settings, server_factory: ServerFactory | None = None) -> int:
    """Start the engine as a daemon and return its pid once it listens.

    Raises ServiceError if an engine already runs or the new one failed to come up (with its
    reason, which it sends back over a pipe before the parent returns).
    """
    pid = running_pid(paths)
    if pid is not None:
        raise ServiceError(f"the engine is already running (pid {pid})")
    ensure_state_dir(paths)
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked process; the tests observe its effects
        os.close(read_end)
        _daemon_child(paths, settings, write_end, server_factory)
    os.close(write_end)
    try:
        os.waitpid(child, 0)  # the first child exits as soon as it has forked the daemon
        message = _read_ready_message(read_end, START_WAIT_SECONDS)
    finally:
        os.close(read_end)
    kind, _, detail = message.partition(" ")
    if kind == "ready":
        return int(detail)
    if kind == "error":
        raise ServiceError(detail)
    raise ServiceError(f"the engine did not come up (see {paths.log_file})")


def _daemon_child(
    paths: Paths, settings: Settings, ready_fd: int, server_factory: ServerFactory | None
) -> None:  # pragma: no cover - forked
    """The first child: new session, fork the daemon, exit. Never returns."""
    code = 1
    try:
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        _redirect_standard_streams()
        os.chdir("/")
        os.umask(0o077)  # state files (log, quarantine) are private
        code = _serve_detached(paths, settings, ready_fd, server_factory)
    except BaseException as exc:  # the parent must hear why, whatever it was
        _send_ready(ready_fd, f"error {exc}")
    finally:
        os._exit(code)


def _serve_detached(
    paths: Paths, settings: Settings, ready_fd: int, server_factory: ServerFactory | None
) -> int:  # pragma: no cover - forked
    import asyncio

    configure_logging(settings, paths.log_file)
    service = Service(paths, settings, foreground=False, **_factory_kwargs(server_factory))
    announced = False

    def ready() -> None:
        nonlocal announced
        _send_ready(ready_fd, f"ready {os.getpid()}")
        announced = True

    try:
        asyncio.run(service.run(ready=ready))
    except MailguardError as exc:
        log.error("%s", exc)
        if not announced:
            _send_ready(ready_fd, f"error {exc}")
        return 2
    except BaseException as exc:
        log.exception("the engine failed")
        if not announced:
            _send_ready(ready_fd, f"error the engine failed: {exc!r} (see {paths.log_file})")
        return 1
    return 0


def _redirect_standard_streams() -> None:  # pragma: no cover - forked
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _send_ready(fd: int, message: str) -> None:
    try:
        os.write(fd, message.encode("utf-8", "replace")[:MAX_READY_MESSAGE_BYTES] + b"\n")
        os.close(fd)
    except OSError:
        pass  # the parent gave up waiting; the log has the story


def _read_ready_message(fd: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data and len(data) < MAX_READY_MESSAGE_BYTES:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ServiceError(f"the engine did not report ready within {timeout:g}s")
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break  # the daemon exited without a word
        data += chunk
    return data.split(b"\n", 1)[0].decode("utf-8", "replace")


# --- stopping from the CLI ----------------------------------------------------------------------


def stop_running(paths: Paths, wait: float = STOP_WAIT_SECONDS) -> int | None:
    """Stop the running engine gracefully and wait until it is gone.

    Returns the pid that was stopped, or None when no engine was running.
    """
    from mailguard.service.control import ServiceNotRunningError, request

    pid = running_pid(paths)
    if pid is None:
        return None
    try:
        request(paths, "stop", timeout=5.0)
    except (ServiceNotRunningError, ServiceError):
        # The socket is gone or wedged but the lock is held: fall back to the signal.
        if pid > 0:
            _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    # The lock is freed first, then the process winds down: "stopped" means both are done.
    while running_pid(paths) is not None or (pid > 0 and process_alive(pid)):
        if time.monotonic() > deadline:
            raise ServiceError(f"the engine (pid {pid}) did not stop within {wait:g}s")
        time.sleep(0.05)
    return pid


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise ServiceError(f"not allowed to signal the engine (pid {pid}): {exc.strerror}") from exc
