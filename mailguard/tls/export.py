"""Exporting the CA certificate for clients to trust: PEM, DER or a certificate-only PKCS#12.

Only the certificate ever leaves: these functions take an ``x509.Certificate``, not a
``CertificateAuthority``, so the key is not even within reach
(docs/pitfalls.md#the-ca-key).
"""

from __future__ import annotations

from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from mailguard.errors import UsageError

ExportFormat = Literal["pem", "der", "p12"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("pem", "der", "p12")


def export_certificate(certificate: x509.Certificate, fmt: str) -> bytes:
    if fmt == "pem":
        return certificate.public_bytes(serialization.Encoding.PEM)
    if fmt == "der":
        return certificate.public_bytes(serialization.Encoding.DER)
    if fmt == "p12":
        # A PKCS#12 with the certificate as a trusted "CA" bag and no key bag. No password:
        # there is nothing secret in it, and tools (Windows, macOS Keychain) import it as is.
        return pkcs12.serialize_key_and_certificates(
            name=b"mailguard interception CA", key=None, cert=None, cas=[certificate],
            encryption_algorithm=serialization.NoEncryption(),
        )
    raise UsageError(f"unknown export format {fmt!r}; use one of: {', '.join(EXPORT_FORMATS)}")
