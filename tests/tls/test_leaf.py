from __future__ import annotations

import ipaddress
import stat
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from mailguard.errors import TLSSetupError
from mailguard.tls.ca import create_ca
from mailguard.tls.castore import CAStore
from mailguard.tls.leaf import LEAF_BACKDATE, LeafMinter, issue_leaf, san_names
from tests.peers import require

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def stored(tmp_path):
    return CAStore(tmp_path / "state").init()


def ext(certificate, kind):
    return certificate.extensions.get_extension_for_class(kind)


def test_leaf_profile():
    ca = create_ca(now=NOW)
    leaf = issue_leaf(ca, ["imap.example.com", "127.0.0.1"], now=NOW)
    cert = leaf.certificate
    cert.verify_directly_issued_by(ca.certificate)
    assert ext(cert, x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    basic = ext(cert, x509.BasicConstraints)
    assert basic.critical and not basic.value.ca
    assert ext(cert, x509.KeyUsage).value.digital_signature
    assert not ext(cert, x509.KeyUsage).value.key_cert_sign
    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["imap.example.com"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == ca.subject_key_identifier.digest
    assert cert.not_valid_before_utc >= NOW - timedelta(days=1)
    assert cert.not_valid_before_utc == NOW - LEAF_BACKDATE
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= timedelta(days=397)
    assert isinstance(leaf.key, ec.EllipticCurvePrivateKey) and leaf.key.curve.name == "secp256r1"
    assert leaf.key.public_key().public_numbers() != ca.key.public_key().public_numbers()


def test_leaf_never_outlives_its_ca():
    ca = create_ca(now=NOW, lifetime=timedelta(days=10))
    leaf = issue_leaf(ca, ["a.example"], now=NOW)
    assert leaf.certificate.not_valid_after_utc == ca.not_after


def test_every_leaf_has_its_own_key():
    ca = create_ca(now=NOW)
    first, second = issue_leaf(ca, ["a.example"], now=NOW), issue_leaf(ca, ["b.example"], now=NOW)
    assert first.key.private_numbers() != second.key.private_numbers()


def test_very_long_names_leave_the_subject_empty_and_the_san_critical():
    long_name = ".".join(["a" * 60] * 2) + ".example"
    leaf = issue_leaf(create_ca(now=NOW), [long_name], now=NOW)
    assert len(leaf.certificate.subject) == 0
    assert ext(leaf.certificate, x509.SubjectAlternativeName).critical


def test_memory_then_disk_then_mint(stored):
    minter = LeafMinter(stored.ca, stored.leaves_dir)
    first = minter.leaf_for(["imap.example.com"])
    again = minter.leaf_for(["IMAP.example.com."])
    assert again is first and minter.stats == {"memory": 1, "disk": 0, "minted": 1}
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600
    assert first.path.name == f"{first.cache_key}.pem"
    restarted = LeafMinter(CAStore(stored.folder.parent.parent).active().ca, stored.leaves_dir)
    from_disk = restarted.leaf_for(["imap.example.com"])
    assert restarted.stats == {"memory": 0, "disk": 1, "minted": 0}
    assert from_disk.certificate == first.certificate
    assert from_disk.key.private_numbers() == first.key.private_numbers()
    other = restarted.leaf_for(["imap.example.com", "pop.example.com"])
    assert other.certificate != first.certificate and restarted.stats["minted"] == 1


def test_memory_cache_is_bounded_lru(stored):
    minter = LeafMinter(stored.ca, None, max_in_memory=2)
    a = minter.leaf_for(["a.example"])
    minter.leaf_for(["b.example"])
    assert minter.leaf_for(["a.example"]) is a          # a is now the most recent
    minter.leaf_for(["c.example"])                        # evicts b
    minter.leaf_for(["a.example"])
    assert minter.stats["memory"] == 2
    minter.leaf_for(["b.example"])
    assert minter.stats["minted"] == 4


def test_disk_cache_is_bounded(stored):
    minter = LeafMinter(stored.ca, stored.leaves_dir, max_on_disk=3)
    for index in range(6):
        minter.leaf_for([f"h{index}.example"])
    assert len(list(stored.leaves_dir.glob("*.pem"))) == 3


def test_a_damaged_or_foreign_disk_entry_is_minted_again(stored, tmp_path):
    minter = LeafMinter(stored.ca, stored.leaves_dir)
    leaf = minter.leaf_for(["a.example"])
    foreign = LeafMinter(create_ca(), tmp_path / "foreign").leaf_for(["a.example"])
    leaf.path.write_bytes(foreign.path.read_bytes())  # right name set, wrong issuer
    fresh = LeafMinter(stored.ca, stored.leaves_dir)
    assert fresh.leaf_for(["a.example"]).certificate.issuer == stored.ca.certificate.subject
    assert fresh.stats["minted"] == 1
    leaf.path.write_bytes(b"garbage")
    again = LeafMinter(stored.ca, stored.leaves_dir)
    again.leaf_for(["a.example"])
    assert again.stats["minted"] == 1


def test_leaves_close_to_expiry_are_renewed(stored):
    clock = [datetime.now(timezone.utc)]
    minter = LeafMinter(stored.ca, stored.leaves_dir, clock=lambda: clock[0])
    first = minter.leaf_for(["a.example"])
    clock[0] += timedelta(days=85)
    second = minter.leaf_for(["a.example"])
    assert second.certificate != first.certificate and minter.stats["minted"] == 2


def test_names_for_adds_upstream_names_within_the_constraints(tmp_path):
    stored = CAStore(tmp_path).init(name_constraints=["example.com"])
    upstream = trustme.CA().issue_cert("imap.example.com", "mail.example.com", "evil.example.net", "10.1.2.3")
    der = x509.load_pem_x509_certificate(upstream.cert_chain_pems[0].bytes()).public_bytes(
        serialization.Encoding.DER)
    minter = LeafMinter(stored.ca, None)
    assert minter.names_for(["imap.example.com"], der) == ["imap.example.com", "mail.example.com"]
    assert minter.names_for(["localhost"], b"not a certificate") == ["localhost"]
    unconstrained = LeafMinter(create_ca(), None)
    assert unconstrained.names_for(["imap.example.com"], der) == [
        "imap.example.com", "mail.example.com", "evil.example.net", "10.1.2.3"]
    leaf = unconstrained.leaf_for(["imap.example.com"], der)
    assert san_names(leaf.certificate) == ["imap.example.com", "mail.example.com", "evil.example.net", "10.1.2.3"]


def test_no_usable_name(stored):
    with pytest.raises(TLSSetupError, match="valid host name"):
        LeafMinter(stored.ca, None).leaf_for(["not a host", ""])


def openssl_verify(ca_pem, leaf_pem, tmp_path, *extra: str) -> subprocess.CompletedProcess:
    openssl = require("openssl")
    (tmp_path / "ca.pem").write_bytes(ca_pem)
    (tmp_path / "leaf.pem").write_bytes(leaf_pem)
    return subprocess.run(
        [openssl, "verify", "-x509_strict", "-purpose", "sslserver", *extra,
         "-CAfile", str(tmp_path / "ca.pem"), str(tmp_path / "leaf.pem")],
        capture_output=True, text=True, timeout=30,
    )


@pytest.mark.peer
def test_openssl_verify_accepts_a_minted_leaf(stored, tmp_path):
    leaf = LeafMinter(stored.ca, stored.leaves_dir).leaf_for(["imap.example.com", "127.0.0.1"])
    ca_pem = stored.cert_path.read_bytes()
    result = openssl_verify(ca_pem, leaf.certificate_pem(), tmp_path, "-verify_hostname", "imap.example.com")
    assert result.returncode == 0, result.stdout + result.stderr
    wrong = openssl_verify(ca_pem, leaf.certificate_pem(), tmp_path, "-verify_hostname", "pop.example.com")
    assert wrong.returncode != 0  # negative control: the check can fail


@pytest.mark.peer
def test_openssl_verify_rejects_a_leaf_outside_the_name_constraints(tmp_path):
    stored = CAStore(tmp_path / "state").init(name_constraints=["example.com"])
    minter = LeafMinter(stored.ca, stored.leaves_dir)
    ca_pem = stored.cert_path.read_bytes()
    inside = openssl_verify(ca_pem, minter.leaf_for(["imap.example.com"]).certificate_pem(), tmp_path)
    assert inside.returncode == 0, inside.stdout + inside.stderr
    outside = openssl_verify(ca_pem, minter.leaf_for(["www.bank.example"]).certificate_pem(), tmp_path)
    assert outside.returncode != 0
    assert "permitted subtree violation" in (outside.stdout + outside.stderr)
    address = openssl_verify(ca_pem, minter.leaf_for(["10.0.0.1"]).certificate_pem(), tmp_path)
    assert address.returncode != 0
