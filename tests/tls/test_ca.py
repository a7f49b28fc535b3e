from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mailguard.errors import TLSSetupError
from mailguard.tls.ca import MAX_COMMON_NAME, common_name_for, create_ca

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


def ext(certificate, kind):
    return certificate.extensions.get_extension_for_class(kind)


def test_ca_profile():
    ca = create_ca(host="mailhost", now=NOW)
    cert = ca.certificate
    constraints = ext(cert, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ext(cert, x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    ski = ext(cert, x509.SubjectKeyIdentifier).value
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == ski.digest
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == (
        "mailguard interception CA (mailhost) 2026-11-28")
    assert cert.not_valid_before_utc <= NOW < cert.not_valid_after_utc
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey) and ca.key.curve.name == "secp256r1"
    assert ca.key_type == "ec" and ca.key_description == "EC secp256r1"
    cert.verify_directly_issued_by(cert)
    with pytest.raises(x509.ExtensionNotFound):
        ext(cert, x509.NameConstraints)


def test_every_ca_is_unique():
    first, second = create_ca(now=NOW), create_ca(now=NOW)
    assert first.fingerprint != second.fingerprint
    assert first.certificate.subject != second.certificate.subject  # OU carries a random id
    assert first.certificate.serial_number != second.certificate.serial_number


def test_rsa_3072():
    ca = create_ca(key_type="rsa", now=NOW)
    assert isinstance(ca.key, rsa.RSAPrivateKey) and ca.key.key_size == 3072
    assert ca.key_type == "rsa" and ca.key_description == "RSA 3072"


def test_unknown_key_type():
    with pytest.raises(TLSSetupError, match="unknown key type"):
        create_ca(key_type="dsa", now=NOW)  # type: ignore[arg-type]


def test_name_constraints_are_critical_permitted_dns_and_exclude_all_ips():
    ca = create_ca(name_constraints=["Example.com", ".example.org", "example.com"], now=NOW)
    nc = ext(ca.certificate, x509.NameConstraints)
    assert nc.critical
    assert [t.value for t in nc.value.permitted_subtrees] == ["example.com", ".example.org"]
    assert {t.value for t in nc.value.excluded_subtrees} == {
        ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")}
    assert ca.name_constraints == ["example.com", ".example.org"]


def test_bad_name_constraint_is_refused_naming_the_key():
    with pytest.raises(TLSSetupError, match="name-constraints: 'not a name'"):
        create_ca(name_constraints=["not a name"], now=NOW)


def test_long_host_names_keep_the_common_name_within_64():
    name = common_name_for("h" * 100, NOW)
    assert len(name) == MAX_COMMON_NAME and name.endswith("~) 2026-11-28")
    create_ca(host="h" * 100, now=NOW)  # would raise if the CN were too long


def test_retired_ca_cannot_sign():
    ca = create_ca(now=NOW)
    retired = type(ca)(certificate=ca.certificate, key=None)
    with pytest.raises(TLSSetupError, match="retired"):
        retired.signing_key()
    assert retired.not_after - retired.not_before > timedelta(days=365)
