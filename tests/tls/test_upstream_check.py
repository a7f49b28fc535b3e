"""Classification of presented chains, without sockets."""

from __future__ import annotations

import ssl
from datetime import datetime, timedelta, timezone

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailguard.tls.anchors import TrustAnchors
from mailguard.tls.upstream_check import (
    CertProblem, UpstreamCertificateError, UpstreamCheck, ValidityPolicy, classify, from_error,
)

U, E, N, W, M = (CertProblem.UNVERIFIABLE, CertProblem.EXPIRED, CertProblem.NOT_YET_VALID,
                 CertProblem.WRONG_HOST, CertProblem.MALFORMED)


def der_chain(leaf: trustme.LeafCert) -> list[bytes]:
    return [x509.load_pem_x509_certificate(pem.bytes()).public_bytes(serialization.Encoding.DER)
            for pem in leaf.cert_chain_pems]


def anchors_of(*cas: trustme.CA) -> TrustAnchors:
    return TrustAnchors(tuple(x509.load_pem_x509_certificate(ca.cert_pem.bytes()) for ca in cas))


def test_chain_through_an_intermediate():
    root = trustme.CA()
    intermediate = root.create_child_ca()
    chain = der_chain(intermediate.issue_cert("imap.example.com"))
    assert len(chain) == 2
    assert classify(chain, "imap.example.com", anchors_of(root)) == ((), "")
    problems, reason = classify(chain[:1], "imap.example.com", anchors_of(root))
    assert problems == (U,) and reason  # the intermediate is needed and missing
    assert classify(chain, "imap.example.com", anchors_of(trustme.CA()))[0] == (U,)


def test_wildcard_and_times():
    ca = trustme.CA()
    start = datetime.now(timezone.utc)
    chain = der_chain(ca.issue_cert("*.example.com", not_before=start - timedelta(days=1),
                                    not_after=start + timedelta(days=30)))
    assert classify(chain, "imap.example.com", anchors_of(ca))[0] == ()
    assert classify(chain, "a.b.example.com", anchors_of(ca))[0] == (W,)
    later = start + timedelta(days=31)
    assert classify(chain, "imap.example.com", anchors_of(ca), now=later)[0] == (E,)
    earlier = start - timedelta(days=2)
    assert classify(chain, "imap.example.com", anchors_of(ca), now=earlier)[0] == (N,)


def test_malformed_and_missing_certificates_fail_closed_on_both_counts():
    assert classify([b"\x30\x03garbage"], "imap.example.com", anchors_of(trustme.CA()))[0] == (U, M)
    assert classify([], "imap.example.com", anchors_of(trustme.CA()))[0] == (U, M)


def test_no_anchors_means_unverifiable():
    ca = trustme.CA()
    assert classify(der_chain(ca.issue_cert("a.example")), "a.example", TrustAnchors(()))[0] == (U,)


@pytest.mark.parametrize(("code", "problem"), [(10, E), (9, N), (62, W), (64, W), (18, U), (20, U), (7, M), (99, U)])
def test_strict_handshake_errors_are_named(code, problem):
    error = ssl.SSLCertVerificationError()
    error.verify_code, error.verify_message = code, "message"
    check = from_error("imap.example.com", error, ValidityPolicy())
    assert check.problems == (problem,) and not check.allowed and check.detail == "message"


def test_policy_and_messages():
    policy = ValidityPolicy(unverifiable="allow", corrupted="block")
    assert policy.allows(U) and not policy.allows(E) and not policy.strict
    check = UpstreamCheck("imap.example.com", (U, E), allowed=False, detail="why", policy=policy)
    assert check.summary == "unverifiable, expired"
    with pytest.raises(UpstreamCertificateError, match=r"imap.example.com refused: expired \(why\)") as raised:
        check.raise_if_blocked()
    assert raised.value.check is check
    ok = UpstreamCheck("imap.example.com", (), allowed=True)
    assert ok.raise_if_blocked() is ok and ok.summary == "ok"
