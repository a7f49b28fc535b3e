"""What the engine detects with: every signature source, and the generation they make together.

A *source* is one thing verdicts depend on: the built-in EICAR signature and heuristics (their
version is mailguard's), each ClamAV-format signature file and YARA rule file (their version is
a SHA-256 of the content), and clamd (its database version and date, from ``VERSION``). The
*generation* is a short digest of all of them plus the settings that add findings
(heuristics, the blocked attachment types): two verdicts made under the same generation were
made with the same signatures. It is what

- ``mailguard status`` and the ``scan`` summaries show (sources, counts, ages, warnings),
- JSON and SARIF reports name, so a CI result can be reproduced and compared,
- the IMAP verdict cache compares, to scan a message again after an update
  (``detection-engine.rescan-after-update``, proxy/imap_cache.py).

``prepare`` turns the policy read from the settings into the one the engine runs: clamd's
``auto`` resolved (is a clamd answering?), and the generation filled in. It reads every signature
file once (hashing) and may wait on clamd's socket, so callers on an event loop run it in a
thread.

A clamd that answers ``VERSION`` without a database version runs unofficial databases only;
then only its engine version counts, and a change to those databases is not seen as an update.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from mailguard import __version__
from mailguard.scan.detectors import clamd
from mailguard.scan.policy import Policy

BUILT_IN = "built-in"
# clamd's states, as status shows them
CLAMD_IN_USE = "in use"
CLAMD_DOWN = "in use, not answering"
CLAMD_NOT_FOUND = "not found"
CLAMD_OFF = "off"

_YARA_RULE = re.compile(rb"^\s*(?:(?:private|global)\s+)*rule\s+\w", re.MULTILINE)


@dataclass(frozen=True)
class Source:
    detector: str                  # the detector that reads it: eicar, clamav-db, yara, clamd
    name: str                      # a file's path, clamd's address, or "built-in"
    version: str                   # "sha256:…" for files, clamd's VERSION, mailguard's version
    signatures: int | None = None  # signatures (or YARA rules) it holds, when known
    updated: datetime | None = None  # file modification time, clamd's database date
    problem: str = ""              # why it could not be read
    # (device, inode, size, mtime in ns) of a file when read: unchanged, it is not read again
    stamp: tuple[int, ...] = field(default=(), compare=False, repr=False)

    def to_json(self) -> dict[str, object]:
        return {"detector": self.detector, "name": self.name, "version": self.version,
                "signatures": self.signatures, "updated": _iso(self.updated), "problem": self.problem or None}


@dataclass(frozen=True)
class Clamd:
    state: str                     # CLAMD_IN_USE, CLAMD_DOWN, CLAMD_NOT_FOUND, CLAMD_OFF
    address: str                   # where it is used, or the first place looked at
    looked_at: tuple[str, ...] = ()
    version: clamd.ClamdVersion | None = None

    @property
    def in_use(self) -> bool:
        return self.state in (CLAMD_IN_USE, CLAMD_DOWN)

    def to_json(self) -> dict[str, object]:
        v = self.version
        return {"state": self.state, "address": self.address, "looked_at": list(self.looked_at),
                "version": v.engine if v else None, "database_version": v.database if v else None,
                "database_date": _iso(v.database_date) if v else None}


@dataclass(frozen=True)
class Inventory:
    sources: tuple[Source, ...]
    clamd: Clamd
    generation: str
    heuristics: bool = True
    blocked_attachment_types: tuple[str, ...] = ()
    engine_version: str = __version__
    checked: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def newest(self) -> datetime | None:
        """When the newest signatures (files or clamd's database) were made; None: built-in only."""
        dates = [s.updated for s in self.sources if s.detector != "eicar" and s.updated is not None]
        return max(dates) if dates else None

    @property
    def only_built_in(self) -> bool:
        """True when nothing beyond the EICAR test signature and heuristics can find malware."""
        return not self.clamd.in_use and not any(
            s.signatures for s in self.sources if s.detector in ("clamav-db", "yara"))

    def warnings(self, max_age: float, now: datetime | None = None) -> list[str]:
        now = now or datetime.now(timezone.utc)
        found: list[str] = []
        if self.only_built_in:
            found.append("only the built-in EICAR test signature and heuristics are active: real malware is "
                         "not recognised. Install clamav-daemon (freshclam keeps its signatures current) or set "
                         "detection-engine.signatures.paths or detection-engine.yara.rules")
        if self.clamd.state == CLAMD_DOWN:
            found.append(f"clamd at {self.clamd.address} does not answer: messages are unscanned meanwhile "
                         "(response.on-scan-error)")
        for source in self.sources:
            if source.problem:
                found.append(f"{source.name}: {source.problem}")
        newest = self.newest
        if newest is not None and (now - newest).total_seconds() > max_age:
            found.append(f"the newest signatures are {_age(now - newest)} old (from {_iso(newest)}), older than "
                         f"detection-engine.signatures.max-age: is freshclam (or your update job) running?")
        return found

    def to_json(self, max_age: float, now: datetime | None = None) -> dict[str, object]:
        """The detection section of ``status --json`` and of the ``scan`` summaries."""
        now = now or datetime.now(timezone.utc)
        newest = self.newest
        return {
            "engine_version": self.engine_version,
            "generation": self.generation,
            "detectors": self.detectors(),
            "sources": [s.to_json() for s in self.sources],
            "clamd": self.clamd.to_json(),
            "newest_signatures": _iso(newest),
            "signatures_age_seconds": round((now - newest).total_seconds()) if newest else None,
            "max_age_seconds": max_age,
            "warnings": self.warnings(max_age, now),
        }

    def detectors(self) -> list[dict[str, object]]:
        """Each active detector, with its signature count and sources."""
        rows: list[dict[str, object]] = []
        for name in ("eicar", "clamav-db", "yara"):
            mine = [s for s in self.sources if s.detector == name]
            if mine:
                rows.append({"name": name, "signatures": sum(s.signatures or 0 for s in mine),
                             "sources": [s.name for s in mine]})
        if self.heuristics:
            rows.append({"name": "heuristics", "signatures": None, "sources": [BUILT_IN]})
        if self.clamd.in_use:
            rows.append({"name": "clamd", "signatures": None, "sources": [self.clamd.address]})
        if self.blocked_attachment_types:
            rows.append({"name": "policy", "signatures": len(self.blocked_attachment_types),
                         "sources": ["threatsense.options.blocked-attachment-types"]})
        return rows


def prepare(policy: Policy, previous: Inventory | None = None) -> tuple[Policy, Inventory]:
    """The policy the engine runs (clamd resolved, generation set) and what it detects with.

    ``previous``: the inventory in force, when this is a check while running. A clamd found once
    stays in use until the next reload even when it stops answering (it is being restarted, most
    likely: messages follow on-scan-error meanwhile), and its last known version counts then.
    """
    found = _clamd(policy, previous)
    if found.in_use:
        policy = replace(policy, clamd_enabled=True, clamd_address=found.address)
    else:
        policy = replace(policy, clamd_enabled=False)
    known = {(s.detector, s.name): s for s in previous.sources} if previous is not None else {}
    sources = (Source("eicar", BUILT_IN, __version__, 1),
               *_files("clamav-db", _signature_files(policy.signature_paths), _count_signatures, known),
               *_files("yara", _rule_files(policy.yara_rules), lambda data: len(_YARA_RULE.findall(data)), known))
    if found.in_use and found.version is not None:
        v = found.version
        sources += (Source("clamd", found.address, v.text, None, v.database_date),)
    inventory = Inventory(sources, found, "", policy.heuristics, policy.blocked_attachment_types)
    inventory = replace(inventory, generation=generation_of(inventory))
    return replace(policy, generation=inventory.generation), inventory


def generation_of(inventory: Inventory) -> str:
    lines = [f"mailguard {inventory.engine_version}", f"heuristics {inventory.heuristics}",
             "blocked " + ",".join(sorted(inventory.blocked_attachment_types))]
    lines += [f"{s.detector} {s.name} {s.version}" for s in inventory.sources]
    return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _clamd(policy: Policy, previous: Inventory | None) -> Clamd:
    if policy.clamd_enabled is False:
        return Clamd(CLAMD_OFF, policy.clamd_address)
    kept = previous.clamd if previous is not None and previous.clamd.in_use else None
    if kept is not None:
        answer = clamd.version(kept.address)
        if answer is None:
            return replace(kept, state=CLAMD_DOWN)
        return replace(kept, state=CLAMD_IN_USE, version=answer)
    looked_at = clamd.candidates(policy.clamd_address)
    located = clamd.locate(policy.clamd_address)
    if located is not None:
        return Clamd(CLAMD_IN_USE, located[0], looked_at, located[1])
    if policy.clamd_enabled is True:  # asked for: used, and unscanned until it answers
        return Clamd(CLAMD_DOWN, policy.clamd_address, looked_at)
    return Clamd(CLAMD_NOT_FOUND, policy.clamd_address, looked_at)


def _signature_files(paths: tuple[str, ...]) -> list[tuple[Path, str]]:
    from mailguard.scan.detectors.clamav_db import KNOWN_EXTENSIONS

    return _listed(paths, KNOWN_EXTENSIONS)


def _rule_files(paths: tuple[str, ...]) -> list[tuple[Path, str]]:
    from mailguard.scan.detectors.yara_rules import RULE_EXTENSIONS

    return _listed(paths, RULE_EXTENSIONS, any_file=True)


def _listed(paths: tuple[str, ...], extensions: set[str], any_file: bool = False) -> list[tuple[Path, str]]:
    """The files each path stands for (a folder: its files with a known extension, in name
    order), each with a problem ("" when none), as the detectors read them."""
    files: list[tuple[Path, str]] = []
    for entry in paths:
        path = Path(entry).expanduser()
        if path.is_dir():
            files += [(p, "") for p in sorted(path.iterdir()) if p.suffix.lower() in extensions and p.is_file()]
        elif path.is_file():
            files.append((path, "" if any_file or path.suffix.lower() in extensions else "unsupported file type"))
        else:
            files.append((path, "no such file or folder"))
    return files


def _files(detector: str, files: list[tuple[Path, str]], count, known: dict) -> list[Source]:  # noqa: ANN001
    """A source per file; one whose stamp is that of ``known`` (the last look) is not read again:
    the engine looks every minute, and signature files may be large."""
    sources = []
    for path, problem in files:
        if problem:
            sources.append(Source(detector, str(path), "", None, None, problem))
            continue
        try:
            info = os.stat(path)
            stamp = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
            before = known.get((detector, str(path)))
            if before is not None and before.stamp == stamp:
                sources.append(before)
                continue
            data = path.read_bytes()
        except OSError as exc:
            sources.append(Source(detector, str(path), "", None, None, f"cannot read: {exc.strerror}"))
            continue
        modified = datetime.fromtimestamp(info.st_mtime, timezone.utc)
        sources.append(Source(detector, str(path), "sha256:" + hashlib.sha256(data).hexdigest(), count(data),
                              modified, stamp=stamp))
    return sources


def _count_signatures(data: bytes) -> int:
    """Lines that are signatures (not blank, not comments), as clamav_db reads them."""
    return sum(1 for line in data.splitlines() if line.strip() and not line.lstrip().startswith(b"#"))


def _iso(when: datetime | None) -> str | None:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when is not None else None


def _age(delta) -> str:  # noqa: ANN001 - a timedelta
    days, seconds = delta.days, delta.seconds
    if days:
        return f"{days} day{'s' if days != 1 else ''}" + (f" {seconds // 3600} h" if seconds >= 3600 else "")
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
