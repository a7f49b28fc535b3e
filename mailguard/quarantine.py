"""The quarantine: the original of every message mailguard changed or replaced.

docs/architecture.md#lose-nothing: whatever the filter did to a message, its original bytes are
kept here and can be restored byte for byte. Each entry is two files in one folder:

    20250401-3f2a9c0d1e4b.eml    the original message, exactly as received
    20250401-3f2a9c0d1e4b.json   what we knew: verdict, detections, where from, when

The id is the UTC date and the first 12 hex digits of the message's SHA-256, so it is
short, sorts by day, and the same message kept twice on one day is kept once. The folder
is 0700 and the files 0600 (mail is private), and a folder another user could change (its
owner, a folder on its way, a symbolic link to it) is refused: that user could rename or delete
the originals (``check``). Files are written to a temporary name, fsynced, and linked into
place, so a crash leaves either no entry or a whole one; the metadata is written last, so an
entry is listed only once its message is safely stored.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import logging
import os
import re
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailguard.errors import StorageError, UsageError
from mailguard.files import folder_owner_problem, fsync_folder, make_private_folders, write_atomic

if TYPE_CHECKING:
    from mailguard.scan.verdict import Verdict

log = logging.getLogger(__name__)

_ID = re.compile(r"\d{8}-[0-9a-f]{12}(?:-\d+)?")
_HASH_DIGITS = 12
# Header block bytes read for the subject/from/message-id summary; the rest is body.
MAX_HEADER_BYTES = 256 * 1024
# Characters kept of each summary header in the metadata (display only).
MAX_SUMMARY_LENGTH = 998  # RFC 5322 §2.1.1 line length
FOLDER_MODE = 0o700
FILE_MODE = 0o600


class QuarantineNotFound(StorageError):
    """No entry has the id (or id prefix) asked for."""


class UnsafeQuarantine(StorageError):
    """The quarantine folder could be changed by a user other than the one mailguard runs as."""


@dataclass(frozen=True)
class Entry:
    id: str
    created: str                 # ISO 8601, UTC: "2025-04-01T10:00:00Z"
    source: str                  # where the message came from (connection, mailbox and position)
    verdict: str                 # clean | infected | unscanned
    detections: list[dict[str, str]] = field(default_factory=list)   # name, detector, part
    incomplete: list[dict[str, str]] = field(default_factory=list)   # reason, part, detail
    size: int = 0
    sha256: str = ""
    subject: str = ""
    sender: str = ""
    message_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Entry":
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)

    @property
    def detection_names(self) -> list[str]:
        return sorted({d["name"] for d in self.detections})


class Quarantine:
    """One quarantine folder. Reading never changes it; ``add`` creates it when needed."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)

    def check(self) -> None:
        """Refuse (UnsafeQuarantine) a folder another user could change, as far as it exists.

        Called before a command reads the quarantine or an engine or rewrite starts using it,
        so the refusal comes at once with a reason, and by every ``add``.
        """
        self._refuse(folder_owner_problem(self.folder))

    def prepare(self) -> None:
        """Create the folder if needed and make it private; refuse one another user could change."""
        # Ownership first: as root, chmod would succeed on another user's folder, who would
        # still own it (and so could rename or delete what it holds).
        self._refuse(folder_owner_problem(self.folder, check_own_mode=False))
        try:
            make_private_folders(self.folder)  # not mkdir(parents=True): see make_private_folders
            if self.folder.stat().st_mode & 0o077:
                os.chmod(self.folder, FOLDER_MODE)
        except OSError as exc:
            raise StorageError(f"cannot prepare the quarantine folder {self.folder}: {exc.strerror}") from None
        self._refuse(folder_owner_problem(self.folder))

    # -- writing ---------------------------------------------------------------------------

    def add(self, raw: bytes, verdict: "Verdict", source: str, *, now: _dt.datetime | None = None) -> str:
        """Keep ``raw``; returns its id. Keeping the same message again the same day returns the same id."""
        now = (now or _dt.datetime.now(_dt.timezone.utc)).astimezone(_dt.timezone.utc)
        digest = hashlib.sha256(raw).hexdigest()
        self.prepare()
        base = f"{now:%Y%m%d}-{digest[:_HASH_DIGITS]}"
        for attempt in range(1, 1000):
            entry_id = base if attempt == 1 else f"{base}-{attempt}"
            message = self._message_path(entry_id)
            if _write_new(message, raw):
                break
            if _same_content(message, raw):
                if self._metadata_path(entry_id).exists():
                    return entry_id  # kept already
                break  # an earlier add stopped before its metadata: complete it
        else:
            raise StorageError(f"{self.folder}: too many different messages share the id {base}")
        subject, sender, message_id = _summary_headers(raw)
        entry = Entry(
            id=entry_id,
            created=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            source=source,
            verdict=verdict.status.value,
            detections=[{"name": f.name, "detector": f.detector, "part": f.part} for f in verdict.findings],
            incomplete=[{"reason": i.reason.value, "part": i.part, "detail": i.detail} for i in verdict.incomplete],
            size=len(raw),
            sha256=digest,
            subject=subject,
            sender=sender,
            message_id=message_id,
        )
        metadata = json.dumps(entry.to_json(), indent=2, sort_keys=True).encode() + b"\n"
        write_atomic(self._metadata_path(entry_id), metadata, FILE_MODE)
        return entry_id

    def delete(self, entry_id: str) -> Entry:
        """Remove an entry (metadata first, so it is never listed half-deleted); returns what it was."""
        entry = self.entry(entry_id)
        for path in (self._metadata_path(entry.id), self._message_path(entry.id)):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StorageError(f"cannot delete {path}: {exc.strerror}") from None
        fsync_folder(self.folder)
        return entry

    def restore(self, entry_id: str, to: Path | None = None) -> Path:
        """Write the original to ``to`` (a file, or a folder for ``ID.eml``; default: ``./ID.eml``).

        Never overwrites a file; the bytes are checked against the stored SHA-256 first.
        """
        entry, raw = self.get(entry_id)
        target = Path.cwd() if to is None else Path(to)
        if target.is_dir():
            target = target / f"{entry.id}.eml"
        if not _write_new(target, raw):
            raise StorageError(f"{target} exists already; choose another --to or remove it")
        return target

    # -- reading ---------------------------------------------------------------------------

    def list(self) -> list[Entry]:
        """Every complete entry, oldest first. An unreadable metadata file is skipped with a warning."""
        if not self.folder.is_dir():
            return []
        entries = []
        for path in sorted(self.folder.glob("*.json")):
            if not _ID.fullmatch(path.stem):
                continue
            try:
                entries.append(Entry.from_json(json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("skipping unreadable quarantine entry %s: %s", path, exc)
        return sorted(entries, key=lambda e: (e.created, e.id))

    def entry(self, entry_id: str) -> Entry:
        """The entry with this id, or the only one whose id starts with it."""
        entry_id = entry_id.strip()
        if _ID.fullmatch(entry_id) and self._metadata_path(entry_id).exists():
            return self._read_entry(entry_id)
        if re.fullmatch(r"[0-9a-f-]{4,}", entry_id):
            matches = [e for e in self.list() if e.id.startswith(entry_id)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise UsageError(f"{entry_id!r} is the start of {len(matches)} quarantine ids: "
                                 + ", ".join(e.id for e in matches[:5]))
        raise QuarantineNotFound(f"no quarantined message with id {entry_id!r} in {self.folder} "
                                 "(see 'mailguard quarantine list')")

    def get(self, entry_id: str) -> tuple[Entry, bytes]:
        """The entry and its original bytes, checked against the stored SHA-256."""
        entry = self.entry(entry_id)
        try:
            raw = self._message_path(entry.id).read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read quarantined message {entry.id}: {exc.strerror}") from None
        if entry.sha256 and hashlib.sha256(raw).hexdigest() != entry.sha256:
            raise StorageError(f"quarantined message {entry.id} was changed on disk (SHA-256 differs)")
        return entry, raw

    # -- internals -------------------------------------------------------------------------

    def _message_path(self, entry_id: str) -> Path:
        return self.folder / f"{entry_id}.eml"

    def _metadata_path(self, entry_id: str) -> Path:
        return self.folder / f"{entry_id}.json"

    def _read_entry(self, entry_id: str) -> Entry:
        try:
            return Entry.from_json(json.loads(self._metadata_path(entry_id).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise StorageError(f"cannot read quarantine entry {entry_id}: {exc}") from None

    def _refuse(self, problem: str | None) -> None:
        if problem is not None:
            raise UnsafeQuarantine(
                f"refusing the quarantine folder {self.folder}: {problem}, so another user could rename or "
                "delete the originals kept there. Give it to the user mailguard runs as (chown, chmod go-w), "
                "or set tools.quarantine.path to a folder of that user's own")


def headers_of(raw: bytes) -> list[tuple[str, str]]:
    """The message's header fields (unfolded, RFC 2047 decoded for display), in order."""
    from email.header import decode_header, make_header

    end = _header_end(raw)
    text = raw[:end].decode("utf-8", "surrogateescape")
    fields: list[tuple[str, str]] = []
    for line in re.split(r"\r?\n", text):
        if line[:1] in (" ", "\t") and fields:  # RFC 5322 §2.2.3: folded continuation
            name, value = fields[-1]
            fields[-1] = (name, value + " " + line.strip())
        elif ":" in line:
            name, _, value = line.partition(":")
            fields.append((name.strip(), value.strip()))
    decoded = []
    for name, value in fields:
        try:
            value = str(make_header(decode_header(value)))
        except (ValueError, LookupError, UnicodeError):
            pass  # shown as it is
        decoded.append((name, value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")))
    return decoded


def _header_end(raw: bytes) -> int:
    head = raw[:MAX_HEADER_BYTES]
    ends = [i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if i >= 0]
    return min(ends) if ends else len(head)


def _summary_headers(raw: bytes) -> tuple[str, str, str]:
    wanted = {"subject": "", "from": "", "message-id": ""}
    for name, value in headers_of(raw):
        key = name.lower()
        if key in wanted and not wanted[key]:
            wanted[key] = value[:MAX_SUMMARY_LENGTH]
    return wanted["subject"], wanted["from"], wanted["message-id"]


def _temporary_beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def _create_synced(path: Path, data: bytes) -> None:
    """Create ``path`` (FileExistsError if it exists) holding ``data``, on disk; a file that
    could not be written whole is removed again."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError:
        path.unlink(missing_ok=True)
        raise


def _write_temporary(path: Path, data: bytes) -> Path:
    temporary = _temporary_beside(path)
    try:
        _create_synced(temporary, data)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror}") from None
    return temporary


def _write_new(path: Path, data: bytes) -> bool:
    """Write ``path`` atomically unless it exists; False (and nothing written) when it does."""
    temporary = _write_temporary(path, data)
    try:
        os.link(temporary, path)  # atomic, and never replaces an existing file
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV):
            raise StorageError(f"cannot write {path}: {exc.strerror}") from None
        return _write_exclusive(path, data)  # a file system without hard links
    finally:
        temporary.unlink(missing_ok=True)
    fsync_folder(path.parent)
    return True


def _write_exclusive(path: Path, data: bytes) -> bool:
    try:
        _create_synced(path, data)
    except FileExistsError:
        return False
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror}") from None
    fsync_folder(path.parent)
    return True


def _same_content(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False
