"""Adding the CA to the system trust store, and taking out exactly what was added.

Debian/Ubuntu: a ``.crt`` file in ``/usr/local/share/ca-certificates`` + ``update-ca-certificates``.
Fedora/RHEL: a ``.pem`` file in ``/etc/pki/ca-trust/source/anchors`` + ``update-ca-trust extract``.

Every install is recorded (``STATE/ca/trust-installs.json``: file, fingerprint, refresh
root) before the store is refreshed, so ``uninstall`` removes precisely those files, even for
CAs that were rotated away since — the Superfish root outlived its software
(docs/pitfalls.md#the-ca-key).

``MAILGUARD_TRUST_ROOT`` puts the whole store under another folder (for tests, images,
chroots); the Debian refresh then runs with ``--sysroot``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from mailguard.errors import TLSSetupError
from mailguard.tls.castore import StoredCA
from mailguard.files import PUBLIC_FILE_MODE, write_atomic

TRUST_ROOT_ENV = "MAILGUARD_TRUST_ROOT"
#: The refresh commands print a few lines; more than this is cut from error messages.
MAX_TOOL_OUTPUT = 4000
REFRESH_TIMEOUT = 120.0
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin"])


@dataclass(frozen=True)
class TrustStoreKind:
    name: str
    anchors_dir: str   # relative to the root
    suffix: str        # update-ca-certificates only picks up *.crt
    refresh: tuple[str, ...]
    #: After a removal. Debian's tool keeps the symlinks and hash links of a deleted local
    #: certificate unless told --fresh (update-ca-certificates(8)).
    refresh_after_removal: tuple[str, ...]


DEBIAN = TrustStoreKind("debian", "usr/local/share/ca-certificates", ".crt",
                        ("update-ca-certificates",), ("update-ca-certificates", "--fresh"))
FEDORA = TrustStoreKind("fedora", "etc/pki/ca-trust/source/anchors", ".pem",
                        ("update-ca-trust", "extract"), ("update-ca-trust", "extract"))
KINDS = {kind.name: kind for kind in (DEBIAN, FEDORA)}


@dataclass(frozen=True)
class InstallRecord:
    fingerprint: str
    path: str
    store: str
    root: str

    def to_json(self) -> dict[str, object]:
        return {"fingerprint": self.fingerprint, "path": self.path, "store": self.store, "root": self.root}


def trust_root() -> Path:
    return Path(os.environ.get(TRUST_ROOT_ENV) or "/")


def detect_store(root: Path) -> TrustStoreKind:
    for kind, marker in ((DEBIAN, "usr/local/share/ca-certificates"), (FEDORA, "etc/pki/ca-trust")):
        if (root / marker).is_dir():
            return kind
    raise TLSSetupError(
        f"no supported system trust store under {root} (looked for Debian/Ubuntu "
        f"{DEBIAN.anchors_dir} and Fedora/RHEL {FEDORA.anchors_dir}); add the CA by hand from "
        "'mailguard ca export'"
    )


def refresh_command(kind: TrustStoreKind, root: Path, *, after_removal: bool = False) -> list[str]:
    base = kind.refresh_after_removal if after_removal else kind.refresh
    program = shutil.which(base[0], path=_SEARCH_PATH) or base[0]
    command = [program, *base[1:]]
    if root != Path("/"):
        if kind is not DEBIAN:
            return []  # update-ca-trust has no alternative root: the file is placed, no refresh
        command += ["--sysroot", str(root)]
    return command


def _need_write_access(folder: Path, command: str) -> None:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise TLSSetupError(
            f"changing the system trust store needs root (cannot write {folder}); "
            f"run: sudo mailguard ca {command} (with the same --config or MAILGUARD_HOME, if any)"
        )


def _run(command: list[str]) -> str:
    if not command:
        return ""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=REFRESH_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TLSSetupError(f"{' '.join(command)} failed: {exc}") from None
    output = (done.stdout + done.stderr)[-MAX_TOOL_OUTPUT:]
    if done.returncode != 0:
        raise TLSSetupError(f"{' '.join(command)} failed (exit {done.returncode}): {output.strip()}")
    return output


def read_records(record_path: Path) -> list[InstallRecord]:
    try:
        data = json.loads(record_path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise TLSSetupError(f"cannot read {record_path}: {exc}") from None
    return [InstallRecord(**entry) for entry in data.get("installs", [])]


def _write_records(record_path: Path, records: list[InstallRecord]) -> None:
    text = json.dumps({"installs": [r.to_json() for r in records]}, indent=2) + "\n"
    write_atomic(record_path, text.encode())


def install(stored: StoredCA, record_path: Path, root: Path | None = None) -> InstallRecord:
    """Put the CA certificate into the system store (idempotent) and record it."""
    root = root or trust_root()
    kind = detect_store(root)
    folder = root / kind.anchors_dir
    _need_write_access(folder, "install")
    fingerprint = stored.ca.fingerprint
    path = folder / f"mailguard-{fingerprint[:8]}{kind.suffix}"
    records = read_records(record_path)
    record = InstallRecord(fingerprint, str(path), kind.name, str(root))
    if record not in records:
        records.append(record)
    # Record first: if the refresh fails, uninstall still knows about the file.
    _write_records(record_path, records)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(path, stored.ca.certificate.public_bytes(serialization.Encoding.PEM), mode=PUBLIC_FILE_MODE)
    _run(refresh_command(kind, root))
    return record


def uninstall(record_path: Path) -> list[InstallRecord]:
    """Remove every file ``install`` recorded (only if it still holds our certificate)."""
    records = read_records(record_path)
    for record in records:
        _need_write_access(Path(record.path).parent, "uninstall")
    refreshes: list[list[str]] = []
    for record in records:
        path = Path(record.path)
        if _holds(path, record.fingerprint):
            path.unlink()
        kind = KINDS.get(record.store)
        command = refresh_command(kind, Path(record.root), after_removal=True) if kind else []
        if command and command not in refreshes:
            refreshes.append(command)
    _write_records(record_path, [])
    for command in refreshes:
        _run(command)
    return records


def _holds(path: Path, fingerprint: str) -> bool:
    """Is ``path`` still the file we wrote? Someone else's file of the same name stays."""
    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return False
    return certificate.fingerprint(hashes.SHA256()).hex() == fingerprint


def nss_instructions(cert_hint: str, nickname: str) -> str:
    """How to add the CA to Thunderbird / Firefox, which keep their own NSS store."""
    return "\n".join([
        "Thunderbird and Firefox keep their own certificate store. For each profile (close the program first):",
        f"  mailguard ca export --output {cert_hint}",
        f"  certutil -A -d sql:PROFILE_DIR -n '{nickname}' -t 'C,,' -i {cert_hint}",
        "where PROFILE_DIR is a folder under ~/.thunderbird/ or ~/.mozilla/firefox/ (with cert9.db);",
        "remove it later with: certutil -D -d sql:PROFILE_DIR -n '" + nickname + "'",
        "(or in the program: Settings > Privacy & Security > Certificates > Manage Certificates > Authorities > Import).",
    ])
