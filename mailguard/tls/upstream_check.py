"""What is wrong with an upstream server's certificate, and whether policy lets it through.

The settings split certificate trouble in two, after ESET (docs/settings.md#ssl-tls):

- ``certificate-validity.unverifiable``: the chain does not reach a trusted root
  (self-signed, unknown CA, or one of mailguard's own CAs);
- ``certificate-validity.corrupted``: expired, not yet valid, for another host, or malformed.

Each is ``block`` (the default) or ``allow``. With both on ``block`` the stdlib handshake does
all verification and a failure arrives as ``ssl.SSLCertVerificationError``; ``from_error``
names the problem OpenSSL found. When either is ``allow`` the handshake runs unverified and
``classify`` checks the presented chain itself, finding *every* problem, so that an expired
self-signed certificate is blocked by ``corrupted = block`` even when unverifiable ones are
allowed. A connection that policy let through carries its problems to the engine, which logs
them and can tag the messages of that connection.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum

from cryptography import x509
from cryptography.x509 import verification

from mailguard.errors import RemoteProtocolError
from mailguard.tls.anchors import TrustAnchors
from mailguard.tls.naming import hostname_matches, normalise_dns_name

#: Chain length accepted from a server (leaf + intermediates), as OpenSSL's default depth.
MAX_CHAIN_LENGTH = 10


class CertProblem(str, Enum):
    UNVERIFIABLE = "unverifiable"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    WRONG_HOST = "wrong-host"
    MALFORMED = "malformed"

    @property
    def policy_key(self) -> str:
        """Which ``certificate-validity.*`` setting decides about this problem."""
        return "unverifiable" if self is CertProblem.UNVERIFIABLE else "corrupted"


@dataclass(frozen=True)
class ValidityPolicy:
    """``web-and-email.ssl-tls.certificate-validity.*``: "block" or "allow" each."""

    unverifiable: str = "block"
    corrupted: str = "block"

    @property
    def strict(self) -> bool:
        """Nothing is allowed: the stdlib handshake verifies everything."""
        return self.unverifiable == "block" and self.corrupted == "block"

    def allows(self, problem: CertProblem) -> bool:
        return getattr(self, problem.policy_key) == "allow"


@dataclass(frozen=True)
class UpstreamCheck:
    """The judgement on one upstream handshake."""

    hostname: str
    problems: tuple[CertProblem, ...]
    allowed: bool
    detail: str = ""
    tls_version: str | None = None
    cipher: str | None = None
    policy: ValidityPolicy = field(default_factory=ValidityPolicy)

    @property
    def summary(self) -> str:
        """``expired, wrong-host`` (or ``ok``): for logs and message tags."""
        return ", ".join(problem.value for problem in self.problems) or "ok"

    def raise_if_blocked(self) -> "UpstreamCheck":
        if not self.allowed:
            raise UpstreamCertificateError(self)
        return self


class UpstreamCertificateError(RemoteProtocolError):
    """The upstream certificate has a problem that policy blocks; the connection must end."""

    def __init__(self, check: UpstreamCheck) -> None:
        blocked = [p.value for p in check.problems if not check.policy.allows(p)]
        message = f"upstream certificate of {check.hostname} refused: {', '.join(blocked)}"
        if check.detail:
            message += f" ({check.detail})"
        super().__init__(message)
        self.check = check


# OpenSSL X509_V_ERR_* codes (include/openssl/x509_vfy.h) for the strict path.
_VERIFY_CODES: dict[int, CertProblem] = {
    9: CertProblem.NOT_YET_VALID,     # CERT_NOT_YET_VALID
    10: CertProblem.EXPIRED,          # CERT_HAS_EXPIRED
    62: CertProblem.WRONG_HOST,       # HOSTNAME_MISMATCH
    64: CertProblem.WRONG_HOST,       # IP_ADDRESS_MISMATCH
    4: CertProblem.MALFORMED,         # UNABLE_TO_DECRYPT_CERT_SIGNATURE
    6: CertProblem.MALFORMED,         # UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY
    7: CertProblem.MALFORMED,         # CERT_SIGNATURE_FAILURE
    13: CertProblem.MALFORMED,        # ERROR_IN_CERT_NOT_BEFORE_FIELD
    14: CertProblem.MALFORMED,        # ERROR_IN_CERT_NOT_AFTER_FIELD
}


def from_error(hostname: str, error: ssl.SSLCertVerificationError, policy: ValidityPolicy) -> UpstreamCheck:
    """The problem a failed strict handshake reports. Always blocked: with any ``allow`` in
    the policy the handshake does not verify, so this only happens when both are ``block``."""
    problem = _VERIFY_CODES.get(error.verify_code, CertProblem.UNVERIFIABLE)
    return UpstreamCheck(hostname=hostname, problems=(problem,), allowed=False,
                         detail=error.verify_message, policy=policy)


def classify(
    chain_der: Sequence[bytes], hostname: str, anchors: TrustAnchors, *, now: datetime | None = None,
) -> tuple[tuple[CertProblem, ...], str]:
    """Every problem of a presented chain (leaf first), and a short reason for the chain one."""
    now = now or datetime.now(timezone.utc)
    if not chain_der:
        return (CertProblem.UNVERIFIABLE, CertProblem.MALFORMED), "no certificate presented"
    try:
        leaf = x509.load_der_x509_certificate(chain_der[0])
        intermediates = [x509.load_der_x509_certificate(der) for der in chain_der[1:MAX_CHAIN_LENGTH]]
        dns_names, ips = _san(leaf)
    except ValueError as exc:
        # What cannot be parsed cannot be verified either: fail closed on both counts.
        return (CertProblem.UNVERIFIABLE, CertProblem.MALFORMED), f"cannot parse: {exc}"
    problems: list[CertProblem] = []
    reason = ""
    chain_error = _chain_error(leaf, intermediates, anchors, dns_names, ips, now)
    if chain_error is not None:
        problems.append(CertProblem.UNVERIFIABLE)
        reason = chain_error
    if now > leaf.not_valid_after_utc:
        problems.append(CertProblem.EXPIRED)
    if now < leaf.not_valid_before_utc:
        problems.append(CertProblem.NOT_YET_VALID)
    if not hostname_matches(hostname, dns_names, ips):
        problems.append(CertProblem.WRONG_HOST)
    return tuple(problems), reason


def check_handshake(
    hostname: str, ssl_object: ssl.SSLObject | ssl.SSLSocket, policy: ValidityPolicy, anchors: TrustAnchors,
    *, now: datetime | None = None,
) -> UpstreamCheck:
    """The judgement on a handshake that completed (strict or not)."""
    version, cipher = ssl_object.version(), (ssl_object.cipher() or (None,))[0]
    if policy.strict:
        # The stdlib verified chain and host name during the handshake against ``anchors``.
        return UpstreamCheck(hostname=hostname, problems=(), allowed=True,
                             tls_version=version, cipher=cipher, policy=policy)
    problems, reason = classify(peer_chain(ssl_object), hostname, anchors, now=now)
    return UpstreamCheck(
        hostname=hostname, problems=problems, allowed=all(policy.allows(p) for p in problems),
        detail=reason, tls_version=version, cipher=cipher, policy=policy,
    )


def peer_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> list[bytes]:
    """The chain the server sent, leaf first, DER.

    Python 3.13 has ``get_unverified_chain()``; 3.10-3.12 have it on the private ``_sslobj``.
    Without either only the leaf is known, and a chain that needs intermediates then shows
    as unverifiable (fail closed).
    """
    public = getattr(ssl_object, "get_unverified_chain", None)
    private = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    for getter in (public, private):
        if getter is None:
            continue
        chain = getter() or []
        return [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]  # type: ignore[attr-defined]
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _san(leaf: x509.Certificate) -> tuple[list[str], list]:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return list(san.get_values_for_type(x509.DNSName)), list(san.get_values_for_type(x509.IPAddress))


# Lenient on extensions, like OpenSSL: the webpki defaults of ``cryptography`` refuse common
# private-CA certificates (a critical SAN beside a subject, say) that OpenSSL accepts, and this
# check must not block what the strict stdlib path would pass. CA certificates still need
# basicConstraints (CA:TRUE is enforced), so a leaf can never act as an issuer.
_CA_POLICY = verification.ExtensionPolicy.permit_all().require_present(
    x509.BasicConstraints, verification.Criticality.AGNOSTIC, None)
_SERVER_EE_POLICY = verification.ExtensionPolicy.permit_all().require_present(
    x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None)
_ANY_EE_POLICY = verification.ExtensionPolicy.permit_all()


def _chain_error(
    leaf: x509.Certificate, intermediates: list[x509.Certificate], anchors: TrustAnchors,
    dns_names: list[str], ips: list, now: datetime,
) -> str | None:
    """Why the leaf does not chain to an anchor, or None when it does.

    Checked at a moment inside the leaf's validity and against a name the leaf does carry, so
    that expiry and host name, judged separately above, do not also count as "unverifiable".
    """
    if not anchors.certificates:
        return "no trusted roots"
    moment = min(max(now, leaf.not_valid_before_utc), leaf.not_valid_after_utc)
    builder = verification.PolicyBuilder().store(verification.Store(list(anchors.certificates))).time(moment)
    try:
        subject = _subject_on(dns_names, ips)
        if subject is None:
            builder = builder.extension_policies(ca_policy=_CA_POLICY, ee_policy=_ANY_EE_POLICY)
            builder.build_client_verifier().verify(leaf, intermediates)
        else:
            builder = builder.extension_policies(ca_policy=_CA_POLICY, ee_policy=_SERVER_EE_POLICY)
            builder.build_server_verifier(subject).verify(leaf, intermediates)
    except (verification.VerificationError, ValueError) as exc:
        return str(exc)
    return None


def _subject_on(dns_names: list[str], ips: list) -> verification.DNSName | verification.IPAddress | None:
    for name in dns_names:
        normal = normalise_dns_name(name)
        if normal is None:
            continue
        # A wildcard entry stands for any one label: ask for a concrete name under it.
        return verification.DNSName(normal.replace("*.", "mailguard-probe.", 1))
    if ips:
        return verification.IPAddress(ips[0])
    return None
