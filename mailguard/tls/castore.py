"""Where the interception CA lives on disk, and init / load / rotate.

Layout under the state folder (``STATE/ca``, mode 0700)::

    ca/active                       id of the CA that signs leaves now
    ca/<id>/ca.pem                  its certificate (0644: the public half, safe to read)
    ca/<id>/ca.key                  its private key, PKCS#8 PEM, 0600, written atomically
    ca/<id>/leaves/<sha256>.pem     cached leaves (certificate + leaf key, 0600)
    ca/trust-installs.json          what ``ca install`` put into system trust stores

``<id>`` is ``<UTC creation time>-<first 8 hex of the SHA-256 fingerprint>``. ``rotate`` makes a
new CA and keeps the old folder with its certificate, so ``ca show`` and ``ca uninstall`` still
know it while clients keep trusting it; the old key and leaves are destroyed, because nothing
needs them any more and a key that is not there cannot leak
(docs/pitfalls.md#the-ca-key).
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mailguard.errors import TLSSetupError
from mailguard.tls.ca import CA_BACKDATE, CertificateAuthority, KeyType, PrivateKey, create_ca
from mailguard.files import PUBLIC_FILE_MODE, private_dir, write_atomic

CA_DIR_NAME = "ca"
ACTIVE_FILE = "active"
CERT_FILE = "ca.pem"
KEY_FILE = "ca.key"
LEAVES_DIR = "leaves"
TRUST_RECORD_FILE = "trust-installs.json"
#: A CA file larger than this is not ours; refuse it rather than parse it.
MAX_CA_FILE_SIZE = 64 * 1024


def ca_dir(state_dir: Path) -> Path:
    return state_dir / CA_DIR_NAME


@dataclass(frozen=True)
class StoredCA:
    """A CA as found on disk: the material plus where its files are."""

    ca: CertificateAuthority
    folder: Path

    @property
    def id(self) -> str:
        return self.folder.name

    @property
    def cert_path(self) -> Path:
        return self.folder / CERT_FILE

    @property
    def key_path(self) -> Path:
        return self.folder / KEY_FILE

    @property
    def leaves_dir(self) -> Path:
        return self.folder / LEAVES_DIR


class CAStore:
    """The CA folder of one install."""

    def __init__(self, state_dir: Path) -> None:
        self.root = ca_dir(state_dir)

    @property
    def trust_record_path(self) -> Path:
        return self.root / TRUST_RECORD_FILE

    def exists(self) -> bool:
        return (self.root / ACTIVE_FILE).is_file()

    # -- reading ---------------------------------------------------------------------------

    def active(self) -> StoredCA:
        """The CA that signs leaves; TLSSetupError with what to run when there is none."""
        try:
            ca_id = _read_small(self.root / ACTIVE_FILE).decode("ascii").strip()
        except FileNotFoundError:
            raise TLSSetupError(
                f"there is no interception CA in {self.root} yet; create one with: mailguard ca init"
            ) from None
        folder = self.root / ca_id
        if not ca_id or os.sep in ca_id or not folder.is_dir():
            raise TLSSetupError(f"{self.root / ACTIVE_FILE} names a CA that is not there: {ca_id!r}")
        return self._load(folder, with_key=True)

    def all(self) -> list[StoredCA]:
        """Every CA still on disk, the active one included, oldest first (keys not loaded)."""
        if not self.root.is_dir():
            return []
        found = [
            self._load(entry, with_key=False)
            for entry in sorted(self.root.iterdir())
            if entry.is_dir() and (entry / CERT_FILE).is_file()
        ]
        return sorted(found, key=lambda stored: stored.ca.not_before)

    def _load(self, folder: Path, *, with_key: bool) -> StoredCA:
        cert_path = folder / CERT_FILE
        try:
            certificate = x509.load_pem_x509_certificate(_read_small(cert_path))
        except (OSError, ValueError) as exc:
            raise TLSSetupError(f"cannot read the CA certificate {cert_path}: {exc}") from None
        key = None
        if with_key:
            key = _load_key(folder / KEY_FILE)
            if key.public_key().public_numbers() != certificate.public_key().public_numbers():
                raise TLSSetupError(f"{folder / KEY_FILE} is not the key of {cert_path}")
        return StoredCA(ca=CertificateAuthority(certificate=certificate, key=key), folder=folder)

    # -- writing ---------------------------------------------------------------------------

    def init(
        self, *, key_type: KeyType = "ec", name_constraints: Sequence[str] = (), force: bool = False,
        now: datetime | None = None,
    ) -> StoredCA:
        """Create the CA; with ``force`` the existing ones are destroyed (files and keys)."""
        if self.exists() and not force:
            raise TLSSetupError(
                f"an interception CA already exists in {self.root}; use --force to replace it "
                "(or 'mailguard ca rotate' to keep the old one trusted meanwhile)"
            )
        previous = self.all()
        stored = self._write_new(create_ca(key_type=key_type, name_constraints=name_constraints, now=now))
        for old in previous:
            if old.folder != stored.folder:
                shutil.rmtree(old.folder, ignore_errors=True)
        return stored

    def rotate(
        self, *, key_type: KeyType | None = None, name_constraints: Sequence[str] = (),
        now: datetime | None = None,
    ) -> tuple[StoredCA, StoredCA]:
        """A new active CA; the old one keeps its certificate but loses its key and leaves."""
        old = self.active()
        new = self._write_new(create_ca(
            key_type=key_type or old.ca.key_type, name_constraints=name_constraints, now=now,
        ))
        old.key_path.unlink(missing_ok=True)
        shutil.rmtree(old.leaves_dir, ignore_errors=True)
        return old, new

    def _write_new(self, ca: CertificateAuthority) -> StoredCA:
        private_dir(self.root)
        created = (ca.not_before + CA_BACKDATE).astimezone(timezone.utc)
        folder = private_dir(self.root / f"{created:%Y%m%dT%H%M%SZ}-{ca.fingerprint[:8]}")
        key_pem = ca.signing_key().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
        )
        # Key first: a CA certificate without its key on disk would be useless, the reverse
        # is never observable because "active" is switched last.
        write_atomic(folder / KEY_FILE, key_pem)
        write_atomic(folder / CERT_FILE, ca.certificate.public_bytes(serialization.Encoding.PEM),
                     mode=PUBLIC_FILE_MODE)
        write_atomic(self.root / ACTIVE_FILE, folder.name.encode("ascii") + b"\n", mode=PUBLIC_FILE_MODE)
        return StoredCA(ca=ca, folder=folder)


def _read_small(path: Path) -> bytes:
    with open(path, "rb") as handle:
        data = handle.read(MAX_CA_FILE_SIZE + 1)
    if len(data) > MAX_CA_FILE_SIZE:
        raise TLSSetupError(f"{path} is larger than {MAX_CA_FILE_SIZE} bytes; not a mailguard CA file")
    return data


def _load_key(path: Path) -> PrivateKey:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise TLSSetupError(f"the CA key {path} is missing; create a new CA with: mailguard ca init --force") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        # Like ssh with a private key: a key others could read may already be copied.
        raise TLSSetupError(
            f"the CA key {path} can be read by other users (mode {stat.S_IMODE(mode):o}); "
            f"fix it with: chmod 600 {path} (and consider 'mailguard ca rotate')"
        )
    try:
        key = serialization.load_pem_private_key(_read_small(path), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise TLSSetupError(f"cannot read the CA key {path}: {exc}") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise TLSSetupError(f"the CA key {path} is neither EC nor RSA")
    return key
