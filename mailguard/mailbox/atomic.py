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

from mailguard.errors import StorageError
from mailguard.files import ExchangeUnsupported, exchange_files, fsync_folder

TEMP_MARK = ".mailguard-"   # temporary files are hidden and carry this, so readers skip them
#: (inode, size, mtime in ns): tells whether a file is still the one that was read
FileIdentity = tuple[int, int, int]


def file_identity(info: os.stat_result) -> FileIdentity:
    return (info.st_ino, info.st_size, info.st_mtime_ns)


#: why a message file was not rewritten when a mail client moved it meanwhile (a flag change)
MOVED_AWAY = "renamed or removed by another program while it was rewritten; left unchanged"


class MovedAway(StorageError):
    """The file to replace is no longer under its name (a mail client renamed or deleted it)."""

    def __init__(self) -> None:
        super().__init__(MOVED_AWAY)


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
        self._seal()
        self._rename_into_place()

    def commit_in_place_of(self, identity: FileIdentity) -> None:
        """Like ``commit``, but only in place of the very file that was read (``file_identity``).
        A mail client may rename or replace a message file at any time (a flag change renames a
        Maildir file); a plain rename over the old name would then leave the client's copy
        beside ours. The names are swapped atomically instead, the file taken out is checked,
        and anything unexpected is put back (StorageError, nothing changed).
        """
        try:
            self._seal()
            exchange_files(self.temp_path, self.target)
        except ExchangeUnsupported:
            self._rename_into_place()
            return
        except FileNotFoundError:
            raise MovedAway from None
        if file_identity(os.stat(self.temp_path)) != identity:
            exchange_files(self.temp_path, self.target)  # theirs back in place; ours is discarded
            raise StorageError("changed on disk while it was rewritten; left unchanged")
        os.unlink(self.temp_path)
        fsync_folder(os.path.dirname(self.target) or ".")
        if os.path.dirname(self.temp_path) != os.path.dirname(self.target):
            fsync_folder(os.path.dirname(self.temp_path) or ".")

    def commit_as(self, name: str) -> None:
        """Give the new content the new name ``name`` (beside ``target``), durably; ``target`` stays.

        link(2), not rename(2): an existing ``name`` is never overwritten (FileExistsError). The
        caller removes ``target`` afterwards, so a crash in between leaves both, never neither.
        """
        self._seal()
        os.link(self.temp_path, name)
        fsync_folder(os.path.dirname(name) or ".")
        os.unlink(self.temp_path)

    def _seal(self) -> None:
        """The new content complete on disk, with ``target``'s mode and owner (FileNotFoundError
        when ``target`` is gone)."""
        self.stream.flush()
        _copy_owner_and_mode(self.target, self.stream.fileno())
        os.fsync(self.stream.fileno())
        self.stream.close()

    def _rename_into_place(self) -> None:
        os.rename(self.temp_path, self.target)
        fsync_folder(os.path.dirname(self.target) or ".")

    def discard(self) -> None:
        if not self.stream.closed:
            self.stream.close()
        try:
            os.unlink(self.temp_path)
        except FileNotFoundError:
            pass


def replace_file(target: str, data: bytes, *, folder: str | None = None,
                 identity: FileIdentity | None = None) -> None:
    """Atomically give ``target`` the content ``data`` (temp file in ``folder``, e.g. Maildir tmp/);
    with ``identity``, only in place of that very file (``NewFile.commit_in_place_of``)."""
    new = NewFile(target, folder=folder)
    try:
        new.write(data)
        if identity is None:
            new.commit()
        else:
            new.commit_in_place_of(identity)
    except BaseException:
        new.discard()
        raise


def _copy_owner_and_mode(source: str, fd: int) -> None:
    info = os.stat(source)
    os.fchmod(fd, info.st_mode & 0o7777)
    if os.geteuid() == 0:
        os.fchown(fd, info.st_uid, info.st_gid)  # a root-run scan must not take users' mail from them
