"""The roots an upstream server's certificate must chain to.

The system store plus ``ssl-tls.trusted-ca-file``, minus every mailguard CA: once ``ca install`` put
our CA into the system store, a server presenting a leaf we (or a thief of our key) minted would
otherwise pass upstream validation (a chain that ends in one of our own CAs is never trusted:
docs/pitfalls.md#verifying-the-server). Building one explicit list also lets the stdlib handshake
(strict path) and the after-the-fact classification (permissive path) agree on what is trusted.
"""

from __future__ import annotations

import re
import ssl
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.hazmat.primitives import hashes, serialization

from mailguard.errors import TLSSetupError

#: A CA bundle larger than this is refused (the Debian bundle is about 200 KB).
MAX_BUNDLE_SIZE = 16 * 1024 * 1024
#: Files read from a hashed certificate folder (capath) when there is no bundle file.
MAX_CAPATH_FILES = 4096
_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


@dataclass(frozen=True)
class TrustAnchors:
    certificates: tuple[x509.Certificate, ...]

    def cadata(self) -> str:
        """All anchors as one PEM text, for ``SSLContext.load_verify_locations(cadata=...)``."""
        return "".join(cert.public_bytes(serialization.Encoding.PEM).decode("ascii") for cert in self.certificates)


def parse_pem_bundle(data: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle that parses; one odd entry does not spoil the rest."""
    certificates = []
    with warnings.catch_warnings():
        # Some long-lived roots in system bundles have non-positive serial numbers; cryptography
        # warns about each, but they are the system's choice, not ours to report.
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        for block in _PEM_BLOCK.findall(data):
            try:
                certificates.append(x509.load_pem_x509_certificate(block))
            except ValueError:
                continue
    return certificates


def _read_bundle(path: Path) -> bytes:
    with open(path, "rb") as handle:
        data = handle.read(MAX_BUNDLE_SIZE + 1)
    if len(data) > MAX_BUNDLE_SIZE:
        raise TLSSetupError(f"the CA bundle {path} is larger than {MAX_BUNDLE_SIZE} bytes")
    return data


def system_anchors() -> list[x509.Certificate]:
    """The roots OpenSSL would use by default (honours SSL_CERT_FILE / SSL_CERT_DIR)."""
    paths = ssl.get_default_verify_paths()
    if paths.cafile and Path(paths.cafile).is_file():
        return parse_pem_bundle(_read_bundle(Path(paths.cafile)))
    found: list[x509.Certificate] = []
    if paths.capath and Path(paths.capath).is_dir():
        for index, entry in enumerate(sorted(Path(paths.capath).iterdir())):
            if index >= MAX_CAPATH_FILES:
                break
            if entry.is_file():
                found += parse_pem_bundle(_read_bundle(entry))
    return found


def load_trust_anchors(
    trusted_ca_file: str = "",
    *,
    distrusted: Iterable[x509.Certificate] = (),
    include_system: bool = True,
) -> TrustAnchors:
    """System roots (unless ``include_system`` is off, for tests) plus the extra bundle, minus
    every certificate whose public key is one of ``distrusted`` (mailguard's own CAs)."""
    certificates: list[x509.Certificate] = system_anchors() if include_system else []
    if trusted_ca_file:
        path = Path(trusted_ca_file).expanduser()
        try:
            extra = parse_pem_bundle(_read_bundle(path))
        except OSError as exc:
            raise TLSSetupError(
                f"web-and-email.ssl-tls.trusted-ca-file: cannot read {path}: {exc.strerror or exc}"
            ) from None
        if not extra:
            raise TLSSetupError(f"web-and-email.ssl-tls.trusted-ca-file: {path} holds no PEM certificate")
        certificates += extra
    banned = {_spki_hash(cert) for cert in distrusted}
    unique: dict[bytes, x509.Certificate] = {}
    for cert in certificates:
        if _spki_hash(cert) not in banned:
            unique.setdefault(cert.fingerprint(hashes.SHA256()), cert)
    return TrustAnchors(certificates=tuple(unique.values()))


def _spki_hash(cert: x509.Certificate) -> bytes:
    # By key, not by certificate: a re-issued certificate for the same key is the same CA.
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return digest.finalize()

