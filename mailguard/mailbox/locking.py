"""Locking an mbox the way mail programs do, so a rewrite never races a delivery or a client.

Three locks, all taken, in this order, because each program honours a different subset:

1. The dotlock ``FILE.lock``, created with ``O_CREAT | O_EXCL`` (mutt, procmail, Dovecot's
   ``mbox_write_locks = dotlock``, the traditional MDAs; RFC 4155 §"Locking"). It holds our pid,
   so a lock left by a process that died (SIGKILL, power loss) is recognised as stale and
   broken at once; a lock whose owner we cannot check is broken when it is older than
   ``STALE_AFTER`` (mutt and Dovecot also break old dotlocks by age).
2. ``flock(2)`` on the file (mutt with ``--with-flock``, Dovecot ``flock``).
3. ``fcntl(2)`` record lock on the whole file (mutt's default, Dovecot's default ``fcntl``).
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from mailguard.errors import StorageError
from mailguard.processes import process_alive

STALE_AFTER = 300.0      # seconds after which a dotlock whose owner cannot be checked is broken
WAIT_FOR_LOCK = 30.0     # seconds we wait for another program to release the mailbox
_POLL = 0.05


class MboxLock:
    """Hold the dotlock, flock and fcntl locks of one mbox; use as a context manager."""

    def __init__(self, path: str, *, wait: float = WAIT_FOR_LOCK) -> None:
        self.path = path
        self.dotlock = path + ".lock"
        self.wait = wait
        self._fd: int | None = None
        self._token = f"{os.getpid()}:{socket.gethostname()}\n".encode()

    def __enter__(self) -> "MboxLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait
        self._take_dotlock(deadline)
        try:
            self._fd = os.open(self.path, os.O_RDWR)
            self._retry(lambda: fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB), deadline, "flock")
            self._retry(lambda: fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB), deadline, "fcntl lock")
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops both the flock and the fcntl lock
            self._fd = None
        try:
            if Path(self.dotlock).read_bytes() == self._token:
                os.unlink(self.dotlock)
        except OSError:
            pass

    def _take_dotlock(self, deadline: float) -> None:
        while True:
            try:
                fd = os.open(self.dotlock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if self._break_if_stale():
                    continue
                if time.monotonic() > deadline:
                    raise StorageError(f"{self.path}: locked by another program ({self.dotlock} exists)")
                time.sleep(_POLL)
                continue
            except OSError as exc:
                raise StorageError(f"{self.path}: cannot create the lock file {self.dotlock}: "
                                   f"{exc.strerror}") from exc
            try:
                os.write(fd, self._token)
                os.fsync(fd)
            finally:
                os.close(fd)
            return

    def _break_if_stale(self) -> bool:
        try:
            with open(self.dotlock, "rb") as stream:
                content = stream.read(256)
                age = time.time() - os.fstat(stream.fileno()).st_mtime
        except FileNotFoundError:
            return True  # released meanwhile: try again at once
        except OSError:
            return False
        owner = _local_owner(content)
        if (owner is not None and not process_alive(owner)) or age > STALE_AFTER:
            try:
                os.unlink(self.dotlock)
            except FileNotFoundError:
                pass
            return True
        return False

    def _retry(self, attempt, deadline: float, what: str) -> None:
        while True:
            try:
                attempt()
                return
            except (BlockingIOError, PermissionError):
                if time.monotonic() > deadline:
                    raise StorageError(f"{self.path}: another program holds its {what}") from None
                time.sleep(_POLL)


def _local_owner(content: bytes) -> int | None:
    """The pid in a dotlock written on this host (``PID`` or ``PID:HOST``), else None."""
    text = content.decode("ascii", "replace").strip()
    pid_text, _, host = text.partition(":")
    if not pid_text.isdigit() or (host and host != socket.gethostname()):
        return None
    return int(pid_text)
