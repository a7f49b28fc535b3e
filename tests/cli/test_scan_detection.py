"""``mailguard scan``: policy findings apart from detections in every output, and reports that name
what the verdicts were made with (engine version, each signature source's hash)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from mailguard.scan.engine import Engine
from mailguard.scan.policy import Policy
from mailguard.scan.rewrite import RESULT_HEADER
from tests.cli.test_scan import mailguard, write_settings
from tests.mailbox.fixtures import EICAR

PAYLOAD = b"figures for the board\n"


def with_attachment(name: str, data: bytes) -> bytes:
    body = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: files\r\nMessage-ID: <" + name.encode()
            + b"@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n"
            b"--b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--b1\r\n"
            b"Content-Type: application/octet-stream; name=\"" + name.encode() + b"\"\r\n"
            b"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"" + name.encode()
            + b"\"\r\n\r\n" + body + b"--b1--\r\n")


@pytest.fixture
def folder(tmp_path: Path, mailguard_home: Path) -> Path:
    mail = tmp_path / "mail"
    mail.mkdir()
    (mail / "1-blocked.eml").write_bytes(with_attachment("almost.com", b"just text\r\n"))
    (mail / "2-infected.eml").write_bytes(with_attachment("eicar.txt", EICAR))
    (mail / "3-both.eml").write_bytes(with_attachment("figures.exe", PAYLOAD))
    signatures = tmp_path / "local.hdb"
    signatures.write_text(f"{hashlib.md5(PAYLOAD).hexdigest()}:{len(PAYLOAD)}:Local.Figures\n")
    write_settings(mailguard_home, f'[detection-engine.signatures]\npaths = ["{signatures}"]\n'
                                   f'[detection-engine.clamd]\nenabled = false\n')
    return mail


def test_json_keeps_policy_apart_and_names_every_signature_source(folder: Path, tmp_path: Path) -> None:
    run = mailguard(str(folder), "--json")
    assert run.returncode == 1, run.stderr  # a blocked attachment is a threat to the exit code
    document = json.loads(run.stdout)
    results = {Path(r["file"]).name: r for r in document["results"]}
    blocked, infected, both = results["1-blocked.eml"], results["2-infected.eml"], results["3-both.eml"]
    assert (blocked["verdict"], blocked["detections"], blocked["policy"]) == (
        "blocked", [], [{"name": "Policy.BlockedAttachment.COM", "part": "2"}])
    assert infected["verdict"] == "infected" and infected["policy"] == []
    assert [d["name"] for d in infected["detections"]] == ["Eicar-Test-Signature"]
    assert both["verdict"] == "infected" and [d["name"] for d in both["detections"]] == ["Local.Figures"]
    assert [p["name"] for p in both["policy"]] == ["Policy.BlockedAttachment.EXE"]
    summary = document["summary"]
    assert (summary["infected"], summary["blocked"], summary["clean"]) == (2, 1, 0)
    detection = summary["detection"]
    assert detection["engine_version"] and len(detection["generation"]) == 16
    content = (tmp_path / "local.hdb").read_bytes()
    assert {(s["detector"], s["version"]) for s in detection["sources"]} == {
        ("eicar", detection["engine_version"]), ("clamav-db", "sha256:" + hashlib.sha256(content).hexdigest())}
    assert detection["clamd"]["state"] == "off"


def test_sarif_rules_say_policy_or_detection_and_extensions_name_the_sources(folder: Path) -> None:
    run = mailguard(str(folder), "--format", "sarif")
    assert run.returncode == 1, run.stderr
    sarif = json.loads(run.stdout)["runs"][0]
    driver = sarif["tool"]["driver"]
    kinds = {rule["id"]: rule["properties"]["kind"] for rule in driver["rules"]}
    assert kinds == {"Policy.BlockedAttachment.COM": "policy", "Policy.BlockedAttachment.EXE": "policy",
                     "Eicar-Test-Signature": "detection", "Local.Figures": "detection"}
    levels = {r["ruleId"]: r["level"] for r in sarif["results"]}
    assert levels["Policy.BlockedAttachment.COM"] == "warning" and levels["Local.Figures"] == "error"
    assert driver["version"] and driver["properties"]["detectionGeneration"]
    extensions = {e["name"]: e for e in sarif["tool"]["extensions"]}
    (database,) = [e for name, e in extensions.items() if name.startswith("clamav-db:")]
    assert len(database["properties"]["sha256"]) == 64 and database["properties"]["signatures"] == 1
    assert extensions["eicar:built-in"]["version"] == driver["version"]


def test_the_table_marks_policy_findings_and_names_the_detection(folder: Path) -> None:
    run = mailguard(str(folder))
    text = run.stdout.decode()
    assert "blocked  " in text and "Policy.BlockedAttachment.COM in 2 (policy)" in text
    assert "Local.Figures in 2; Policy.BlockedAttachment.EXE in 2 (policy)" in text
    assert "1 blocked" in text and "detection: mailguard " in text and "clamav-db 1" in text


def test_headers_and_notices_keep_policy_apart() -> None:
    engine = Engine(Policy())
    blocked = with_attachment("almost.com", b"just text\r\n")
    out = engine.apply(blocked, engine.scan(blocked))
    assert f'{RESULT_HEADER}: blocked; policy="Policy.BlockedAttachment.COM"'.encode() in out
    assert b"Its file type is blocked by policy: Policy.BlockedAttachment.COM." in out
    assert b"contains malware" not in out and b"Subject: [detection Policy.BlockedAttachment.COM] files" in out
    both = with_attachment("eicar.com", EICAR)
    out = engine.apply(both, engine.scan(both))
    assert (f'{RESULT_HEADER}: infected; detections="Eicar-Test-Signature";'
            f' policy="Policy.BlockedAttachment.COM"').encode() in out.replace(b"\r\n ", b" ")
