"""Replace a file so that a crash at any moment leaves either the old or the new one, whole.

The recipe (as Maildir delivery and Dovecot's mbox rewrites use it): write a new file in
the same folder (so rename(2) stays on one file system and is atomic), fsync it, give it
the old file's mode and owner, rename it over the old name, then fsync the folder so the
rename itself is on disk. Until the rename the old file is untouched; after it the new
file is complete.
"""

from __future__ import annotations

import os
import secrets
import time

from mailguard.files import fsync_folder

TEMP_MARK = ".mailguard-"   # temporary files are hidden and carry this, so readers skip them


class NewFile:
    """A file being written beside ``target`` (or in ``folder``), to replace ``target`` on commit."""

    def __init__(self, target: str, *, folder: str | None = None) -> None:
        self.target = target
        folder = folder if folder is not None else os.path.dirname(target) or "."
        name = f"{TEMP_MARK}{os.getpid()}-{int(time.time())}-{secrets.token_hex(4)}.tmp"
        self.temp_path = os.path.join(folder, name)
        fd = os.open(self.temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.stream = os.fdopen(fd, "wb", buffering=1 << 20)

    def write(self, data: bytes) -> None:
        self.stream.write(data)

    def commit(self) -> None:
        """Make the new content the file's content, durably."""
        self.stream.flush()
        _copy_owner_and_mode(self.target, self.stream.fileno())
        os.fsync(self.stream.fileno())
        self.stream.close()
        os.rename(self.temp_path, self.target)
        fsync_folder(os.path.dirname(self.target) or ".")

    def commit_as(self, name: str) -> None:
        """Give the new content the new name ``name`` (beside ``target``), durably; ``target`` stays.

        link(2), not rename(2): an existing ``name`` is never overwritten (FileExistsError). The
        caller removes ``target`` afterwards, so a crash in between leaves both, never neither.
        """
        self.stream.flush()
        _copy_owner_and_mode(self.target, self.stream.fileno())
        os.fsync(self.stream.fileno())
        self.stream.close()
        os.link(self.temp_path, name)
        fsync_folder(os.path.dirname(name) or ".")
        os.unlink(self.temp_path)

    def discard(self) -> None:
        if not self.stream.closed:
            self.stream.close()
        try:
            os.unlink(self.temp_path)
        except FileNotFoundError:
            pass


def replace_file(target: str, data: bytes, *, folder: str | None = None) -> None:
    """Atomically give ``target`` the content ``data`` (temp file in ``folder``, e.g. Maildir tmp/)."""
    new = NewFile(target, folder=folder)
    try:
        new.write(data)
        new.commit()
    except BaseException:
        new.discard()
        raise


def _copy_owner_and_mode(source: str, fd: int) -> None:
    info = os.stat(source)
    os.fchmod(fd, info.st_mode & 0o7777)
    if os.geteuid() == 0:
        os.fchown(fd, info.st_uid, info.st_gid)  # a root-run scan must not take users' mail from them
