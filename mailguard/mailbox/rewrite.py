"""Writing rewritten messages back into mailboxes, so that no crash can lose or split one.

mbox: the mailbox is locked (locking.py) before it is read and stays locked until the new
file has replaced it; the new file is the old one with the changed messages swapped in:
every other byte is copied as it is (docs/architecture.md#rewrite-by-splicing). A mailbox in
which nothing changed is not written at all.

Maildir, MH and single message files: each changed message is written to a new file
(Maildir: in ``tmp/``, as maildir(5) delivery does) and renamed over the old name, which
keeps the flags in the name (``:2,S``). A file that changed on disk since it was scanned
(a client set a flag, i.e. renamed it, or expunged it) is left alone and reported.

In both cases the original of every changed message goes to the quarantine before the
mailbox changes.
"""

from __future__ import annotations

import io
import os
import re
from typing import Callable

from mailguard.errors import StorageError
from mailguard.files import fsync_folder, within
from mailguard.mailbox import maildir
from mailguard.mailbox.atomic import TEMP_MARK, MovedAway, NewFile, file_identity, replace_file
from mailguard.scan.fromline import quote
from mailguard.mailbox.locking import MboxLock
from mailguard.processes import process_alive
from mailguard.mailbox.mbox import read_mbox
from mailguard.mailbox.results import MessageResult
from mailguard.mailbox.worker import splice_rewritten

COPY_BLOCK = 1 << 20

# Keeps an original message; returns its quarantine id. (raw, result) -> id
Keeper = Callable[[bytes, MessageResult], str]


class MboxRewriter:
    """Rewrites one mbox while holding its locks; feed it every message result in file order."""

    def __init__(self, path: str, keep: Keeper, protected: tuple[str, ...] = ()) -> None:
        self.path = os.path.realpath(path)  # a symlinked mbox is rewritten where it lives
        refuse_protected(self.path, protected)
        self.keep = keep
        self.lock = MboxLock(self.path)
        self.lock.acquire()
        try:
            _remove_dead_temp_files(os.path.dirname(self.path))
            self.source = open(self.path, "rb", buffering=0)
        except BaseException:
            self.lock.release()
            raise
        self.size = os.fstat(self.source.fileno()).st_size
        self.new: NewFile | None = None
        self.copied_to = 0

    def message(self, result: MessageResult) -> None:
        """Take one message, in order: copy it, or write its rewritten version."""
        if result.rewritten is None or result.span is None:
            return  # copied later, in one block with its unchanged neighbours
        offset, length, _ = result.span
        stored = self._read(offset, length)
        original = next(read_mbox(io.BytesIO(stored), max_size=len(stored)))
        assert original.content is not None
        rewritten = splice_rewritten(original.content, result.rewritten)
        result.quarantine_id = self.keep(original.content, result)
        if self.new is None:
            self.new = NewFile(self.path)
        self._copy_until(offset)
        line_end = b"\r\n" if original.from_line.endswith(b"\r\n") else b"\n"
        body = quote(rewritten)
        if not body.endswith(b"\n"):
            body += line_end
        self.new.write(original.from_line + body + line_end)  # the blank line before the next From_
        self.copied_to = offset + length
        result.rewritten = None
        result.changed = True

    def finish(self) -> None:
        """Put the new mbox in place (if anything changed) and unlock."""
        try:
            if self.new is not None:
                # Whatever was appended despite our lock is kept too: nothing may be lost.
                self._copy_until(os.fstat(self.source.fileno()).st_size)
                self.new.commit()
                self.new = None
        finally:
            self.abort()

    def abort(self) -> None:
        """Leave the mbox as it was and unlock."""
        if self.new is not None:
            self.new.discard()
            self.new = None
        self.source.close()
        self.lock.release()

    def _read(self, offset: int, length: int) -> bytes:
        return os.pread(self.source.fileno(), length, offset)

    def _copy_until(self, end: int) -> None:
        assert self.new is not None
        while self.copied_to < end:
            block = self._read(self.copied_to, min(COPY_BLOCK, end - self.copied_to))
            if not block:
                raise StorageError(f"{self.path}: shrank while locked; left unchanged")
            self.new.write(block)
            self.copied_to += len(block)


def refuse_protected(real_path: str, protected: tuple[str, ...]) -> None:
    """Raise if ``real_path`` is in one of the ``protected`` folders (the quarantine): never rewritten there.

    Discovery already skips those folders; this is the second line, so that no way of reaching a
    quarantined original (a symlink, a caller that did not exclude it) can overwrite it.
    """
    for folder in protected:
        folder = os.path.realpath(folder)
        if within(real_path, folder):
            raise StorageError(f"in mailguard's quarantine folder ({folder}); never rewritten")


def rewrite_message_file(result: MessageResult, keep: Keeper, protected: tuple[str, ...] = ()) -> None:
    """Replace one message file (Maildir, MH, .eml) with its rewritten version.

    ``protected``: folders (the quarantine) whose files are never rewritten (StorageError).
    A Maildir file a mail client renamed meanwhile (a flag change) is followed to its new name,
    and rewritten there if it is still the file that was scanned (same inode, size and mtime:
    a rename changes none of them); otherwise it is left to the client (MovedAway).
    """
    for path in maildir.renames(result.file, result.location.get("format") == "maildir"):
        if path != result.file:
            maildir.follow_rename(result, path)
        try:
            _rewrite_message_file(result, keep, protected)
            return
        except MovedAway:
            continue
    raise MovedAway


def _rewrite_message_file(result: MessageResult, keep: Keeper, protected: tuple[str, ...]) -> None:
    assert result.rewritten is not None
    path = os.path.realpath(result.file)
    refuse_protected(path, protected)
    try:
        stream = open(path, "rb")
    except FileNotFoundError:
        raise MovedAway from None
    with stream:
        info = os.fstat(stream.fileno())
        if result.identity != file_identity(info):
            raise StorageError("changed on disk while it was scanned; left unchanged")
        original = stream.read()
    data = splice_rewritten(original, result.rewritten)
    if not result.quarantine_id:  # once, even when the file is followed to a new name
        result.quarantine_id = keep(original, result)
    folder = None
    renamed = None
    if result.location.get("format") == "maildir":
        tmp = os.path.join(os.path.dirname(os.path.dirname(path)), "tmp")
        folder = tmp if os.path.isdir(tmp) else None
        renamed = maildir_name_for(os.path.basename(path), data)
    if renamed is None or renamed == os.path.basename(path):
        replace_file(path, data, folder=folder, identity=result.identity)
    else:
        _replace_renamed(path, os.path.join(os.path.dirname(path), renamed), data, result, folder)
    result.rewritten = None
    result.changed = True


_SIZE_FIELD = re.compile(rb"(?<=,)([SW])=\d+(?=,|$)")


def maildir_name_for(name: str, data: bytes) -> str:
    """``name`` with its Dovecot size fields (``,S=`` bytes, ``,W=`` bytes with CRLF line ends)
    giving the sizes of ``data``; the rest (the unique part, the ``:2,FLAGS`` info) as it was.

    Dovecot trusts these sizes (for the mailbox size, FETCH RFC822.SIZE); stale ones after a
    rewrite would make it read past or short of the message.
    """
    base, separator, info = name.partition(":")
    encoded = os.fsencode(base)
    if b",S=" not in encoded and b",W=" not in encoded:
        return name
    sizes = {b"S": len(data), b"W": len(data) + data.count(b"\n") - data.count(b"\r\n")}
    fixed = _SIZE_FIELD.sub(lambda m: m.group(1) + b"=" + str(sizes[m.group(1)]).encode(), encoded)
    return os.fsdecode(fixed) + separator + info


def _replace_renamed(path: str, new_path: str, data: bytes, result: MessageResult, folder: str | None) -> None:
    """Write the new content under ``new_path``, then remove ``path``: a crash leaves a duplicate, never a loss."""
    new = NewFile(path, folder=folder)
    try:
        new.write(data)
        new.commit_as(new_path)
    except FileNotFoundError:  # the file to replace is gone: moved by a mail client
        new.discard()
        raise MovedAway from None
    except BaseException:
        new.discard()
        raise
    try:
        if file_identity(os.stat(path)) != result.identity:
            raise FileNotFoundError
        os.unlink(path)
    except FileNotFoundError:
        # Renamed (a flag change) or replaced by a mail client meanwhile: its file stands, ours goes.
        os.unlink(new_path)
        fsync_folder(os.path.dirname(new_path) or ".")
        raise MovedAway from None
    fsync_folder(os.path.dirname(path) or ".")
    maildir.follow_rename(result, os.path.join(os.path.dirname(result.file), os.path.basename(new_path)))


def _remove_dead_temp_files(folder: str) -> None:
    """Delete new-mbox files left by a rewrite that was killed (their writer's pid is gone)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if not name.startswith(TEMP_MARK):
            continue
        pid_text = name[len(TEMP_MARK):].split("-", 1)[0]
        if pid_text.isdigit() and not process_alive(int(pid_text)):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass

