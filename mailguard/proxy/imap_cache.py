"""The verdict and rewrite cache behind IMAP's promise that a message never changes.

"The combination of mailbox name, UIDVALIDITY, and UID must refer to a single,
immutable ... message ... RFC822.SIZE, envelope, body structure, and message texts
... MUST never change" (RFC 9051 §2.3.1.1;
docs/pitfalls.md#messages-never-change). So what a client was served
for (server, user, mailbox, UIDVALIDITY, UID) is remembered in STATE/imap-cache/, even
across restarts: a re-fetch is served from here, unscanned.

Repeat scan after update (``detection-engine.rescan-after-update``, on by default): each record
carries the signature generation its verdict was made with (scan/detectors/sources.py). A record
of another generation than the engine's is not served as it is: the message is fetched and
scanned again, and then (``served_before``)

- every finding of the new scan, as a (name, part) pair, was a finding of the old one (or the
  new scan finds nothing): the new verdict would remove or replace nothing the earlier served
  form still holds, so the client gets exactly what it got before, byte for byte (the
  immutability rule above), and the record moves to the new generation. Names alone would not
  do: an update may find the same family in another part, which the earlier form still holds;
- it finds something new (a name, or a known name in a part where it was not found before):
  the client gets the new verdict's form (the part removed, or a notice, per response.action),
  and the original goes to the quarantine. Here the immutability rule yields: malware is never
  served as it was. A client that kept its own copy of the message keeps it (we cannot reach
  it); one that fetches it again, in whole or in part, gets the cleaned form. A record of an
  earlier version, which kept names without parts, cannot tell: any finding gets the new form;
- it could not complete (``protocols/imap/served.py``, ``scan_message``): for a passing reason (clamd down, a
  time-out), the earlier form with on-scan-error = pass, a FETCH NO with block; nothing is
  restamped, and the next fetch tries again. For a lasting one (a limit), the new verdict's form
  (tagged unscanned, or a notice), recorded: an unscanned verdict never confirms an old record.

Each entry is a small JSON record (verdict, hashes, sizes), and, for a message that was
rewritten, the served bytes. Records are lines of one append-only log, ``records.log``
(``KEY JSON``, or ``KEY -`` when an entry is dropped; the last line of a key wins, and the log
is rewritten once most of it is dead). A message served unchanged keeps no copy on disk: a
re-fetch gets it from the server again, checks it against the recorded hash and serves it
without a rescan. That keeps no plaintext copy of every clean message in the state folder, and
spares the dearest part of an entry, creating a file (bench/imap.py). Blob files of unchanged
messages written by earlier versions are removed at start. A rewritten message keeps its blob
as long as its record lives (``max_records``, ``max_rewritten_bytes``); only a message whose
record was evicted is scanned again. The last served bytes are also kept in memory
(``max_memory_bytes``), for the chunk loops of Thunderbird and iOS
(docs/pitfalls.md#scan-before-release). Records of older versions, one ``KEY.json`` file each,
are still read. Files are 0600 in a 0700 folder: messages are private mail.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any


DEFAULT_MAX_REWRITTEN_BYTES = 1024 * 1024 * 1024
DEFAULT_MAX_RECORDS = 200_000
#: blobs kept in memory as well, for the chunk loops of Thunderbird and iOS
#: (docs/pitfalls.md#scan-before-release)
DEFAULT_MAX_MEMORY_BYTES = 64 * 1024 * 1024
LOG_NAME = "records.log"
#: the log is rewritten when it has more than this many lines and most of them are dead
COMPACT_MIN_LINES = 10_000
#: records kept parsed in memory, the most recently read or written: a message's record is
#: read by several steps of one fetch (cached? served before? its blob), each a pread and a
#: JSON parse otherwise (bench/live.py). About 1 KB each.
PARSED_RECORDS = 1024
#: and at most this many bytes of their log lines: a record with very many findings is large,
#: and one larger than this is parsed again on each read, not kept
PARSED_BYTES = 4 * 1024 * 1024
#: identities whose key is remembered: only short ones, as a mailbox name comes from the
#: client and may be long; a longer one is hashed again each time
REMEMBERED_KEY_MAX = 256


@dataclass(frozen=True)
class CacheRecord:
    status: str
    detections: list[str]
    reasons: list[str]
    original_sha256: str
    original_size: int
    served_sha256: str
    served_size: int
    #: the signatures the verdict was made with; "" in records of earlier versions
    generation: str = ""
    #: every finding as [name, part]; None in records of earlier versions (names only)
    located: list[list[str]] | None = None

    @property
    def unchanged(self) -> bool:
        return self.original_sha256 == self.served_sha256

    @classmethod
    def build(cls, status: str, detections: list[str], reasons: list[str], original: bytes,
              served: bytes, generation: str = "",
              located: Iterable[tuple[str, str]] = ()) -> "CacheRecord":
        original_hash = sha256(original)
        return cls(
            status=status,
            detections=list(detections),
            reasons=list(reasons),
            original_sha256=original_hash,
            original_size=len(original),
            # served unchanged: one hash of 100 KB, not two (it is most of the cost of an entry)
            served_sha256=original_hash if served is original else sha256(served),
            served_size=len(served),
            generation=generation,
            located=[[name, part] for name, part in sorted(set(located))],
        )


def _line(key: str, record: CacheRecord) -> bytes:
    """``KEY JSON`` and a line end: the log line for ``record`` (``vars``, not ``asdict``, which
    deep-copies every list on the way)."""
    return b"%s %s\n" % (key.encode(), json.dumps(vars(record)).encode())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def host_generation(host: Any) -> Callable[[], str | None]:
    """The generation records are judged by: the one ``host`` (the running engine) scans with
    now, or None (never stale) when rescan-after-update is off or the generation unknown."""
    def current() -> str | None:
        # A host without a scan policy (a test's stand-in) has no generation to compare.
        policy = getattr(host.config, "policy", None)
        return policy.generation if policy is not None and policy.rescan_after_update and policy.generation else None
    return current


def cache_key(server: str, user: str, mailbox: bytes, uidvalidity: int, uid: int) -> str:
    """A strong hash of the identity (no 32-bit shortcuts:
    docs/pitfalls.md#cache-keys-and-strong-hashes)."""
    if len(server) + len(user) + len(mailbox) > REMEMBERED_KEY_MAX:
        return _key(server, user, bytes(mailbox), uidvalidity, uid)
    try:
        return _remembered_key(server, user, mailbox, uidvalidity, uid)
    except TypeError:  # an unhashable part (a bytearray mailbox name): computed, not remembered
        return _key(server, user, bytes(mailbox), uidvalidity, uid)


def _key(server: str, user: str, mailbox: bytes, uidvalidity: int, uid: int) -> str:
    parts = [server.encode(), user.encode(), mailbox, b"%d" % uidvalidity, b"%d" % uid]
    return hashlib.sha256(b"\0".join(len(p).to_bytes(4, "big") + p for p in parts)).hexdigest()


# A message's key is asked for by several steps of each fetch (bench/live.py).
_remembered_key = functools.lru_cache(maxsize=4096)(_key)


class RewriteCache:
    def __init__(
        self,
        directory: Path,
        *,
        max_rewritten_bytes: int = DEFAULT_MAX_REWRITTEN_BYTES,
        max_records: int = DEFAULT_MAX_RECORDS,
        max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
    ) -> None:
        self.directory = directory
        self.max_rewritten_bytes = max_rewritten_bytes
        self.max_records = max_records
        self.max_memory_bytes = max_memory_bytes
        self._lock = threading.Lock()
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._memory_bytes = 0
        #: records parsed lately, most recent last, each with its log line's length
        #: (PARSED_RECORDS, PARSED_BYTES)
        self._parsed: OrderedDict[str, tuple[CacheRecord, int]] = OrderedDict()
        self._parsed_bytes = 0
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
        # inventories, oldest first, so eviction needs no directory walk
        self._records: OrderedDict[str, None] = OrderedDict()
        self._rewritten: OrderedDict[str, int] = OrderedDict()
        self._rewritten_bytes = 0
        #: sub-folders known to exist (one mkdir per folder and process, not per entry)
        self._folders: set[str] = set()
        #: where each record's line is in the log: (offset, length)
        self._offsets: dict[str, tuple[int, int]] = {}
        self._log_path = directory / LOG_NAME
        self._log = -1
        self._log_lines = 0
        self._load_inventory()
        self._log = os.open(self._log_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        self._log_end = os.fstat(self._log).st_size
        #: the signature generation records must have to be served as they are (None: any);
        #: ``follow`` ties it to the running engine
        self.current_generation: Callable[[], str | None] = lambda: None
        if self._log_lines > COMPACT_MIN_LINES and self._log_lines > 2 * len(self._offsets):
            self._compact()

    def _load_inventory(self) -> None:
        entries = []
        for path in self.directory.glob("*/*"):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            entries.append((stat.st_mtime, path, stat.st_size))
        for _, path, size in sorted(entries):
            key, _, kind = path.name.partition(".")
            if kind == "json":
                self._records[key] = None
            elif kind == "rewritten":
                self._rewritten[key] = size
                self._rewritten_bytes += size
            elif kind == "blob":
                self._unlink(path)  # an unchanged message's copy, from an earlier version
        try:
            log = self._log_path.read_bytes()
        except FileNotFoundError:
            return
        offset = 0
        for line in log.splitlines(keepends=True):
            key, _, value = line.rstrip(b"\n").partition(b" ")
            if line.endswith(b"\n") and len(key) == 64:  # a torn last line is not a record
                name = key.decode("ascii", "replace")
                self._log_lines += 1
                if value == b"-":
                    self._offsets.pop(name, None)
                    self._records.pop(name, None)
                else:
                    self._offsets[name] = (offset, len(line))
                    self._records.pop(name, None)
                    self._records[name] = None
            offset += len(line)

    def _path(self, key: str, kind: str) -> Path:
        return self.directory / key[:2] / f"{key}.{kind}"

    def follow(self, host: Any) -> None:
        """Judge records by the generation of the engine ``host`` (see ``host_generation``)."""
        self.current_generation = host_generation(host)

    def record(self, key: str) -> CacheRecord | None:
        """The record for ``key`` when it may be served as it is (None after an update: the
        message is scanned again, and ``served_before`` decides what the client gets)."""
        found = self._record(key)
        if found is not None:
            current = self.current_generation()
            if current is not None and found.generation != current:
                return None
        return found

    def served_before(self, key: str, raw: bytes, located: Iterable[tuple[str, str]]) -> bytes | None:
        """After an update, what the client was served for ``raw`` before, when each of the new
        scan's findings, ``located`` as (name, part), was a finding of the earlier verdict (see
        the module docstring); None when the client gets the new verdict's form (or there was
        no earlier record, or it is gone)."""
        earlier = self._record(key)
        current = self.current_generation()
        if earlier is None or current is None or earlier.generation == current:
            return None
        if sha256(raw) != earlier.original_sha256:
            return None
        found = {(name, part) for name, part in located}
        if found and (earlier.located is None or not found <= {(n, p) for n, p in earlier.located}):
            return None
        return raw if earlier.unchanged else self.blob(key, earlier)

    def restamp(self, key: str, generation: str) -> None:
        """Move ``key``'s record to ``generation``: a rescan confirmed what it says."""
        earlier = self._record(key)
        if earlier is None or earlier.generation == generation:
            return
        restamped = replace(earlier, generation=generation)
        line = _line(key, restamped)
        with self._lock:
            self._append(key, line)
            self._keep_parsed(key, restamped, len(line))

    def _record(self, key: str) -> CacheRecord | None:
        if key not in self._records:
            # Every record this process may read is in the inventory (read at start, kept by
            # put): a new message costs no failed open, which is slow on some file systems.
            return None
        try:
            with self._lock:  # not while the log is being rewritten
                parsed = self._parsed.get(key)
                if parsed is not None:
                    self._parsed.move_to_end(key)
                    return parsed[0]
                where = self._offsets.get(key)
                line = None if where is None else os.pread(self._log, where[1], where[0])
            if line is None:
                line = self._path(key, "json").read_bytes()
                data = json.loads(line)
            else:
                if not line.startswith(key.encode() + b" "):
                    return None
                data = json.loads(line[len(key) + 1 :])
            found = CacheRecord(**data)
        except (FileNotFoundError, ValueError, TypeError, OSError):
            return None
        with self._lock:
            if key in self._records and self._offsets.get(key) == where:  # not replaced meanwhile
                self._keep_parsed(key, found, len(line))
        return found

    def _keep_parsed(self, key: str, record: CacheRecord, size: int) -> None:
        """Remember ``record`` as ``key``'s, parsed, ``size`` bytes as a log line (under the lock)."""
        self._drop_parsed(key)
        if size > PARSED_BYTES:
            return
        self._parsed[key] = (record, size)
        self._parsed_bytes += size
        while len(self._parsed) > PARSED_RECORDS or self._parsed_bytes > PARSED_BYTES:
            self._parsed_bytes -= self._parsed.popitem(last=False)[1][1]

    def _drop_parsed(self, key: str) -> None:
        dropped = self._parsed.pop(key, None)
        if dropped is not None:
            self._parsed_bytes -= dropped[1]

    def blob(self, key: str, record: CacheRecord) -> bytes | None:
        """The served bytes, when still kept and intact (on disk: rewritten messages only)."""
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
        if record.unchanged:
            return None
        try:
            data = self._path(key, "rewritten").read_bytes()
        except FileNotFoundError:
            return None
        if sha256(data) != record.served_sha256:
            return None  # damaged on disk: the caller fetches and checks the original again
        self._remember(key, data)
        return data

    def put(self, key: str, record: CacheRecord, served: bytes) -> None:
        if not record.unchanged:
            if key[:2] not in self._folders:
                (self.directory / key[:2]).mkdir(exist_ok=True, mode=0o700)
                self._folders.add(key[:2])
            # The served bytes first, then the record that vouches for them (its hash).
            self._write(self._path(key, "rewritten"), served)
        line = _line(key, record)
        self._forget(key)  # a record replaced after an update: its old bytes must not be served
        self._remember(key, served)
        with self._lock:
            self._append(key, line)
            self._keep_parsed(key, record, len(line))
            self._records[key] = None
            self._records.move_to_end(key)
            if not record.unchanged:
                self._rewritten_bytes += len(served) - self._rewritten.pop(key, 0)
                self._rewritten[key] = len(served)
            self._evict()

    def _forget(self, key: str) -> None:
        with self._lock:
            dropped = self._memory.pop(key, None)
            if dropped is not None:
                self._memory_bytes -= len(dropped)

    def _remember(self, key: str, data: bytes) -> None:
        if len(data) > self.max_memory_bytes:
            return
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return
            self._memory[key] = data
            self._memory_bytes += len(data)
            while self._memory_bytes > self.max_memory_bytes:
                _, dropped = self._memory.popitem(last=False)
                self._memory_bytes -= len(dropped)

    def _evict(self) -> None:
        while self._rewritten_bytes > self.max_rewritten_bytes and self._rewritten:
            self._drop_entry(next(iter(self._rewritten)))
        while len(self._records) > self.max_records:
            self._drop_entry(next(iter(self._records)))

    def close(self) -> None:
        if self._log >= 0:
            os.close(self._log)
            self._log = -1

    def __del__(self) -> None:
        self.close()

    def _append(self, key: str | None, line: bytes) -> None:
        """One log line (under the lock); ``key``: the line is that key's record."""
        os.write(self._log, line)
        if key is not None:
            self._offsets[key] = (self._log_end, len(line))
        self._log_end += len(line)
        self._log_lines += 1
        if self._log_lines > COMPACT_MIN_LINES and self._log_lines > 2 * len(self._offsets):
            self._compact()

    def _compact(self) -> None:
        """Rewrite the log with the live records only (a crash leaves the old log or the new)."""
        lines, offsets, offset = [], {}, 0
        for key, (start, length) in self._offsets.items():
            line = os.pread(self._log, length, start)
            lines.append(line)
            offsets[key] = (offset, length)
            offset += length
        temp = self._log_path.with_name(LOG_NAME + ".tmp")
        self._write(temp, b"".join(lines))
        os.replace(temp, self._log_path)
        os.close(self._log)
        self._log = os.open(self._log_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        self._offsets, self._log_end, self._log_lines = offsets, offset, len(offsets)

    def _drop_entry(self, key: str) -> None:
        self._records.pop(key, None)
        self._drop_parsed(key)
        if self._offsets.pop(key, None) is not None:
            self._append(None, key.encode() + b" -\n")
        self._unlink(self._path(key, "json"))
        if key in self._rewritten:
            self._rewritten_bytes -= self._rewritten.pop(key)
            self._unlink(self._path(key, "rewritten"))
        dropped = self._memory.pop(key, None)
        if dropped is not None:
            self._memory_bytes -= len(dropped)

    @staticmethod
    def _unlink(path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        """Written in place, without a temporary file and a rename: creating a file is most of
        the cost of an entry (bench/imap.py), and a torn file is harmless here. A torn record
        is not valid JSON and reads as no record (the message is scanned again); a torn blob
        fails the record's hash and is fetched again; neither is ever served."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
