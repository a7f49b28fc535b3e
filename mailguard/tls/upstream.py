"""The upstream leg: the TLS context mailguard uses as a client of the real server.

Strict by default and verified by the stdlib itself (docs/architecture.md#tls-stance;
docs/pitfalls.md#verifying-the-server, docs/pitfalls.md#protocol-versions-and-ciphers):
CERT_REQUIRED, host name checked against the *configured* upstream name (the engine passes it as
``server_hostname``), TLS 1.2 or newer with AEAD, forward-secret suites. Only when
``certificate-validity.*`` allows something does the handshake run unverified, and
``UpstreamTLS.judge`` then classifies the presented chain and applies the policy.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509

from mailguard.tls.anchors import TrustAnchors, load_trust_anchors
from mailguard.tls.ciphers import configure_protocols
from mailguard.tls.upstream_check import UpstreamCheck, ValidityPolicy, check_handshake, from_error

if TYPE_CHECKING:
    from mailguard.settings import Settings

_TLS = "web-and-email.ssl-tls."


@dataclass(frozen=True)
class UpstreamPolicy:
    """The ``web-and-email.ssl-tls.*`` values that shape the upstream leg."""

    validity: ValidityPolicy = ValidityPolicy()
    block_obsolete: bool = True
    trusted_ca_file: str = ""

    @classmethod
    def from_settings(cls, settings: "Settings") -> "UpstreamPolicy":
        return cls(
            validity=ValidityPolicy(
                unverifiable=settings.get(_TLS + "certificate-validity.unverifiable"),
                corrupted=settings.get(_TLS + "certificate-validity.corrupted"),
            ),
            block_obsolete=settings.get(_TLS + "block-obsolete"),
            trusted_ca_file=settings.get(_TLS + "trusted-ca-file"),
        )


def build_upstream_context(policy: UpstreamPolicy, anchors: TrustAnchors) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    configure_protocols(context, block_obsolete=policy.block_obsolete)
    if anchors.certificates:
        context.load_verify_locations(cadata=anchors.cadata())
    # A server certificate or intermediate placed in trusted-ca-file is an anchor on its own
    # (Python 3.13 sets this by default for the same reason).
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if policy.validity.strict:
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        # Policy allows some problem: verify after the handshake (UpstreamTLS.judge), which
        # needs the handshake to complete whatever the certificate is.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class UpstreamTLS:
    """Everything the engine needs for upstream connections under one settings version.

    Build one per settings load (reading the system store costs milliseconds), then for each
    connection: ``wrap``/``SSLObject`` with ``context`` and ``server_hostname=<configured
    upstream name>``, and call ``judge`` with the outcome.
    """

    def __init__(
        self, policy: UpstreamPolicy, *, distrusted: Iterable[x509.Certificate] = (),
        include_system: bool = True,
    ) -> None:
        self.policy = policy
        self.anchors = load_trust_anchors(
            policy.trusted_ca_file, distrusted=distrusted, include_system=include_system,
        )
        self.context = build_upstream_context(policy, self.anchors)

    @classmethod
    def from_settings(cls, settings: "Settings", state_dir: Path | None = None) -> "UpstreamTLS":
        """With ``state_dir``, every mailguard CA found there is distrusted upstream."""
        distrusted: list[x509.Certificate] = []
        if state_dir is not None:
            from mailguard.tls.castore import CAStore

            distrusted = [stored.ca.certificate for stored in CAStore(state_dir).all()]
        return cls(UpstreamPolicy.from_settings(settings), distrusted=distrusted)

    def judge(
        self,
        hostname: str,
        *,
        ssl_object: ssl.SSLObject | ssl.SSLSocket | None = None,
        error: BaseException | None = None,
        now: datetime | None = None,
    ) -> UpstreamCheck:
        """Apply ``certificate-validity.*`` to a handshake's outcome.

        Pass ``ssl_object`` after a handshake that completed, or ``error`` when it raised
        ``ssl.SSLCertVerificationError``. ``allowed`` False means: close, tell the client. Any
        other handshake error (protocol version, network) is not a certificate matter and is
        re-raised.
        """
        if error is not None:
            if isinstance(error, ssl.SSLCertVerificationError):
                return from_error(hostname, error, self.policy.validity)
            raise error
        if ssl_object is None:
            raise ValueError("judge() needs the ssl_object of a finished handshake or its error")
        return check_handshake(hostname, ssl_object, self.policy.validity, self.anchors, now=now)


def upstream_context(settings: "Settings", state_dir: Path | None = None) -> ssl.SSLContext:
    """Just the context (see ``UpstreamTLS`` for the judgement that goes with it)."""
    return UpstreamTLS.from_settings(settings, state_dir).context
