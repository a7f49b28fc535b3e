"""Files of ours written so that a crash or a full disk never leaves half of one behind.

Settings, key material, leaf caches and quarantine metadata all go through ``write_atomic``:
a temp file in the same folder (so the rename stays on one file system), created 0600 by
``mkstemp`` and given its final mode before it appears (a key must never exist on disk with
looser permissions, docs/pitfalls.md#the-ca-key), fsync, rename over the old name, fsync of the folder.
Until the rename the old file is untouched.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
import tempfile
from pathlib import Path

from mailguard.errors import StorageError

PRIVATE_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644
PRIVATE_DIR_MODE = 0o700


def make_private_folders(path: Path) -> None:
    """Create ``path`` and every missing folder above it, each private (0700) whatever the umask.

    ``mkdir(parents=True)`` gives the folders above the process umask (0775 under 002, the
    Debian and Ubuntu default), which ``folder_owner_problem`` then rightly refuses: a folder
    we create must never be more open than one we would accept. Folders that already exist
    are left as they are (the caller checks them).
    """
    missing: list[Path] = []
    level = path
    while not os.path.lexists(level) and level != level.parent:
        missing.append(level)
        level = level.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by another process: not ours to change, the caller's check judges it
        os.chmod(folder, PRIVATE_DIR_MODE)  # mkdir's mode is masked by the umask


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make sure only the owner can enter it."""
    try:
        make_private_folders(path)
        os.chmod(path, PRIVATE_DIR_MODE)
    except OSError as exc:
        raise StorageError(f"cannot create folder {path}: {exc.strerror or exc}") from None
    return path


def write_atomic(path: Path, data: bytes, mode: int = PRIVATE_FILE_MODE, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` via a 0600 temp file, fsync, chmod, rename, fsync the folder.

    ``durable=False`` skips both fsyncs: for caches, where losing the file in a crash costs a
    re-computation and a damaged file is detected on reading; the rename still keeps readers
    from ever seeing half a file.
    """
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fchmod(handle.fileno(), mode)
                if durable:
                    os.fsync(handle.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        if durable:
            fsync_folder(folder)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}; nothing was changed") from None


def fsync_folder(folder: Path | str) -> None:
    """Make a rename or link durable: the folder's entry must reach the disk too."""
    try:
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
        # some file systems cannot fsync a folder; the file itself was synced
    finally:
        os.close(descriptor)


class ExchangeUnsupported(OSError):
    """This kernel or file system cannot swap two names atomically."""


_RENAME_EXCHANGE = 2  # <linux/fs.h>
_AT_FDCWD = -100


# Symbolic links followed while checking a path before it is called a loop (Linux's limit).
_MAX_SYMLINKS = 40


def folder_owner_problem(path: Path, *, check_own_mode: bool = True) -> str | None:
    """Why a user other than ours (or root) could rename, replace or fill ``path``, or None.

    The usual secure-folder checks (OpenSSH's StrictModes, systemd-tmpfiles' safe transitions),
    on the path as the kernel resolves it:
    - every symbolic link met on the way is owned by us or root (its owner could re-point it);
    - every folder on the way is owned by us or root and writable by no one else, unless it is
      sticky (in /tmp only an entry's owner may rename or delete it);
    - the folder itself is ours, and writable by no one else (not checked without
      ``check_own_mode``: for a caller about to make it private).
    Only what exists is checked: folders created later are ours.
    """
    me = os.geteuid()
    trusted = {0, me}
    current: Path | None = Path("/")
    pending = list(Path(os.getcwd(), path).parts[1:])
    links = 0
    passed: list[tuple[Path, os.stat_result]] = []
    while pending:
        name = pending.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            current = current.parent  # physical parent: ``current`` is already resolved
            continue
        candidate = current / name
        try:
            info = os.lstat(candidate)
        except FileNotFoundError:
            current = None  # created later, by us: what leads to it must still be safe
            break
        except OSError as exc:
            return f"{candidate} cannot be examined: {exc.strerror}"
        if stat.S_ISLNK(info.st_mode):
            if info.st_uid not in trusted:
                return f"the symbolic link {candidate} is owned by {_user(info.st_uid)}"
            links += 1
            if links > _MAX_SYMLINKS:
                return f"too many symbolic links resolving {path}"
            target = os.readlink(candidate)
            if os.path.isabs(target):
                current = Path("/")
            pending[:0] = Path(target).parts[1:] if os.path.isabs(target) else Path(target).parts
            continue
        if not stat.S_ISDIR(info.st_mode):
            return f"{candidate} is not a folder"
        passed.append((candidate, info))
        current = candidate
    for folder, info in passed:
        if folder == current:
            continue  # the folder itself: checked below
        if info.st_uid not in trusted:
            return f"the folder {folder} on its way is owned by {_user(info.st_uid)}"
        if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
            return f"the folder {folder} on its way can be changed by {_whom(info)}"
    if current is None:
        return None
    info = os.stat(current)
    if info.st_uid != me:
        return f"it is owned by {_user(info.st_uid)}, not by the user mailguard runs as ({_user(me)})"
    if check_own_mode and info.st_mode & 0o022:
        return f"it can be changed by {_whom(info)}"
    return None


def _whom(info: os.stat_result) -> str:
    return f"{'others' if info.st_mode & 0o002 else 'its group'} (mode {stat.S_IMODE(info.st_mode):04o})"


def _user(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def within(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or inside it (both already resolved with realpath)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


@functools.cache
def _renameat2():  # type: ignore[no-untyped-def]
    """libc's renameat2, looked up once (a rewrite swaps one file per changed message); None without it."""
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None


def exchange_files(first: str, second: str) -> None:
    """Swap the files at ``first`` and ``second`` in one step (Linux renameat2 RENAME_EXCHANGE).

    Unlike a rename over ``second``, it fails (FileNotFoundError) when ``second`` is gone, and
    the file taken out of ``second`` can still be checked, and swapped back, afterwards: another
    program renaming or replacing the file meanwhile is seen, not silently undone.
    Raises ``ExchangeUnsupported`` where that is not available.
    """
    import ctypes

    renameat2 = _renameat2()
    if renameat2 is None:
        raise ExchangeUnsupported(errno.ENOSYS, "renameat2 is not available")
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        raise ExchangeUnsupported(code, os.strerror(code))
    raise OSError(code, os.strerror(code), second)
