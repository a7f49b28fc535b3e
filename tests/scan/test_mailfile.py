"""Mail files and encoded text files that arrive as ordinary attachments (containers/mailfile.py,
decoders.encoded_files, and the engine's walk of them)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailguard.scan.containers import mailfile
from mailguard.scan.decoders import encoded_files, inline_blocks, looks_textual
from mailguard.scan.engine import Engine
from mailguard.scan.policy import Policy
from mailguard.scan.verdict import Finding, Reason, Status
from tests.peers import require_clamav_testfiles
from tests.scan.corpus import GREETING, attachment, message, single, text_part
from tests.scan.corpus_mailfiles import CLAM_FILES, MBOX_FROM
from tests.scan.encoders import b64_lines
from tests.scan.test_fuzz import FUZZ
from tests.scan.reference_detector import EICAR, EICAR_NAME, ReferenceDetector


_FUZZ_ENGINE = Engine(Policy(), [ReferenceDetector()])


def _scan(raw: bytes, **policy: object):
    return Engine(dataclasses.replace(Policy(), **policy), [ReferenceDetector()]).scan(raw)


def _eicar_eml() -> bytes:
    return message([GREETING, attachment(EICAR, "eicar.com")], boundary=b"=_mg_inner")


# ---------------------------------------------------------------- recognition


@pytest.mark.parametrize("data", [
    b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nbody\r\n",
    b"From: a\nTo: b\n\nbody",
    b"From: a\rSubject: b\r\rbody",                                    # CR-only mail
    b"Received: from x\r\n\tby y; Tue, 1 Apr 2025\r\nFrom: a\r\n\r\n",  # folded field first
    b"X-Spam: no\r\nContent-Type: text/plain\r\n\r\nhi",               # a saved MIME entity
    b"Subject: headers only, no body\r\n",
    MBOX_FROM + b"From: a\n\nhi\n",
    b"From MAILER-DAEMON Tue Apr 1 10:00:00 2025\nbody\n",
], ids=repr)
def test_mail_files_are_recognised(data: bytes) -> None:
    assert mailfile.recognise(data)


@pytest.mark.parametrize("data", [
    b"",
    b"From: the desk of the CEO\r\nDear all,\r\n\r\nclosed on Friday.\r\n",  # prose after one field
    b"From here on we meet on Mondays.\n",                                  # "From " but no date
    b"Note: x\nVersion: 2\n\nbody",                                        # fields, none of mail
    b"Subject is: this\n",                                                 # a space in the name
    b"MZ\x90\x00\x03\x00\x00\x00:From: x\n\n",
    b"%PDF-1.4\nFrom: x\n\n",
    b"\r\nFrom: a\r\n\r\n",
    b"From: a\r\n" + b"X-Long: " + b"x" * (mailfile.MAX_HEADER_SCAN + 10) + b"\r\n\r\nbody",
], ids=lambda d: repr(d[:40]))
def test_other_data_is_not_mail(data: bytes) -> None:
    assert not mailfile.recognise(data)


def test_mbox_is_split_at_from_lines_only_and_unquoted() -> None:
    first = MBOX_FROM + b"Subject: 1\n\nFrom here on, no date.\n>From the archive\n\n"
    second = MBOX_FROM + b"Subject: 2\n\nbody\n"
    assert mailfile.messages(first + second) == [first.replace(b">From", b"From"), second]
    assert mailfile.messages(b"Subject: x\n\n") == [b"Subject: x\n\n"]


def test_textual_probe_and_encoded_files() -> None:
    assert looks_textual(b"plain text") and not looks_textual(b"MZ\x00\x00") and not looks_textual(b"")
    assert [b.data for b in encoded_files(b64_lines(EICAR), 1000)] == [EICAR]
    assert encoded_files(b"short line\n", 1000) == []
    assert encoded_files(b"TWFu IGlz IGRpc3Rpbmd1aXNoZWQ=\nnot base64!\n", 1000) == []


@pytest.mark.parametrize("html, found", [
    (b'<a href="data:application/x-msdownload;base64,' + b64_lines(EICAR, 20, b"\n") + b'">', EICAR),
    (b"<img src='DATA:;BASE64,QUJD'>", b"ABC"),
    (b"url(data:,%41%42%43)", b"ABC"),
    (b"x:" * 40 + b"dAtA:,ABC", b"ABC"),  # past the colon probes: the lower-cased search
])
def test_data_uris_are_decoded(html: bytes, found: bytes) -> None:
    assert [b.data for b in inline_blocks(html, 10**6)] == [found]


@pytest.mark.parametrize("text", [b"metadata:,ABC", b"data: none", b"data:nocomma", b"data:" * 10_000])
def test_data_uri_look_alikes(text: bytes) -> None:
    assert inline_blocks(text, 10**6) == []


# ---------------------------------------------------------------- the engine's walk


def test_mail_file_parts_are_walked_like_a_message() -> None:
    verdict = _scan(message([GREETING, attachment(_eicar_eml(), "fwd.eml")]))
    assert verdict.findings == (Finding(EICAR_NAME, "reference", "2/fwd.eml/2"),)
    assert not verdict.incomplete


def test_email_files_off_scans_the_mail_file_as_one_file_only() -> None:
    detector = ReferenceDetector()
    raw = message([GREETING, attachment(_eicar_eml(), "fwd.eml")])
    verdict = Engine(dataclasses.replace(Policy(), email_files=False), [detector]).scan(raw)
    assert verdict.status is Status.CLEAN and not verdict.incomplete
    assert not any(p.startswith("2/fwd.eml/") for p in detector.seen)


def test_attached_mail_files_nested_too_deep_are_unscanned() -> None:
    raw = _eicar_eml()
    for level in range(4):
        raw = message([GREETING, attachment(raw, f"level{level}.eml")], boundary=b"=_mg_%d" % level)
    assert _scan(raw).status is Status.INFECTED
    verdict = _scan(raw, archive_nesting_level=2)
    assert verdict.status is Status.UNSCANNED
    assert {i.reason for i in verdict.incomplete} == {Reason.LIMIT}


def test_mail_file_counts_against_the_unpacked_total() -> None:
    verdict = _scan(message([GREETING, attachment(_eicar_eml(), "fwd.eml")]), max_archive_file_size=100)
    assert verdict.status is Status.UNSCANNED
    assert [(i.reason, i.part) for i in verdict.incomplete] == [(Reason.LIMIT, "2/fwd.eml")]


def test_a_plain_text_file_deep_in_nesting_is_not_over_the_limit() -> None:
    # Only a file that holds something is a level deeper; plain text at the limit stays clean.
    note = b"just a note\r\n" * 10
    verdict = _scan(message([GREETING, attachment(note, "note.txt")]), archive_nesting_level=0)
    assert verdict.status is Status.CLEAN and not verdict.incomplete


def test_inline_text_body_that_is_a_message_is_walked_too() -> None:
    # A forwarded message pasted as the text/plain body: walked, so its base64 part is decoded.
    verdict = _scan(single(_eicar_eml()))
    assert Finding(EICAR_NAME, "reference", "1/2") in verdict.findings


def test_base64_message_rfc822_is_walked_once() -> None:
    detector = ReferenceDetector()
    raw = message([text_part(b"fwd\r\n"), b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                   + b64_lines(_eicar_eml())])
    verdict = Engine(Policy(), [detector]).scan(raw)
    assert {f.part for f in verdict.findings} == {"2.2"}
    assert len(detector.seen) == len(set(detector.seen))


# ---------------------------------------------------------------- Debian's clamav-testfiles


@pytest.fixture(scope="module")
def clam_hdb_policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    """The built-in detectors with a ClamAV .hdb holding clam.exe's MD5 (no other signature)."""
    folder = Path(require_clamav_testfiles())
    clam = (folder / "clam.exe").read_bytes()
    hdb = tmp_path_factory.mktemp("sigs") / "clam.hdb"
    hdb.write_text(f"{hashlib.md5(clam).hexdigest()}:{len(clam)}:ClamAV-Test-File.UNOFFICIAL\n")
    return dataclasses.replace(Policy(), signature_paths=(str(hdb),))


@pytest.mark.peer
@pytest.mark.parametrize("attached_as", ["own-name", "neutral-name"])
@pytest.mark.parametrize("name", sorted(CLAM_FILES))
def test_clamav_testfile_attached_as_octet_stream_is_infected(clam_hdb_policy: Policy, name: str,
                                                              attached_as: str) -> None:
    data = (Path(require_clamav_testfiles()) / name).read_bytes()
    filename = name if attached_as == "own-name" else "scan0001.dat"
    engine = Engine(clam_hdb_policy)
    try:
        verdict = engine.scan(message([GREETING, attachment(data, filename)]))
    finally:
        engine.close()
    assert verdict.status is Status.INFECTED, (verdict.findings, verdict.incomplete)
    assert f"2/{filename}/{CLAM_FILES[name]}" in {f.part for f in verdict.findings}
    assert "ClamAV-Test-File.UNOFFICIAL" in verdict.detection_names


@pytest.mark.peer
@pytest.mark.parametrize("name", sorted(CLAM_FILES))
def test_clamav_testfile_with_email_files_off(clam_hdb_policy: Policy, name: str) -> None:
    """Mail files are then scanned as files only; encoded files are still decoded."""
    data = (Path(require_clamav_testfiles()) / name).read_bytes()
    engine = Engine(dataclasses.replace(clam_hdb_policy, email_files=False))
    try:
        verdict = engine.scan(message([GREETING, attachment(data, name)]))
    finally:
        engine.close()
    is_mail = mailfile.recognise(data)
    assert verdict.status is (Status.CLEAN if is_mail else Status.INFECTED), verdict.findings
    assert is_mail == name.startswith(("clam.mail", "clam.exe.mbox"))


# ---------------------------------------------------------------- fuzzing

_MARKERS = [b"", b"From: a\r\n", b"From: a\nTo: b\n\n", MBOX_FROM, MBOX_FROM + b"From: a\n\n", b"Subject: x\r",
            b"<a href='data:;base64,", b"data:,", b"begin 644 x\n", b"(This file must be converted with BinHex 4.0)\n:"]


@FUZZ
@given(st.sampled_from(_MARKERS), st.binary(max_size=2048), st.sampled_from(_MARKERS))
def test_attached_look_alikes_never_break_the_engine(head: bytes, body: bytes, tail: bytes) -> None:
    data = head + body + b"\n" + tail + body[::-1]
    for message_bytes in mailfile.messages(data):
        assert message_bytes
    mailfile.recognise(data)
    for block in encoded_files(data, 4096):
        assert len(block.data) <= max(4096, len(data))
    verdict = _FUZZ_ENGINE.scan(message([GREETING, attachment(data, "x.bin")]))
    assert not [i for i in verdict.incomplete if i.reason is Reason.ENGINE_ERROR], verdict.incomplete
    assert verdict.status is not Status.INFECTED, verdict.findings  # nothing here is EICAR
