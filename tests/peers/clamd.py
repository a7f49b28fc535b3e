"""A throwaway clamd for the real-peer tests: its own config, socket and database in a tmp folder.

The machine may have no network, so no freshclam: the database is built here, either as plain
``.ndb`` lines or as an unsigned ``daily.cud`` made with ``sigtool --build --unsigned``, which
clamd loads like freshclam's ``daily.cvd`` and whose version and date ``VERSION`` reports.

No waiting by sleeping: the test binds the unix socket itself and hands it to clamd the way
systemd's socket activation does (``LISTEN_FDS``, fd 3; Debian's clamd is built for it). A
client may connect at once; its connection waits in the socket's backlog until clamd, once its
database is loaded, accepts it. Stopping clamd leaves the socket file in place with nobody
listening (connections are refused), and ``start`` again binds it anew: a clamd restarted under
a running engine.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
from pathlib import Path

from tests.peers import require


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
        if tcp:
            with socket.socket() as probe:  # a port of our own, bound again at each start
                probe.bind(("127.0.0.1", 0))
                self.tcp_port = probe.getsockname()[1]
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
            if self.tcp_port:
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

            def as_systemd_would() -> None:  # in the child, before exec: the sockets are fd 3, 4
                for number, fd in enumerate(moved, 3):
                    os.dup2(fd, number)  # inheritable; close_fds=False leaves it open across exec
                os.environ["LISTEN_FDS"] = str(len(moved))
                os.environ["LISTEN_PID"] = str(os.getpid())

            self._process = subprocess.Popen([self.program, "-c", str(self.config)], close_fds=False,
                                             preexec_fn=as_systemd_would, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for fd in moved:
                os.close(fd)
        finally:
            for listener in listeners:
                listener.close()  # clamd holds them now

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

    def log(self) -> str:
        path = self.folder / "clamd.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def __enter__(self) -> "Clamd":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
