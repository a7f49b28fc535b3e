"""clamd INSTREAM against a real clamd started on a private socket, plus the failure paths."""

from __future__ import annotations

import base64
import socket
import threading
import time

import pytest

from mailguard.errors import ScanError
from mailguard.scan.detectors.base import DetectorFailed, ScanObject
from mailguard.scan.detectors.clamd import ClamdDetector, parse_address
from mailguard.scan.limits import ScanIncomplete
from mailguard.scan.verdict import Finding, Reason
from tests.peers.clamd import Clamd

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
CUSTOM = b"mailguard custom test payload 7f3a"
STREAM_MAX = 1024 * 1024


def mail(attachment: bytes, name: str = "file.bin") -> bytes:
    body = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    return (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: test\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
            b"--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
            b"Content-Disposition: attachment; filename=\"" + name.encode() + b"\"\r\n\r\n" + body + b"--b1--\r\n")


@pytest.fixture(scope="module")
def clamd(tmp_path_factory):
    server = Clamd(tmp_path_factory.mktemp("clamd"), tcp=True, settings=f"StreamMaxLength {STREAM_MAX}\n")
    server.write_ndb({"Test.Eicar": EICAR, "Test.Custom": CUSTOM})
    with server:  # socket-activated: connections wait in the backlog until it is ready
        yield {"unix": server.address, "tcp": server.tcp_address}


def root(data: bytes) -> ScanObject:
    return ScanObject(data, "", is_message_root=True)


@pytest.mark.peer
@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_real_clamd_finds_what_its_database_holds(clamd, transport):
    detector = ClamdDetector(clamd[transport], timeout=30)
    assert [f.name.removesuffix(".UNOFFICIAL") for f in detector.scan(root(mail(EICAR, "eicar.com")))] == [
        "Test.Eicar"]
    assert [f.name.removesuffix(".UNOFFICIAL") for f in detector.scan(root(mail(CUSTOM)))] == ["Test.Custom"]
    assert detector.scan(root(mail(b"nothing to see here"))) == []


@pytest.mark.peer
def test_findings_carry_the_detector_and_root_part(clamd):
    (finding,) = ClamdDetector(clamd["unix"], timeout=30).scan(root(EICAR))
    assert (finding.detector, finding.part) == ("clamd", "")


@pytest.mark.peer
def test_only_the_message_root_is_sent(clamd):
    detector = ClamdDetector(clamd["unix"], timeout=30)
    assert detector.scan(ScanObject(EICAR, "2/eicar.com", ("eicar.com",))) == []


@pytest.mark.peer
def test_chunked_stream_larger_than_one_chunk(clamd):
    big = mail(b"padding " * 60_000 + CUSTOM)  # about 640 KB encoded, three chunks
    assert [f.name.removesuffix(".UNOFFICIAL") for f in ClamdDetector(clamd["unix"], timeout=30).scan(root(big))] \
        == ["Test.Custom"]


@pytest.mark.peer
def test_stream_over_clamds_limit_is_limit_not_clean(clamd):
    huge = mail(bytes(2 * STREAM_MAX))
    with pytest.raises(ScanIncomplete) as caught:
        ClamdDetector(clamd["unix"], timeout=30).scan(root(huge))
    assert caught.value.reason is Reason.LIMIT


def test_clamd_down_is_detector_failed(tmp_path):
    with pytest.raises(DetectorFailed, match="clamd at unix:"):
        ClamdDetector(f"unix:{tmp_path / 'absent.sock'}", timeout=2).scan(root(b"x"))


def test_silent_clamd_times_out():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    accepted = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        with pytest.raises(DetectorFailed, match="did not answer"):
            ClamdDetector(f"tcp:127.0.0.1:{listener.getsockname()[1]}", timeout=0.5).scan(root(b"hello"))
        assert time.monotonic() - started < 3
    finally:
        thread.join(timeout=5)
        for connection, _ in accepted:
            connection.close()
        listener.close()


def _one_reply_server(reply: bytes):
    """A loopback server that reads one request and answers ``reply``; (address, stop)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def answer() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(reply)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()

    def stop() -> None:
        thread.join(timeout=5)
        listener.close()

    return f"tcp:127.0.0.1:{listener.getsockname()[1]}", stop


def test_garbage_reply_is_detector_failed():
    address, stop = _one_reply_server(b"stream: something odd\x00")
    try:
        with pytest.raises(DetectorFailed, match="something odd"):
            ClamdDetector(address, timeout=5).scan(root(b"hi"))
    finally:
        stop()


def test_every_finding_of_an_all_match_clamd():
    address, stop = _one_reply_server(b"stream: Sig.B FOUND\x00stream: Sig.A FOUND\x00")
    try:
        assert [f.name for f in ClamdDetector(address, timeout=5).scan(root(b"hi"))] == ["Sig.A", "Sig.B"]
    finally:
        stop()


@pytest.mark.parametrize("address,expected", [
    ("unix:/run/clamav/clamd.ctl", (socket.AF_UNIX, "/run/clamav/clamd.ctl")),
    ("tcp:127.0.0.1:3310", (socket.AF_INET, ("127.0.0.1", 3310))),
    ("tcp:[::1]:3310", (socket.AF_INET6, ("::1", 3310))),
])
def test_addresses(address, expected):
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["", "unix:", "tcp:localhost", "tcp::3310", "tcp:host:99999", "http://x"])
def test_bad_addresses(address):
    with pytest.raises(ScanError, match="bad clamd address"):
        parse_address(address)


def test_finding_shape():
    detector = ClamdDetector("unix:/nowhere", timeout=1)
    assert detector._findings("stream: Win.Test.EICAR_HDB-1 FOUND", "") == [
        Finding("Win.Test.EICAR_HDB-1", "clamd", "")]
    assert detector._findings("stream: OK", "") == []


def test_version_answers_taken_apart(monkeypatch):
    import time as clock
    from datetime import datetime, timezone

    from mailguard.scan.detectors.clamd import ClamdVersion, candidates

    monkeypatch.setenv("TZ", "UTC")
    clock.tzset()
    try:
        official = ClamdVersion.parse("ClamAV 1.0.7/27480/Sun Dec  6 09:25:03 2026\n")
    finally:
        monkeypatch.undo()
        clock.tzset()
    assert (official.engine, official.database) == ("ClamAV 1.0.7", 27480)
    assert official.database_date == datetime(2026, 12, 6, 9, 25, 3, tzinfo=timezone.utc)
    unofficial = ClamdVersion.parse("ClamAV 1.4.6")  # unofficial databases only: no database version
    assert (unofficial.engine, unofficial.database, unofficial.database_date) == ("ClamAV 1.4.6", None, None)
    assert candidates("tcp:127.0.0.1:3310") == ("tcp:127.0.0.1:3310",)  # a set address: itself alone


def test_the_default_address_stands_for_the_distributions_places_each_socket_once(tmp_path, monkeypatch) -> None:
    """/var/run is /run on Debian: its two names for clamd.ctl are probed once (a clamd still
    loading costs a time-out per probe)."""
    from mailguard.scan.detectors import clamd

    (tmp_path / "run").mkdir()
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "run").symlink_to(tmp_path / "run")
    default = f"unix:{tmp_path}/var/run/clamav/clamd.ctl"
    monkeypatch.setattr(clamd, "DEFAULT_ADDRESS", default)
    monkeypatch.setattr(clamd, "DISTRIBUTION_ADDRESSES", (f"unix:{tmp_path}/run/clamav/clamd.ctl",
                                                          "unix:/run/clamd.scan/clamd.sock"))
    assert clamd.candidates(default) == (default, "unix:/run/clamd.scan/clamd.sock")
    assert clamd.candidates(f"unix:{tmp_path}/run/clamav/clamd.ctl") == (f"unix:{tmp_path}/run/clamav/clamd.ctl",)
