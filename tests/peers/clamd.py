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

import os
import shutil
import socket
import subprocess
from pathlib import Path

from tests.peers import require


class Clamd:
    """One clamd on ``folder/clamd.sock``; ``start``, ``stop``; a context manager that stops it."""

    def __init__(self, folder: Path) -> None:
        self.program = require("clamd")
        self.folder = folder
        self.database = folder / "db"
        self.database.mkdir(parents=True, exist_ok=True)
        self.socket_path = folder / "clamd.sock"
        self.address = f"unix:{self.socket_path}"
        self.config = folder / "clamd.conf"
        self.config.write_text(
            f"LocalSocket {self.socket_path}\nDatabaseDirectory {self.database}\nForeground yes\n"
            f"LogFile {folder / 'clamd.log'}\nLogTime yes\nSelfCheck 3600\n")
        self._process: subprocess.Popen[bytes] | None = None

    def write_ndb(self, signatures: dict[str, bytes], name: str = "mailguard-test.ndb") -> None:
        """Body signatures NAME -> bytes, matched anywhere in any file."""
        (self.database / name).write_text("".join(f"{n}:0:*:{data.hex()}\n" for n, data in signatures.items()))

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
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.socket_path))
            listener.listen(64)
            fd = listener.fileno()

            def as_systemd_would() -> None:  # in the child, before exec: the socket is fd 3
                if fd == 3:
                    os.set_inheritable(3, True)
                else:
                    os.dup2(fd, 3)  # inheritable, and close_fds=False leaves it open across exec
                os.environ["LISTEN_FDS"] = "1"
                os.environ["LISTEN_PID"] = str(os.getpid())

            self._process = subprocess.Popen([self.program, "-c", str(self.config)], close_fds=False,
                                             preexec_fn=as_systemd_would, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            listener.close()  # clamd holds it now

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
