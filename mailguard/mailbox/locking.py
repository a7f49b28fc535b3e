"""Locking an mbox the way mail programs do, so a rewrite never races a delivery or a client.

Three locks, all taken, in this order, because each program honours a different subset:

1. The dotlock ``FILE.lock``, created with ``O_CREAT | O_EXCL`` (mutt, procmail, Dovecot's
   ``mbox_write_locks = dotlock``, the traditional MDAs; RFC 4155 §"Locking"). It holds our pid,
   so a lock left by a process that died (SIGKILL, power loss) is recognised as stale and
   broken at once, and one whose owner still runs is never broken; a lock whose owner we
   cannot check is broken when it is older than ``STALE_AFTER`` (mutt and Dovecot also break
   old dotlocks by age). Only the very lock file judged stale is removed: a delivery agent
   may have taken a fresh one in the meantime.
2. ``flock(2)`` on the file (mutt with ``--with-flock``, Dovecot ``flock``).
3. ``fcntl(2)`` record lock on the whole file (mutt's default, Dovecot's default ``fcntl``).
   On Linux an open file description lock (``F_OFD_SETLK``): a classic record lock belongs to
   the process and is dropped when the process closes *any* descriptor of the file, which the
   in-process scan (``--jobs 1``) does after every range it reads. The two kinds conflict with
   each other, so mutt's and Dovecot's classic locks wait for ours all the same.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import sys
import time
from pathlib import Path
from typing import NamedTuple

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
            self._retry(lambda: _fcntl_write_lock(self._fd), deadline, "fcntl lock")
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
        judged = _read_dotlock(self.dotlock)
        if judged is None:
            return True  # released meanwhile: try again at once
        owner = _local_owner(judged.content)
        # A live local owner keeps its lock however long it takes (a rewrite of a big mbox);
        # age is the test only for a lock whose owner cannot be checked.
        if owner is not None:
            stale = not process_alive(owner)
        else:
            stale = time.time() - judged.mtime_ns / 1e9 > STALE_AFTER
        if stale:
            # Its owner may have released it meanwhile and another program (a delivery agent)
            # taken a fresh one: unlinking by name would then break a live lock, and both would
            # write the mailbox. Only the very file judged stale goes; the window left is from
            # this check to the unlink, as in Dovecot's file-dotlock.
            if _read_dotlock(self.dotlock) == judged:
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


class _Dotlock(NamedTuple):
    """One dotlock file as seen at one moment: equal only for the very same file, unchanged."""

    device: int
    inode: int
    mtime_ns: int
    ctime_ns: int
    content: bytes


# struct flock on 64-bit Linux: l_type, l_whence (short), l_start, l_len (off_t), l_pid (int), padded.
_FLOCK = "=hh4xqqi4x"
_OFD = sys.platform.startswith("linux") and hasattr(fcntl, "F_OFD_SETLK") and sys.maxsize > 2**32


def _fcntl_write_lock(fd: int) -> None:
    """A non-blocking fcntl write lock on the whole file (BlockingIOError or PermissionError
    when another program holds one)."""
    if _OFD:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
    else:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _read_dotlock(path: str) -> _Dotlock | None:
    """The dotlock file at ``path``, or None when there is none. One that cannot be read is
    judged by its age alone (empty content)."""
    try:
        with open(path, "rb") as stream:
            info = os.fstat(stream.fileno())
            content = stream.read(256)
    except FileNotFoundError:
        return None
    except OSError:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return None
        content = b""
    return _Dotlock(info.st_dev, info.st_ino, info.st_mtime_ns, info.st_ctime_ns, content)


def _local_owner(content: bytes) -> int | None:
    """The pid in a dotlock written on this host (``PID`` or ``PID:HOST``), else None."""
    text = content.decode("ascii", "replace").strip()
    pid_text, _, host = text.partition(":")
    if not pid_text.isdigit() or (host and host != socket.gethostname()):
        return None
    return int(pid_text)
