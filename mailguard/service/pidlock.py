"""The engine's pid file: ``STATE/mailguard.pid``, holding the engine's pid and an exclusive flock
for as long as the engine lives.

"Is an engine running?" is "is the file locked?", which stays right when the engine was killed (the
kernel drops the lock) and when its pid was reused by another program (that program does not hold
our lock): a stale pid file is simply taken over.
"""

from __future__ import annotations

import fcntl
import os
from typing import TYPE_CHECKING

from mailguard.errors import ServiceError

if TYPE_CHECKING:
    from mailguard.settings import Paths


class PidLock:
    """The engine's pid file, locked with flock for the engine's lifetime."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.path = paths.pid_file
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and write our pid, or raise ServiceError naming the running engine."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                pid = running_pid(self.paths)
                raise ServiceError(
                    f"the engine is already running (pid {pid if pid else 'unknown'}; {self.path})"
                ) from None
            # An engine that was stopping may have unlinked the file between our open and our
            # lock; then we hold a lock on a file nobody else can see. Start over on the new one.
            try:
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        # Unlink while still holding the lock, so nobody takes over a file we are about to drop.
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None


def running_pid(paths: Paths) -> int | None:
    """The pid of the running engine, or None. A pid file nobody holds locked is stale: ignored.

    0 means "running, pid unknown" (an engine between taking the lock and writing its pid).
    """
    path = paths.pid_file
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            content = os.read(fd, 64).strip()
            return int(content) if content.isdigit() else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
