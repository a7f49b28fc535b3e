"""A throwaway clamd for the real-peer tests: its own config, socket and database in a tmp folder.

The machine may have no network, so no freshclam: the database is built here, either as plain
``.ndb`` lines or as an unsigned ``daily.cud`` made with ``sigtool --build --unsigned``, which
clamd loads like freshclam's ``daily.cvd`` and whose version and date ``VERSION`` reports.

No waiting by sleeping: the test binds the unix socket itself and hands it to clamd the way
systemd's socket activation does (``LISTEN_FDS``, fd 3; Debian's clamd is built for it). A
connection waits in the socket's backlog until clamd, once its database is loaded, accepts it;
``start`` returns only once clamd has answered PING, so the engine's short probe time-out
(clamd.PROBE_TIMEOUT) never meets a clamd still loading, however loaded the machine. Stopping
clamd leaves the socket file in place with nobody listening (connections are refused), and
``start`` again binds it anew: a clamd restarted under a running engine.

clamd runs in the foreground as our child and is told to end with us (PR_SET_PDEATHSIG), so a
test run that is killed leaves no clamd behind.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.peers import require

#: how long clamd may take to load its database and answer (a safety net, not a pace)
READY_TIMEOUT = 120.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Clamd:
    """One clamd on ``folder/clamd.sock`` (and, with ``tcp``, on a loopback port: ``tcp_address``);
    ``start``, ``stop``; a context manager that stops it. ``settings``: more clamd.conf lines."""

    def __init__(self, folder: Path, *, tcp: bool = False, settings: str = "") -> None:
        self.program = require("clamd")
        self.folder = folder
        self.database = folder / "db"
        self.database.mkdir(parents=True, exist_ok=True)
        self.socket_path = folder / "clamd.sock"
        self.address = f"unix:{self.socket_path}"
        self.config = folder / "clamd.conf"
        self.config.write_text(
            f"LocalSocket {self.socket_path}\nDatabaseDirectory {self.database}\nForeground yes\n"
            f"LogFile {folder / 'clamd.log'}\nLogTime yes\nSelfCheck 3600\n{settings}")
        self._process: subprocess.Popen[bytes] | None = None
        self.tcp_port = 0
        #: the TCP socket, bound here and held until the first start hands it to clamd: no
        #: moment when the port is free for another program to take (a later start binds it again)
        self._tcp_listener: socket.socket | None = None
        if tcp:
            self._tcp_listener = socket.socket()
            self._tcp_listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._tcp_listener.bind(("127.0.0.1", 0))
            self.tcp_port = self._tcp_listener.getsockname()[1]
            with self.config.open("a") as config:
                config.write(f"TCPSocket {self.tcp_port}\nTCPAddr 127.0.0.1\n")
        self.tcp_address = f"tcp:127.0.0.1:{self.tcp_port}"

    def write_ndb(self, signatures: dict[str, bytes], name: str = "mailguard-test.ndb") -> None:
        """Body signatures NAME -> bytes, matched anywhere in any file."""
        (self.database / name).write_text("".join(f"{n}:0:*:{data.hex()}\n" for n, data in signatures.items()))

    def write_database(self, name: str, text: str) -> None:
        """Any database clamd reads from its folder, by file name (``local.hdb``: MD5:size:Name)."""
        (self.database / name).write_text(text)

    def write_daily(self, signatures: dict[str, bytes], version: int) -> None:
        """An unsigned daily database (``daily.cud``) of version ``version``, built now by sigtool."""
        sigtool = require("sigtool")
        build = self.folder / "build"
        shutil.rmtree(build, ignore_errors=True)
        build.mkdir()
        (build / "daily.ndb").write_text("".join(f"{n}:0:*:{data.hex()}\n" for n, data in signatures.items()))
        (build / "COPYING").write_text("Test signatures for mailguard's tests.\n")  # sigtool wants one
        done = subprocess.run([sigtool, "--build=daily.cud", "--unsigned", f"--cvd-version={version}",
                               "--datadir=."], cwd=build, input=b"mailguard-tests\n",
                              capture_output=True, timeout=120)
        if not (build / "daily.cud").exists():
            raise RuntimeError(f"sigtool could not build daily.cud: {done.stdout[-2000:]!r} {done.stderr[-2000:]!r}")
        for old in self.database.glob("daily.*"):
            old.unlink()
        os.replace(build / "daily.cud", self.database / "daily.cud")

    def start(self) -> None:
        assert self._process is None, "already running"
        if self.socket_path.exists():
            self.socket_path.unlink()
        listeners = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)]
        try:
            listeners[0].bind(str(self.socket_path))
            if self._tcp_listener is not None:
                listeners.append(self._tcp_listener)
                self._tcp_listener = None
            elif self.tcp_port:
                listeners.append(socket.socket())
                listeners[1].setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listeners[1].bind(("127.0.0.1", self.tcp_port))
            for listener in listeners:
                listener.listen(64)
            # Above every fd the child is given, so moving them to 3, 4 overwrites none of them.
            fds = [os.dup(listener.fileno()) for listener in listeners]
            moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds]
            for fd in fds:
                os.close(fd)

            parent = os.getpid()

            def as_systemd_would() -> None:  # in the child, before exec: the sockets are fd 3, 4
                for number, fd in enumerate(moved, 3):
                    os.dup2(fd, number)  # inheritable; close_fds=False leaves it open across exec
                os.environ["LISTEN_FDS"] = str(len(moved))
                os.environ["LISTEN_PID"] = str(os.getpid())
                # Ends with the thread that started it (the test's main thread: harness.run
                # runs scenarios there), even when pytest is killed and cannot stop it.
                ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
                if os.getppid() != parent:  # the parent died before prctl
                    os._exit(1)

            self._process = subprocess.Popen([self.program, "-c", str(self.config)], close_fds=False,
                                             preexec_fn=as_systemd_would, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for fd in moved:
                os.close(fd)
        finally:
            for listener in listeners:
                listener.close()  # clamd holds them now
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Return once clamd answers PING (its database loaded); fail with its log if it ends or
        does not answer within READY_TIMEOUT."""
        process = self._process
        assert process is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise RuntimeError(f"clamd did not answer PING in {READY_TIMEOUT:.0f} s: {self.log()}")
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                    # Waits in the backlog while clamd loads: one connection, one long wait.
                    client.settimeout(left)
                    client.connect(str(self.socket_path))
                    client.sendall(b"zPING\0")
                    if client.recv(64).startswith(b"PONG"):
                        return
            except OSError:
                pass
            try:  # it ended (a bad config or database): say why; else a short pause before trying again
                code = process.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                continue
            self._process = None
            raise RuntimeError(f"clamd ended with {code} before answering PING: {self.log()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        """Stop clamd and let go of a TCP port never handed to it."""
        self.stop()
        if self._tcp_listener is not None:
            self._tcp_listener.close()
            self._tcp_listener = None

    def log(self) -> str:
        path = self.folder / "clamd.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def __enter__(self) -> "Clamd":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
