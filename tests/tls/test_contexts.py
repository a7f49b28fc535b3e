"""The client-facing leg: real handshakes from Python's ssl and openssl s_client, with the
mailguard CA as the only trust anchor."""

from __future__ import annotations

import ssl
import subprocess
import warnings

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailguard.settings import Settings
from mailguard.tls.ca import CertificateAuthority
from mailguard.tls.castore import CAStore
from mailguard.tls.contexts import ClientFacingTLS, client_facing_context
from mailguard.tls.leaf import LeafMinter
from tests.peers import require
from tests.tls.helpers import GREETING, connect, serving

pytestmark = pytest.mark.integration


@pytest.fixture
def stored(tmp_path):
    return CAStore(tmp_path / "state").init()


@pytest.fixture
def tls(stored):
    return ClientFacingTLS(LeafMinter(stored.ca, stored.leaves_dir))


@pytest.fixture
def client(stored):
    """A client that trusts the mailguard CA and nothing else."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(stored.cert_path))
    return context


def presented(sock: ssl.SSLSocket) -> x509.Certificate:
    return x509.load_der_x509_certificate(sock.getpeercert(binary_form=True))


def test_python_ssl_accepts_the_leaf_for_the_sni_name(tls, client):
    with serving(client_facing_context(tls, ["imap.example.com"])) as server:
        for name in ("imap.example.com", "localhost"):
            with connect(client, server.address, name) as sock:
                assert sock.recv(len(GREETING)) == GREETING
                assert sock.version() in {"TLSv1.2", "TLSv1.3"}
                dns = presented(sock).extensions.get_extension_for_class(
                    x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
                assert dns[0] == name and "imap.example.com" in dns


def test_negative_control_a_client_trusting_another_ca_refuses(tls):
    other = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    trustme.CA().configure_trust(other)
    with serving(tls.context(["imap.example.com"])) as server:
        with pytest.raises(ssl.SSLCertVerificationError):
            connect(other, server.address, "imap.example.com")


def test_without_sni_the_default_names_are_used(tls, client):
    client.check_hostname = False  # an IP literal: clients send no SNI (RFC 6066 §3)
    with serving(tls.context(["127.0.0.1", "imap.example.com"])) as server:
        with connect(client, server.address, None) as sock:
            assert sock.recv(len(GREETING)) == GREETING
            san = presented(sock).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
            assert san.get_values_for_type(x509.DNSName) == ["imap.example.com"]
    client.check_hostname = True
    with serving(tls.context(["127.0.0.1"])) as server:
        with connect(client, server.address, "127.0.0.1") as sock:  # hostname check against IP SAN
            assert sock.recv(len(GREETING)) == GREETING


def test_upstream_names_are_carried(tls, client):
    upstream = trustme.CA().issue_cert("imap.example.com", "imap2.example.com")
    der = x509.load_pem_x509_certificate(upstream.cert_chain_pems[0].bytes()).public_bytes(
        serialization.Encoding.DER)
    with serving(tls.context(["imap.example.com"], der)) as server:
        with connect(client, server.address, "imap2.example.com") as sock:
            assert sock.recv(len(GREETING)) == GREETING


def test_leaf_contexts_and_leaves_are_reused(tls, client):
    with serving(tls.context(["imap.example.com"])) as server:
        for _ in range(3):
            with connect(client, server.address, "imap.example.com") as sock:
                sock.recv(len(GREETING))
    assert tls.minter.stats == {"memory": 2, "disk": 0, "minted": 1}
    leaf = tls.minter.leaf_for(["imap.example.com"])
    assert tls.leaf_context(leaf) is tls.leaf_context(leaf)


def test_obsolete_and_weak_clients_are_refused(tls, client):
    with serving(tls.context(["imap.example.com"])) as server:
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.check_hostname = False
        old.verify_mode = ssl.CERT_NONE
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises(ssl.SSLError):
            connect(old, server.address, "imap.example.com")
        cbc = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        cbc.check_hostname = False
        cbc.verify_mode = ssl.CERT_NONE
        cbc.maximum_version = ssl.TLSVersion.TLSv1_2
        cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA")  # CBC only: not offered
        with pytest.raises(ssl.SSLError):
            connect(cbc, server.address, "imap.example.com")
        client.maximum_version = ssl.TLSVersion.TLSv1_2
        with connect(client, server.address, "imap.example.com") as sock:
            assert sock.version() == "TLSv1.2"
            assert sock.cipher()[0].startswith("ECDHE-") and ("GCM" in sock.cipher()[0] or "CHACHA" in sock.cipher()[0])
            # The server counts a handshake before it greets: reading the greeting orders the two.
            assert sock.recv(64) == GREETING
        assert server.handshakes == 1


def test_a_failure_inside_the_sni_callback_ends_the_handshake_with_an_alert(stored, client):
    retired = CertificateAuthority(certificate=stored.ca.certificate, key=None)
    tls = ClientFacingTLS(LeafMinter(retired, None))
    with serving(tls.context(["imap.example.com"])) as server:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with connect(client, server.address, "imap.example.com") as sock:
                sock.recv(1)
    assert "retired" in str(tls.last_error)


def test_from_state_uses_the_active_ca(stored, tmp_path, client):
    tls = ClientFacingTLS.from_state(stored.folder.parent.parent, Settings.defaults())
    assert tls.minter.ca.fingerprint == stored.ca.fingerprint and tls.block_obsolete is True
    assert tls.minter.leaves_dir == stored.leaves_dir


@pytest.mark.peer
def test_openssl_s_client_verifies_the_leaf(tls, stored):
    openssl = require("openssl")
    with serving(tls.context(["imap.example.com"])) as server:
        host, port = server.address
        ok = subprocess.run(
            [openssl, "s_client", "-connect", f"{host}:{port}", "-servername", "imap.example.com",
             "-verify_return_error", "-verify_hostname", "imap.example.com", "-CAfile", str(stored.cert_path)],
            input=b"", capture_output=True, timeout=30,
        )
        # Judged on the output, not the exit status: the server closing right after its greeting
        # can make s_client report a reset after a fully verified session.
        assert b"Verify return code: 0 (ok)" in ok.stdout, ok.stdout.decode() + ok.stderr.decode()
        wrong = subprocess.run(
            [openssl, "s_client", "-connect", f"{host}:{port}", "-servername", "imap.example.com",
             "-verify_return_error", "-verify_hostname", "pop.example.net", "-CAfile", str(stored.cert_path)],
            input=b"", capture_output=True, timeout=30,
        )
        assert wrong.returncode != 0 and b"Verify return code: 0 (ok)" not in wrong.stdout  # negative control
        assert b"hostname mismatch" in wrong.stdout + wrong.stderr


def test_with_block_obsolete_off_tls10_clients_are_served(stored, client):
    tls = ClientFacingTLS(LeafMinter(stored.ca, stored.leaves_dir), block_obsolete=False)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(cafile=str(stored.cert_path))
    try:
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1
    except (ssl.SSLError, ValueError) as exc:
        pytest.skip(f"this OpenSSL cannot be configured for TLS 1.0: {exc}")
    with serving(tls.context(["imap.example.com"])) as server:
        with connect(old, server.address, "imap.example.com") as sock:
            assert sock.version() == "TLSv1" and sock.recv(len(GREETING)) == GREETING
