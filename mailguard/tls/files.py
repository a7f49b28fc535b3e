"""Writing key material: private folders and atomic files created with their final mode.

A key must never exist on disk, even for a moment, with looser permissions than 0600, and a
crash must never leave half a key behind (pitfalls §5.5). ``mkstemp`` creates the temp file
0600 from the start; the rename makes it appear whole.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mailguard.errors import StorageError

PRIVATE_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644
PRIVATE_DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make sure only the owner can enter it."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
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
        if not durable:
            return
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from None
