from __future__ import annotations

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from mailguard.errors import TLSSetupError
from mailguard.tls.anchors import load_trust_anchors, parse_pem_bundle, system_anchors


def test_bundle_parsing_skips_broken_entries():
    first, second = trustme.CA().cert_pem.bytes(), trustme.CA().cert_pem.bytes()
    broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    assert len(parse_pem_bundle(first + broken + b"junk\n" + second)) == 2


def test_extra_file_added_duplicates_dropped_and_own_cas_removed(tmp_path):
    kept, own = trustme.CA(), trustme.CA()
    bundle = tmp_path / "extra.pem"
    bundle.write_bytes(kept.cert_pem.bytes() * 2 + own.cert_pem.bytes())
    anchors = load_trust_anchors(str(bundle), distrusted=[x509.load_pem_x509_certificate(own.cert_pem.bytes())],
                                 include_system=False)
    assert anchors.certificates == (x509.load_pem_x509_certificate(kept.cert_pem.bytes()),)
    assert anchors.cadata().count("BEGIN CERTIFICATE") == 1


def test_system_store_is_read():
    assert len(system_anchors()) > 0
    unique = {c.fingerprint(hashes.SHA256()) for c in system_anchors()}
    assert len(load_trust_anchors().certificates) == len(unique)


def test_unreadable_or_empty_extra_file(tmp_path):
    with pytest.raises(TLSSetupError, match="trusted-ca-file: cannot read"):
        load_trust_anchors(str(tmp_path / "missing.pem"), include_system=False)
    (tmp_path / "empty.pem").write_text("nothing here\n")
    with pytest.raises(TLSSetupError, match="holds no PEM certificate"):
        load_trust_anchors(str(tmp_path / "empty.pem"), include_system=False)
