"""build_detectors: which detectors a policy gets; and the whole set, end to end, in the Engine."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from mailguard.errors import ScanError
from mailguard.scan.detectors.build import build_detectors
from mailguard.scan.engine import Engine
from mailguard.scan.policy import Policy
from mailguard.scan.verdict import Reason, Status
from tests.peers import require_clamav_testfiles
from tests.scan.archives import EICAR, gz, make_7z, make_ole, make_tar, make_tnef, make_zip, ole_package, zipcrypto_zip


def test_defaults_are_eicar_heuristics_and_the_attachment_policy():
    assert [d.name for d in build_detectors(Policy())] == ["eicar", "heuristics", "policy"]
    assert [d.name for d in build_detectors(Policy(heuristics=False))] == ["eicar", "policy"]
    assert [d.name for d in build_detectors(Policy(heuristics=False, blocked_attachment_types=()))] == ["eicar"]


def test_every_detector(tmp_path):
    pytest.importorskip("yara")
    (tmp_path / "a.ndb").write_text("Test:0:*:414243\n")
    (tmp_path / "r.yar").write_text('rule r { strings: $a = "abc" condition: $a }')
    policy = Policy(signature_paths=(str(tmp_path / "a.ndb"),), yara_rules=(str(tmp_path / "r.yar"),),
                    clamd_enabled=True, clamd_address="unix:/nowhere")
    assert [d.name for d in build_detectors(policy)] == ["eicar", "clamav-db", "yara", "heuristics", "policy", "clamd"]


def test_a_bad_database_fails_at_build_time(tmp_path):
    (tmp_path / "a.ndb").write_text("Broken:0:*:41(\n")
    with pytest.raises(ScanError, match=r"a\.ndb:1: bad signature"):
        build_detectors(Policy(signature_paths=(str(tmp_path),)))


def mail(name: str, data: bytes, content_type: str = "application/octet-stream") -> bytes:
    body = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: files\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
            b"--b1\r\nContent-Type: " + content_type.encode() + b"; name=\"" + name.encode() + b"\"\r\n"
            b"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"" + name.encode()
            + b"\"\r\n\r\n" + body + b"--b1--\r\n")


@pytest.mark.parametrize("name,data,part", [
    ("eicar.zip", make_zip({"eicar.com": EICAR}), "2/eicar.zip/eicar.com"),
    ("eicar.zip", make_zip({"eicar.com": EICAR}, zip64=True), "2/eicar.zip/eicar.com"),
    ("bundle.tgz", gz(make_tar({"in.zip": make_zip({"eicar.com": EICAR})})), "2/bundle.tgz/bundle.tar/in.zip/eicar.com"),
    ("winmail.dat", make_tnef([("eicar.com", EICAR)]), "2/winmail.dat/eicar.com"),
    ("report.doc", make_ole([("\x01Ole10Native", 2)], {"\x01Ole10Native": ole_package("e.com", EICAR)}),
     "2/report.doc/[1]Ole10Native/e.com"),
])
def test_engine_finds_eicar_in_containers(name, data, part):
    engine = Engine(Policy(heuristics=False, blocked_attachment_types=()))
    verdict = engine.scan(mail(name, data))
    assert verdict.status is Status.INFECTED
    assert [(f.name, f.part) for f in verdict.findings] == [("Eicar-Test-Signature", part)]


def test_engine_7z():
    pytest.importorskip("py7zr")
    verdict = Engine(Policy(heuristics=False, blocked_attachment_types=())).scan(mail("e.7z", make_7z({"eicar.com": EICAR})))
    assert [(f.name, f.part) for f in verdict.findings] == [("Eicar-Test-Signature", "2/e.7z/eicar.com")]


def test_engine_encrypted_is_unscanned_but_infected_wins():
    engine = Engine(Policy(heuristics=False, blocked_attachment_types=()))
    verdict = engine.scan(mail("secret.zip", zipcrypto_zip("eicar.com", EICAR, b"pw")))
    assert (verdict.status, verdict.reasons) == (Status.UNSCANNED, [Reason.ENCRYPTED.value])
    both = make_tar({"plain.zip": make_zip({"eicar.com": EICAR}), "secret.zip": zipcrypto_zip("x", b"y", b"pw")})
    assert engine.scan(mail("both.tar", both)).status is Status.INFECTED


@pytest.mark.peer
@pytest.mark.parametrize("name", ["clam.zip", "clam.7z", "clam.tar.gz", "clam.exe.bz2", "clam.tnef",
                                  "clam.bz2.zip", "clam.d64.zip", "clam.ole.doc", "clam.exe"])
def test_engine_with_a_clamav_database_finds_the_clamav_test_files(tmp_path, name):
    folder = Path(require_clamav_testfiles())
    if name == "clam.7z":
        pytest.importorskip("py7zr")
    clam = (folder / "clam.exe").read_bytes()
    (tmp_path / "test.hdb").write_text(f"{hashlib.md5(clam).hexdigest()}:{len(clam)}:ClamAV-Test-File\n")
    engine = Engine(Policy(signature_paths=(str(tmp_path),), heuristics=False))
    verdict = engine.scan(mail(name, (folder / name).read_bytes()))
    assert verdict.status is Status.INFECTED
    assert verdict.detection_names == ["ClamAV-Test-File"]


def test_engine_heuristics_on_a_clean_looking_message():
    engine = Engine(Policy())
    pdf = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    assert engine.scan(mail("report.pdf", pdf, "application/pdf")).status is Status.CLEAN
    verdict = engine.scan(mail("invoice.pdf.js", b"WScript.Echo(1)"))
    assert "Heuristics.DoubleExtension" in verdict.detection_names
