"""Turn the paths on the command line into mailboxes and messages, in a stable order.

Given files and folders, yield what each holds, recognised by content and structure
(sniff.py): an mbox file, a message file, a Maildir (with its Maildir++ subfolders), an
MH folder, or a folder of any of these, walked recursively in name order. Symbolic links
are followed, but a link that leads back into a folder being walked is reported as a
loop and not followed, so a walk always ends. Problems (a missing path, a loop, a folder
that cannot be listed, a special file) are yielded as ``Problem`` items where they occur:
the walk goes on and the report shows each one.

Folders of mailguard's own (the quarantine, the state folder: ``exclude``) are never
scanned, whether given directly or met in a walk (compared by real path): the quarantined
originals are infected by definition, and cleaning them would destroy what ``quarantine
restore`` gives back. They are reported as ``Skipped`` with the reason.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from mailguard.files import within
from mailguard.mailbox import maildir
from mailguard.mailbox.sniff import FileFormat, is_maildir, is_mh_folder, sniff_file

STDIN = "-"


@dataclass(frozen=True)
class MboxFile:
    source: str            # the path as the user will recognise it
    path: str              # the file to open
    size: int


@dataclass(frozen=True)
class MessageFile:
    source: str            # the mailbox: the Maildir or MH folder, or the .eml file itself
    path: str              # the file to open
    size: int
    location: dict[str, object] = field(hash=False)   # where in the source: {"format", "folder", "file"}
    sniffed: bool = False  # content already recognised as a message (else the reader checks it)


@dataclass(frozen=True)
class Problem:
    source: str
    path: str
    reason: str
    location: dict[str, object] = field(default_factory=lambda: {"format": "unknown"}, hash=False)


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str
    own: bool = False      # one of mailguard's own folders (quarantine, state): worth telling the user


VANISHED = "deleted by another program before it could be read"  # a reason also told the user


@dataclass(frozen=True)
class Stdin:
    source: str = STDIN


Item = MboxFile | MessageFile | Problem | Skipped | Stdin


def discover(paths: list[str], exclude: "Iterable[str | os.PathLike[str]]" = ()) -> Iterator[Item]:
    """Everything to scan under ``paths``, in argument order, then name order.

    ``exclude``: folders never scanned (mailguard's quarantine and state folder), with or
    without anything under them.
    """
    excluded = _Excluded(exclude)
    for given in paths:
        if given == STDIN:
            yield Stdin()
            continue
        yield from _top(given, excluded)


class _Excluded:
    """Folders not to scan, by real path; ``reason(path)`` says why a path is one of them or in one."""

    def __init__(self, folders: "Iterable[str | os.PathLike[str]]") -> None:
        self.folders = [os.path.realpath(os.fspath(folder)) for folder in folders]

    def __bool__(self) -> bool:
        return bool(self.folders)

    def reason(self, path: str) -> str:
        if not self.folders:
            return ""
        real = os.path.realpath(path)
        for folder in self.folders:
            if within(real, folder):
                return f"mailguard's own folder ({folder}: quarantine or state), never scanned"
        return ""


_NOTHING_EXCLUDED = _Excluded(())


def _top(path: str, excluded: _Excluded = _NOTHING_EXCLUDED) -> Iterator[Item]:
    try:
        info = os.stat(path)
    except OSError as exc:
        yield Problem(path, path, _explain(exc))
        return
    reason = excluded.reason(path)
    if reason:
        yield Skipped(path, reason, own=True)
        return
    if stat.S_ISDIR(info.st_mode):
        yield from _folder(path, ancestors=frozenset(), excluded=excluded)
    else:
        yield from _file(path, info, walked=False)


def _file(path: str, info: os.stat_result, *, walked: bool) -> Iterator[Item]:
    if not stat.S_ISREG(info.st_mode):
        # a FIFO or device would block or never end; none of them is a mailbox
        yield Problem(path, path, "not a regular file")
        return
    try:
        kind = sniff_file(path)
    except OSError as exc:
        yield Problem(path, path, _explain(exc))
        return
    if kind is FileFormat.MBOX or kind is FileFormat.EMPTY:
        yield MboxFile(path, path, info.st_size)
    elif kind is FileFormat.MESSAGE:
        yield MessageFile(path, path, info.st_size, {"format": "eml"}, sniffed=True)
    elif kind is FileFormat.CLIENT_INDEX and walked:
        yield Skipped(path, "a mail client's index file")
    else:
        yield Problem(path, path, "not a message or mailbox (content not recognised)")


def _folder(path: str, ancestors: frozenset[tuple[int, int]],
            excluded: _Excluded = _NOTHING_EXCLUDED) -> Iterator[Item]:
    try:
        info = os.stat(path)
        names = sorted(os.listdir(path))
    except OSError as exc:
        yield Problem(path, path, _explain(exc))
        return
    identity = (info.st_dev, info.st_ino)
    if identity in ancestors:
        yield Problem(path, path, "symlink loop: this folder contains itself")
        return
    ancestors = ancestors | {identity}
    reason = excluded.reason(path)
    if reason:
        yield Skipped(path, reason, own=True)
        return
    if is_maildir(path):
        yield from _maildir(path, ancestors)
        return
    if is_mh_folder(path, names):
        yield from _mh(path, names, ancestors, excluded)
        return
    for name in names:
        if name.startswith("."):
            continue  # hidden entries of a plain folder are client state (.imap, .git), not mail
        yield from _entry(os.path.join(path, name), ancestors, excluded)


def _entry(path: str, ancestors: frozenset[tuple[int, int]],
           excluded: _Excluded = _NOTHING_EXCLUDED) -> Iterator[Item]:
    try:
        info = os.stat(path)
    except OSError as exc:
        yield Problem(path, path, _explain(exc))
        return
    if stat.S_ISDIR(info.st_mode):
        yield from _folder(path, ancestors, excluded)
    else:
        yield from _file(path, info, walked=True)


def _maildir(root: str, ancestors: frozenset[tuple[int, int]]) -> Iterator[Item]:
    """The messages of a Maildir, ``cur/`` then ``new/``, then its Maildir++ subfolders."""
    yield from _maildir_folder(root, root, "")
    try:
        names = sorted(os.listdir(root))
    except OSError as exc:
        yield Problem(root, root, _explain(exc))
        return
    for name in names:
        sub = os.path.join(root, name)
        # Maildir++: subfolders are ".NAME" Maildirs inside the root (".Archive", ".Sent.2024").
        if name.startswith(".") and name not in (".", "..") and is_maildir(sub):
            try:
                info = os.stat(sub)
            except OSError as exc:
                yield Problem(root, sub, _explain(exc))
                continue
            if (info.st_dev, info.st_ino) in ancestors:
                yield Problem(root, sub, "symlink loop: this folder contains itself")
                continue
            yield from _maildir_folder(root, sub, name)


def _maildir_folder(root: str, folder: str, folder_name: str) -> Iterator[Item]:
    for part in ("cur", "new"):
        directory = os.path.join(folder, part)
        try:
            names = sorted(os.listdir(directory))
        except OSError as exc:
            yield Problem(root, directory, _explain(exc), {"format": "maildir", "folder": folder_name})
            continue
        for name in names:
            if name.startswith("."):
                continue  # maildir(5): readers skip names starting with a dot
            path = os.path.join(directory, name)
            location = {"format": "maildir", "folder": folder_name, "file": f"{part}/{name}"}
            yield _message_file(root, path, location, "broken Maildir entry")


def _mh(folder: str, names: list[str], ancestors: frozenset[tuple[int, int]],
        excluded: _Excluded = _NOTHING_EXCLUDED) -> Iterator[Item]:
    """An MH folder: its numbered messages in number order, then its subfolders."""
    numbered = sorted((name for name in names if name.isdigit()), key=int)
    for name in numbered:
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            continue  # a folder named like a number is a subfolder, walked below
        yield _message_file(folder, path, {"format": "mh", "file": name}, "broken MH entry")
    for name in names:
        path = os.path.join(folder, name)
        if not name.startswith((".", ",", "#")) and os.path.isdir(path):
            yield from _folder(path, ancestors, excluded)


def _message_file(source: str, listed: str, location: dict[str, object], what: str) -> Item:
    # Gone since the folder was listed: renamed by a mail client (Maildir: followed), or deleted.
    for path in maildir.renames(listed, location.get("format") == "maildir"):
        if path != listed:
            location = dict(location, file=maildir.location_file(path))
        try:
            info = os.stat(path)
            break
        except FileNotFoundError as exc:
            if os.path.islink(path):
                return Problem(source, path, f"{what}: {_explain(exc)}", location)  # a dangling symlink
        except OSError as exc:
            return Problem(source, path, f"{what}: {_explain(exc)}", location)
    else:
        return Skipped(path, VANISHED)
    if not stat.S_ISREG(info.st_mode):
        return Problem(source, path, f"{what}: not a regular file", location)
    return MessageFile(source, path, info.st_size, location)


def _explain(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop: too many levels of symbolic links"
    if exc.errno == errno.ENOENT:
        return "no such file or folder"
    return exc.strerror or str(exc)
