"""Finding a Maildir message again after a mail client renamed it.

A Maildir message keeps its unique name for life (maildir(5)). A client moves it from ``new/``
to ``cur/`` when it sees it, and a flag change rewrites the info after the colon (``:2,S`` to
``:2,FS``) by renaming the file. So a message listed a moment ago may have another name by the
time it is read or rewritten, and it is found again by its unique name: the part before the
colon. (Dovecot's ``,S=`` size fields sit before the colon; only a rewrite changes them.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailguard.mailbox.results import MessageResult

#: how many renames in a row are followed before the message is given up as gone
FOLLOW_RENAMES = 3


def unique_name(name: str) -> str:
    return name.partition(":")[0]


def current_path(path: str) -> str | None:
    """Where the message listed as ``path`` (``.../cur/NAME`` or ``.../new/NAME``) is now, or
    None when no message of its unique name is left (it was deleted, or ``path`` is no Maildir's)."""
    directory, name = os.path.split(path)
    folder, part = os.path.split(directory)
    if part not in ("cur", "new"):
        return None
    unique = unique_name(name)
    for sub in ("cur", "new"):
        try:
            names = os.listdir(os.path.join(folder, sub))
        except OSError:
            continue
        for candidate in names:
            if candidate == unique or candidate.startswith(unique + ":"):
                return os.path.join(folder, sub, candidate)
    return None


def renames(path: str, follow: bool = True) -> Iterator[str]:
    """``path``, then (with ``follow``) where its message is after each rename found, at most
    ``FOLLOW_RENAMES`` times: a caller tries its work at each path in turn and stops at the first
    that works (``for ... else``: the message is gone)."""
    yield path
    if not follow:
        return
    for _ in range(FOLLOW_RENAMES):
        moved = current_path(path)
        if moved is None:
            return
        path = moved
        yield path


def location_file(path: str) -> str:
    """``cur/NAME`` for ``.../cur/NAME``: the ``location["file"]`` of a Maildir message."""
    directory, name = os.path.split(path)
    return f"{os.path.basename(directory)}/{name}"


def follow_rename(result: "MessageResult", path: str) -> None:
    """``result`` is now about ``path``: the same message, renamed by a mail client."""
    result.file = path
    result.location["file"] = location_file(path)
