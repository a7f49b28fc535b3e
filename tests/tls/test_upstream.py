"""The upstream leg against real loopback TLS servers: every certificate-validity policy on a
badssl-style set of certificates (docs/pitfalls.md#verifying-the-server), and obsolete protocol versions
(docs/pitfalls.md#protocol-versions-and-ciphers)."""

from __future__ import annotations

import itertools
import ssl

import pytest
import trustme
from cryptography.hazmat.primitives import hashes

from mailguard.settings import Settings
from mailguard.tls.castore import CAStore
from mailguard.tls.leaf import LeafMinter
from mailguard.tls.upstream import UpstreamPolicy, UpstreamTLS, upstream_context
from mailguard.tls.upstream_check import CertProblem, UpstreamCertificateError, ValidityPolicy
from tests.tls.helpers import (
    GREETING, connect, expired_window, future_window, self_signed_context, server_context_for, serving,
    write_pem,
)

pytestmark = pytest.mark.integration

HOST = "localhost"
U, E, N, W = CertProblem.UNVERIFIABLE, CertProblem.EXPIRED, CertProblem.NOT_YET_VALID, CertProblem.WRONG_HOST


@pytest.fixture(scope="module")
def trusted_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def servers(trusted_ca, tmp_path_factory):
    """name -> (server context, the problems that certificate has)."""
    tmp = tmp_path_factory.mktemp("certs")
    unknown_ca = trustme.CA()
    cases = {
        "good": (server_context_for(trusted_ca.issue_cert(HOST)), set()),
        "expired": (server_context_for(trusted_ca.issue_cert(HOST, **expired_window())), {E}),
        "not-yet-valid": (server_context_for(trusted_ca.issue_cert(HOST, **future_window())), {N}),
        "wrong-host": (server_context_for(trusted_ca.issue_cert("mail.other.example")), {W}),
        "self-signed": (self_signed_context(HOST, tmp), {U}),
        "unknown-ca": (server_context_for(unknown_ca.issue_cert(HOST)), {U}),
        "expired-self-signed": (self_signed_context(HOST, tmp, **expired_window()), {U, E}),
        "unknown-ca-wrong-host": (server_context_for(unknown_ca.issue_cert("mail.other.example")), {U, W}),
    }
    started = {name: serving(context) for name, (context, _) in cases.items()}
    running = {name: manager.__enter__() for name, manager in started.items()}
    try:
        yield {name: (running[name], problems) for name, (_, problems) in cases.items()}
    finally:
        for manager in started.values():
            manager.__exit__(None, None, None)


@pytest.fixture(scope="module")
def trusted_ca_file(trusted_ca, tmp_path_factory) -> str:
    return write_pem(tmp_path_factory.mktemp("anchors") / "extra.pem", trusted_ca.cert_pem.bytes())


def attempt(upstream: UpstreamTLS, address, hostname: str = HOST):
    """What the engine does: handshake, then judge the outcome; returns (check, greeting)."""
    try:
        tls = connect(upstream.context, address, hostname)
    except ssl.SSLCertVerificationError as exc:
        return upstream.judge(hostname, error=exc), None
    with tls:
        check = upstream.judge(hostname, ssl_object=tls)
        return check, tls.recv(len(GREETING)) if check.allowed else None


POLICIES = list(itertools.product(["block", "allow"], ["block", "allow"], [True, False]))


@pytest.mark.parametrize(("unverifiable", "corrupted", "block_obsolete"), POLICIES)
def test_every_policy_on_every_certificate(servers, trusted_ca_file, unverifiable, corrupted, block_obsolete):
    policy = UpstreamPolicy(ValidityPolicy(unverifiable, corrupted), block_obsolete, trusted_ca_file)
    upstream = UpstreamTLS(policy, include_system=False)
    allowed_categories = {key for key, value in (("unverifiable", unverifiable), ("corrupted", corrupted))
                          if value == "allow"}
    for name, (server, problems) in servers.items():
        check, greeting = attempt(upstream, server.address)
        should_pass = all(problem.policy_key in allowed_categories for problem in problems)
        assert check.allowed is should_pass, (name, check)
        if policy.validity.strict:
            # The stdlib names the first problem it met; the rest is not looked for.
            assert set(check.problems) <= problems or (not problems and not check.problems), (name, check)
            assert len(check.problems) == (1 if problems else 0), (name, check)
        else:
            assert set(check.problems) == problems, (name, check)
        if should_pass:
            assert greeting == GREETING
            assert check.tls_version in {"TLSv1.2", "TLSv1.3"}
        else:
            with pytest.raises(UpstreamCertificateError, match="refused"):
                check.raise_if_blocked()


def test_strict_path_is_the_stdlib_verifying(trusted_ca_file):
    upstream = UpstreamTLS(UpstreamPolicy(trusted_ca_file=trusted_ca_file), include_system=False)
    assert upstream.context.verify_mode == ssl.CERT_REQUIRED
    assert upstream.context.check_hostname is True
    assert upstream.context.minimum_version == ssl.TLSVersion.TLSv1_2
    lenient = UpstreamTLS(UpstreamPolicy(ValidityPolicy("allow", "block"), trusted_ca_file=trusted_ca_file),
                          include_system=False)
    assert lenient.context.verify_mode == ssl.CERT_NONE


def test_ip_literal_upstream_is_checked_against_ip_san(trusted_ca, trusted_ca_file):
    good = server_context_for(trusted_ca.issue_cert("127.0.0.1"))
    named = server_context_for(trusted_ca.issue_cert(HOST))
    for validity in (ValidityPolicy(), ValidityPolicy("block", "allow")):
        upstream = UpstreamTLS(UpstreamPolicy(validity, trusted_ca_file=trusted_ca_file), include_system=False)
        with serving(good) as server:
            check, _ = attempt(upstream, server.address, "127.0.0.1")
            assert check.allowed and not check.problems
        with serving(named) as server:
            check, _ = attempt(upstream, server.address, "127.0.0.1")
            assert check.problems == (W,)
            assert check.allowed is (validity.corrupted == "allow")


@pytest.fixture(scope="module")
def tls10_server(trusted_ca):
    try:
        context = server_context_for(trusted_ca.issue_cert(HOST), tls10_only=True)
    except ssl.SSLError as exc:
        pytest.skip(f"this OpenSSL cannot be configured for TLS 1.0 at all: {exc}")
    with serving(context) as server:
        yield server


@pytest.mark.parametrize(("unverifiable", "corrupted", "block_obsolete"), POLICIES)
def test_tls10_only_server(tls10_server, trusted_ca_file, unverifiable, corrupted, block_obsolete):
    policy = UpstreamPolicy(ValidityPolicy(unverifiable, corrupted), block_obsolete, trusted_ca_file)
    upstream = UpstreamTLS(policy, include_system=False)
    if block_obsolete:
        with pytest.raises(ssl.SSLError) as failure:
            attempt(upstream, tls10_server.address)
        assert not isinstance(failure.value, ssl.SSLCertVerificationError)
        return
    try:
        check, greeting = attempt(upstream, tls10_server.address)
    except ssl.SSLError as exc:
        pytest.skip(f"this OpenSSL refuses TLS 1.0 even at security level 0: {exc}")
    assert check.allowed and check.tls_version == "TLSv1" and greeting == GREETING


def test_own_ca_is_never_an_upstream_anchor(tmp_path):
    """A server presenting a leaf of mailguard's own CA is unverifiable, even after `ca install`
    put that CA into the trust store (here: the trusted-ca-file)."""
    stored = CAStore(tmp_path / "state").init()
    leaf = LeafMinter(stored.ca, stored.leaves_dir).leaf_for([HOST])
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(leaf.path)
    policy = UpstreamPolicy(trusted_ca_file=str(stored.cert_path))
    with serving(server_context) as server:
        trusting = UpstreamTLS(policy, include_system=False)
        assert attempt(trusting, server.address)[0].allowed  # control: the CA does verify it
        guarded = UpstreamTLS(policy, distrusted=[stored.ca.certificate], include_system=False)
        check, _ = attempt(guarded, server.address)
        assert not check.allowed and check.problems == (U,)


def test_from_settings_reads_the_tree_and_distrusts_the_state_cas(tmp_path, trusted_ca_file):
    state = tmp_path / "state"
    CAStore(state).init()
    settings = Settings.from_values({
        "web-and-email.ssl-tls.certificate-validity.corrupted": "allow",
        "web-and-email.ssl-tls.block-obsolete": False,
        "web-and-email.ssl-tls.trusted-ca-file": trusted_ca_file,
    })
    upstream = UpstreamTLS.from_settings(settings, state)
    assert upstream.policy == UpstreamPolicy(ValidityPolicy("block", "allow"), False, trusted_ca_file)
    own = CAStore(state).active().ca.fingerprint
    assert own not in {cert.fingerprint(hashes.SHA256()).hex() for cert in upstream.anchors.certificates}
    assert len(upstream.anchors.certificates) > 1  # the system store and the extra file are there
    assert isinstance(upstream_context(settings), ssl.SSLContext)


def test_judge_reraises_errors_that_are_not_about_certificates(trusted_ca_file):
    upstream = UpstreamTLS(UpstreamPolicy(trusted_ca_file=trusted_ca_file), include_system=False)
    with pytest.raises(ConnectionResetError):
        upstream.judge(HOST, error=ConnectionResetError())
