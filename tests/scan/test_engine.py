from __future__ import annotations

import dataclasses
import io
import zipfile

import pytest

from mailguard.scan.detectors.base import DetectorFailed, ScanObject
from mailguard.scan.engine import Engine
from mailguard.scan.policy import Policy
from mailguard.scan.verdict import Finding, Reason, Status
from tests.scan.archives import lzip, lzma_alone
from tests.scan.corpus import GREETING, attachment, message, nested, single
from tests.scan.reference_detector import EICAR, EICAR_NAME, ReferenceDetector


def _engine(*detectors: object, **policy: object) -> Engine:
    return Engine(dataclasses.replace(Policy(), **policy), list(detectors) or [ReferenceDetector()])


class Failing:
    name = "failing"

    def __init__(self, exc: Exception) -> None:
        self.exc = exc
        self.closed = False

    def scan(self, obj: ScanObject) -> list[Finding]:
        raise self.exc

    def close(self) -> None:
        self.closed = True


def test_objects_given_to_detectors() -> None:
    detector = ReferenceDetector()
    raw = message([GREETING, attachment(b"data", "d.bin")])
    _engine(detector).scan(raw)
    assert detector.seen == ["", "1", "2"]


def test_root_object_is_the_raw_message() -> None:
    seen: list[ScanObject] = []

    class Recorder(ReferenceDetector):
        def scan(self, obj: ScanObject) -> list[Finding]:
            seen.append(obj)
            return []

    raw = message([GREETING, attachment(b"data", "d.bin", "application/pdf")])
    _engine(Recorder()).scan(raw)
    assert seen[0].is_message_root and seen[0].data == raw and seen[0].path == ""
    attached = seen[2]
    assert (attached.data, attached.names, attached.declared_type, attached.is_message_root) == (
        b"data", ("d.bin",), "application/pdf", False)


def test_objects_inside_attached_messages_carry_their_depth() -> None:
    seen: list[ScanObject] = []

    class Recorder(ReferenceDetector):
        def scan(self, obj: ScanObject) -> list[Finding]:
            seen.append(obj)
            return []

    _engine(Recorder()).scan(nested(nested(single(b"deep"))))
    assert [(o.path, o.depth) for o in seen if o.data == b"deep"] == [("2.2.1", 2)]


@pytest.mark.parametrize("exc", [DetectorFailed("clamd down"), RuntimeError("bug")])
def test_detector_failure_is_unscanned_not_clean(exc: Exception) -> None:
    verdict = _engine(Failing(exc)).scan(single(b"hello"))
    assert verdict.status is Status.UNSCANNED
    assert {i.reason for i in verdict.incomplete} == {Reason.ENGINE_ERROR}


def test_a_finding_wins_over_an_incomplete() -> None:
    verdict = _engine(ReferenceDetector(), Failing(DetectorFailed("x"))).scan(single(EICAR))
    assert verdict.status is Status.INFECTED and verdict.incomplete


def test_timeout_is_unscanned() -> None:
    verdict = _engine(max_scan_time=-1.0).scan(message([GREETING]))
    assert verdict.status is Status.UNSCANNED and verdict.reasons == ["timeout"]


def test_object_over_max_object_size_is_unscanned() -> None:
    detector = ReferenceDetector()
    raw = message([GREETING, attachment(bytes(5000), "big.bin")])
    verdict = _engine(detector, max_object_size=3000).scan(raw)
    assert {(i.reason, i.part) for i in verdict.incomplete} == {(Reason.LIMIT, ""), (Reason.LIMIT, "2")}
    assert detector.seen == ["1"]  # what fits is still scanned


def test_attached_messages_nested_past_the_limit_are_unscanned() -> None:
    raw = nested(nested(nested(single(EICAR))))
    verdict = _engine(archive_nesting_level=2).scan(raw)
    assert verdict.status is Status.UNSCANNED and verdict.reasons == ["limit"]


def test_message_partial_is_unsupported() -> None:
    raw = single(b"x", b"Content-Type: message/partial; id=a; number=1\r\n")
    verdict = _engine().scan(raw)
    assert verdict.status is Status.UNSCANNED and verdict.reasons == ["unsupported"]


def test_scan_never_raises_on_non_mail() -> None:
    for raw in (b"", b"\x00" * 100, b"--\r\n--", bytes(range(256)) * 10):
        assert _engine().scan(raw).status in (Status.CLEAN, Status.UNSCANNED)


def test_stats_report_bytes() -> None:
    raw = message([GREETING])
    verdict = _engine().scan(raw)
    assert verdict.stats["bytes"] == len(raw) and verdict.stats["objects"] == 2


def test_close_closes_every_detector() -> None:
    detector = Failing(DetectorFailed("x"))
    _engine(detector).close()
    assert detector.closed


def test_default_detectors_come_from_the_detectors_package() -> None:
    engine = Engine(Policy())
    try:
        assert engine.scan(message([GREETING, attachment(EICAR, "eicar.com")])).status is Status.INFECTED
        assert engine.scan(message([GREETING])).status is Status.CLEAN
    finally:
        engine.close()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_archive_members_are_scanned_with_member_paths() -> None:
    raw = message([GREETING, attachment(_zip({"readme.txt": b"hi", "payload.exe": EICAR}), "invoice.zip")])
    verdict = _engine().scan(raw)
    assert verdict.findings == (Finding(EICAR_NAME, "reference", "2/invoice.zip/payload.exe"),)
    assert _engine(archives=False).scan(raw).status is Status.CLEAN


def test_scan_object_fields_are_the_ones_the_engine_copies() -> None:
    # containers.expand renames an object for its members by spelling out every field
    # (dataclasses.replace is too slow per part); a new field must be added there too,
    # and to ScanObject's hand-written __init__, which must set every field.
    names = [f.name for f in dataclasses.fields(ScanObject)]
    assert names == ["data", "path", "names", "declared_type", "is_message_root", "depth"]
    obj = ScanObject(b"x", "2", ("a.zip",), "application/zip", True, 3)
    assert [getattr(obj, name) for name in names] == [b"x", "2", ("a.zip",), "application/zip", True, 3]
    assert list(vars(obj)) == names
    assert obj == ScanObject(b"x", "2", ("a.zip",), "application/zip", True, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        obj.path = "3"  # type: ignore[misc]


@pytest.mark.parametrize("packed,name", [(lzma_alone, "notes.txt"), (lzip, "data.bin")])
def test_single_compressed_streams_are_opened_whatever_the_attachment_is_called(packed, name) -> None:
    raw = message([GREETING, attachment(packed(EICAR), name)])
    verdict = _engine().scan(raw)
    assert verdict.status is Status.INFECTED
    assert verdict.findings[0].part == f"2/{name}/data"


def test_a_compressed_stream_that_cannot_be_opened_is_unscanned_not_clean() -> None:
    zstd_frame = bytes.fromhex("28b52ffd0458") + bytes(30)  # zstd: recognised, no decoder here
    verdict = _engine().scan(message([GREETING, attachment(zstd_frame, "notes.txt")]))
    assert verdict.status is Status.UNSCANNED and verdict.incomplete[0].reason is Reason.UNSUPPORTED


@pytest.mark.parametrize("name, data, reason", [
    ("bad.lzma", lzma_alone(EICAR)[:13] + b"\x00" + b"\xff" * 40, Reason.CORRUPT),  # damaged after the header
    ("x.lzma", bytes([2 * 45 + 8]) + (1 << 16).to_bytes(4, "little") + bytes(9) + bytes(range(40)),
     Reason.UNSUPPORTED),  # lc = 8: the LZMA SDK writes it, liblzma cannot decode it
    ("bad.lz", b"LZIP\x07" + bytes(40), Reason.CORRUPT),
])
def test_an_attachment_named_as_compressed_that_cannot_be_opened_is_unscanned_not_clean(name, data, reason) -> None:
    verdict = _engine().scan(message([GREETING, attachment(data, name)]))
    assert verdict.status is Status.UNSCANNED
    assert [(i.reason, i.part) for i in verdict.incomplete] == [(reason, f"2/{name}")]


def _without_boundary(body: bytes, *fields: bytes) -> bytes:
    return b"".join([b"From: a@example.org\r\nSubject: x\r\nMIME-Version: 1.0\r\n",
                     b"Content-Type: multipart/mixed\r\n", *fields, b"\r\n", body])


def test_a_multipart_without_a_boundary_is_scanned_as_its_leaves_would_be_read() -> None:
    import base64

    hidden = attachment(EICAR, "eicar.com")  # base64: the raw message does not show the signature
    verdict = _engine().scan(_without_boundary(b"--b1\r\n" + GREETING + b"\r\n--b1\r\n" + hidden + b"\r\n--b1--\r\n"))
    assert verdict.status is Status.INFECTED and verdict.findings[0].part == "alt1.2"
    # the body as one part, decoded per its own (forbidden) transfer encoding
    encoded = _without_boundary(base64.encodebytes(EICAR), b"Content-Transfer-Encoding: base64\r\n")
    assert _engine().scan(encoded).findings[0].part == "1"
    # shown as text by the clients that split nothing: files encoded inside text are found
    uuencoded = b"begin 644 eicar.com\r\n" + b"".join(
        __import__("binascii").b2a_uu(EICAR[i:i + 45]).replace(b"\n", b"\r\n") for i in range(0, len(EICAR), 45))
    verdict = _engine().scan(_without_boundary(uuencoded + b"`\r\nend\r\n"))
    assert verdict.status is Status.INFECTED and verdict.findings[0].part == "1/eicar.com"
