"""``export`` hands out the certificate and never any key material, in every format."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from mailguard.errors import UsageError
from mailguard.tls.ca import create_ca
from mailguard.tls.export import EXPORT_FORMATS, export_certificate


def key_fragments(ca) -> list[bytes]:
    """Byte strings that would betray the CA key if they appeared in an export."""
    der = ca.key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
    scalar = ca.key.private_numbers().private_value.to_bytes(32, "big")
    return [der, scalar, b"PRIVATE KEY"]


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_export_holds_the_certificate_and_no_key(fmt):
    ca = create_ca()
    data = export_certificate(ca.certificate, fmt)
    for fragment in key_fragments(ca):
        assert fragment not in data
    if fmt == "pem":
        assert x509.load_pem_x509_certificate(data) == ca.certificate
    elif fmt == "der":
        assert x509.load_der_x509_certificate(data) == ca.certificate
    else:
        bundle = pkcs12.load_pkcs12(data, None)
        assert bundle.key is None
        assert [c.certificate for c in bundle.additional_certs] == [ca.certificate]


def test_unknown_format():
    with pytest.raises(UsageError, match="unknown export format"):
        export_certificate(create_ca().certificate, "jks")
