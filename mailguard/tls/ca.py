"""The interception CA itself: creating one and reading what it is.

Pure functions of their arguments (the clock is a parameter), so tests can mint CAs that expire
tomorrow. Where the CA lives on disk is ``castore.py``; exporting it is ``export.py``.

Security choices (docs/pitfalls.md#the-ca-key, docs/pitfalls.md#name-constraints):

- every install makes its own key, here, from the OS random source; nothing is shipped;
- the CA can only sign end-entity certificates (pathLen 0) and nothing but certificates and
  CRLs (keyUsage), both critical (RFC 5280 §4.2.1.9, §4.2.1.3);
- with ``root-certificate.name-constraints`` set, it carries critical permitted DNS subtrees
  and excludes every IP range, so a leaked key cannot sign for a bank or for an address.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from mailguard.errors import TLSSetupError
from mailguard.tls.naming import normalise_constraint

KeyType = Literal["ec", "rsa"]
PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]

KEY_TYPES: tuple[KeyType, ...] = ("ec", "rsa")
RSA_KEY_BITS = 3072  # NIST SP 800-57: 3072-bit RSA matches the 128-bit strength of P-256
CA_LIFETIME = timedelta(days=5 * 365)
#: Clocks of the machines that trust the CA may be a little behind ours.
CA_BACKDATE = timedelta(hours=1)
#: ub-common-name (RFC 5280 Appendix A): a CN longer than this is invalid.
MAX_COMMON_NAME = 64
CA_ORGANIZATION = "mailguard"


def new_private_key(key_type: KeyType) -> PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    raise TLSSetupError(f"unknown key type {key_type!r}; use one of: {', '.join(KEY_TYPES)}")


def random_serial() -> int:
    # RFC 5280 §4.1.2.2: positive, at most 20 octets; CA/B BR §7.1: at least 64 random bits.
    return secrets.randbits(159) | 1


def common_name_for(host: str, day: datetime) -> str:
    """``mailguard interception CA (host) 2026-11-28``, shortening the host to fit 64 characters."""
    frame = f"mailguard interception CA () {day:%Y-%m-%d}"
    room = MAX_COMMON_NAME - len(frame)
    if len(host) > room:
        host = host[: room - 1] + "~"
    return f"mailguard interception CA ({host}) {day:%Y-%m-%d}"


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA certificate with its private key (None for a retired CA whose key was destroyed)."""

    certificate: x509.Certificate
    key: PrivateKey | None

    @property
    def fingerprint(self) -> str:
        """SHA-256 over the DER certificate, lower-case hex without separators."""
        return self.certificate.fingerprint(hashes.SHA256()).hex()

    @property
    def key_type(self) -> KeyType:
        public = self.certificate.public_key()
        return "ec" if isinstance(public, ec.EllipticCurvePublicKey) else "rsa"

    @property
    def key_description(self) -> str:
        public = self.certificate.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            return f"EC {public.curve.name}"
        return f"RSA {public.key_size}"

    @property
    def subject(self) -> str:
        """``CN=…, O=mailguard, OU=install …``: in certificate order, as people read it."""
        return ", ".join(f"{attribute.rfc4514_attribute_name}={attribute.value}"
                         for attribute in self.certificate.subject)

    @property
    def not_before(self) -> datetime:
        return self.certificate.not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    @property
    def name_constraints(self) -> list[str]:
        try:
            ext = self.certificate.extensions.get_extension_for_class(x509.NameConstraints)
        except x509.ExtensionNotFound:
            return []
        return [tree.value for tree in ext.value.permitted_subtrees or () if isinstance(tree, x509.DNSName)]

    @property
    def subject_key_identifier(self) -> x509.SubjectKeyIdentifier:
        return self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value

    def signing_key(self) -> PrivateKey:
        if self.key is None:
            raise TLSSetupError(f"the CA {self.subject} is retired: its key was destroyed")
        return self.key


def _name_constraints(constraints: Sequence[str]) -> x509.NameConstraints | None:
    normal: list[str] = []
    for constraint in constraints:
        value = normalise_constraint(constraint)
        if value is None:
            raise TLSSetupError(
                f"web-and-email.ssl-tls.root-certificate.name-constraints: {constraint!r} is not a DNS name"
            )
        if value not in normal:
            normal.append(value)
    if not normal:
        return None
    return x509.NameConstraints(
        permitted_subtrees=[x509.DNSName(value) for value in normal],
        # Permitted DNS subtrees say nothing about iPAddress SANs (RFC 5280 §4.2.1.10: a
        # constraint applies only to names of its own type), so exclude every address too.
        excluded_subtrees=[
            x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
            x509.IPAddress(ipaddress.ip_network("::/0")),
        ],
    )


def create_ca(
    *,
    key_type: KeyType = "ec",
    name_constraints: Sequence[str] = (),
    host: str | None = None,
    now: datetime | None = None,
    lifetime: timedelta = CA_LIFETIME,
) -> CertificateAuthority:
    """A new self-signed interception CA with a fresh key."""
    now = now or datetime.now(timezone.utc)
    key = new_private_key(key_type)
    host = host or socket.gethostname() or "localhost"
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, common_name_for(host, now)),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, CA_ORGANIZATION),
        # Two CAs made on one host on one day would otherwise share a subject, and verifiers
        # that look issuers up by name could pick the wrong one while both are trusted.
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"install {secrets.token_hex(4)}"),
    ])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(random_serial())
        .not_valid_before(now - CA_BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    )
    constraints = _name_constraints(name_constraints)
    if constraints is not None:
        # RFC 5280 §4.2.1.10: "Conforming CAs MUST mark this extension as critical".
        builder = builder.add_extension(constraints, critical=True)
    certificate = builder.sign(key, hashes.SHA256())
    return CertificateAuthority(certificate=certificate, key=key)
