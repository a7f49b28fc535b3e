"""clamd in the running engine, against a real clamd with its own config, socket and database:
found or not (auto), its version and database shown, restarted and updated under the engine."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailguard.cli.app import app
from mailguard.scan.detectors.sources import CLAMD_DOWN, CLAMD_IN_USE, CLAMD_NOT_FOUND, prepare
from mailguard.scan.engine import Engine
from mailguard.scan.policy import Policy
from mailguard.scan.verdict import Status
from tests.peers import free_port, require_clamav_testfiles
from tests.peers.clamd import Clamd
from tests.proxy.harness import EC, filter_server, run

pytestmark = [pytest.mark.peer, pytest.mark.timeout(240)]

DAILY = b"mailguard daily test payload 5e1b77"
NEWER = b"mailguard newer test payload 9c02aa"


def message(data: bytes) -> bytes:
    body = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: test\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
            b"--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
            b"Content-Disposition: attachment; filename=data.bin\r\n\r\n" + body + b"--b1--\r\n")


@pytest.fixture
def clamd(tmp_path_factory):  # type: ignore[no-untyped-def]
    server = Clamd(tmp_path_factory.mktemp("clamd"))
    server.write_daily({"Test.Daily": DAILY}, version=27001)
    with server:
        yield server


def test_auto_uses_a_clamd_that_answers_and_names_its_database(clamd) -> None:  # type: ignore[no-untyped-def]
    policy, inventory = prepare(Policy(clamd_enabled="auto", clamd_address=clamd.address))
    assert (policy.clamd_enabled, policy.clamd_address) == (True, clamd.address), clamd.log()
    assert inventory.clamd.state == CLAMD_IN_USE
    version = inventory.clamd.version
    assert version.engine.startswith("ClamAV ") and version.database == 27001 and version.database_date is not None
    assert not inventory.only_built_in and inventory.newest == version.database_date
    verdict = Engine(policy).scan(message(DAILY))
    assert verdict.status is Status.INFECTED
    assert [(f.name.removesuffix(".UNOFFICIAL"), f.detector) for f in verdict.findings] == [("Test.Daily", "clamd")]


def test_status_shows_clamd_and_its_database(clamd, mailguard_home) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    assert runner.invoke(app, ["config", "set", "detection-engine.clamd.address", clamd.address]).exit_code == 0
    shown = runner.invoke(app, ["status", "--json"])
    assert shown.exit_code == 0, shown.output
    detection = json.loads(shown.stdout)["detection"]
    assert detection["clamd"]["state"] == "in use" and detection["clamd"]["database_version"] == 27001
    assert [row["name"] for row in detection["detectors"]] == ["eicar", "heuristics", "clamd", "policy"]
    assert any(s["detector"] == "clamd" and "/27001/" in s["version"] for s in detection["sources"])
    assert detection["warnings"] == []
    text = runner.invoke(app, ["status"]).stdout
    assert f"clamd: in use at {clamd.address} (ClamAV " in text and "database 27001 of " in text


def test_auto_without_a_clamd_runs_without_it_and_says_so(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    absent = Clamd(tmp_path / "clamd")  # configured, never started: nothing answers on its socket
    values = {"detection-engine.clamd.address": absent.address}

    async def scenario():  # type: ignore[no-untyped-def]
        async with filter_server(free_port(), values=values) as (server, _):
            outcome = await server.pool.scan(message(DAILY), "test")
            return outcome, server.snapshot()["detection"]

    with caplog.at_level(logging.INFO, logger="mailguard.detection"):
        outcome, detection = run(scenario())
    assert outcome.status == "clean"  # scanned without clamd: not unscanned for want of it
    assert detection["clamd"]["state"] == CLAMD_NOT_FOUND
    assert any("only the built-in EICAR" in w for w in detection["warnings"])
    assert any(f"clamd not found (looked at {absent.address})" in r.getMessage() for r in caplog.records)
    runner = CliRunner()
    assert runner.invoke(app, ["config", "set", "detection-engine.clamd.address", absent.address]).exit_code == 0
    assert f"clamd: not found (looked at {absent.address})" in runner.invoke(app, ["status"]).stdout


def test_clamd_switched_off_is_not_asked_even_when_it_answers(clamd) -> None:  # type: ignore[no-untyped-def]
    policy, inventory = prepare(Policy(clamd_enabled=False, clamd_address=clamd.address))
    assert policy.clamd_enabled is False and inventory.clamd.state == "off"
    assert Engine(policy).scan(message(DAILY)).status is Status.CLEAN
    assert not any(s.detector == "clamd" for s in inventory.sources)


@pytest.mark.parametrize("on_scan_error", ["pass", "block"])
def test_clamd_stopped_and_started_under_a_running_engine(clamd, on_scan_error: str) -> None:  # type: ignore[no-untyped-def]
    values = {"detection-engine.clamd.address": clamd.address, EC + "response.on-scan-error": on_scan_error}

    async def scenario():  # type: ignore[no-untyped-def]
        async with filter_server(free_port(), values=values) as (server, _):
            before = await server.pool.scan(message(DAILY), "before")
            generation = server.config.policy.generation
            clamd.stop()
            meanwhile = await server.pool.scan(message(b"harmless"), "meanwhile")
            assert not await server.detection.check()  # a clamd going away is no update
            away = server.snapshot()["detection"]
            clamd.start()
            after = await server.pool.scan(message(DAILY), "after")  # used again: nothing to reconnect
            await server.detection.check()
            back = server.snapshot()["detection"]
            return before, meanwhile, away, after, back, generation, server.config.policy.generation

    before, meanwhile, away, after, back, generation, generation_after = run(scenario(), timeout=200)
    assert before.status == "infected" and after.status == "infected"
    assert [d.removesuffix(".UNOFFICIAL") for d in after.detections] == ["Test.Daily"]
    # Scanned while clamd was away: unscanned (never clean), delivered per on-scan-error.
    assert meanwhile.status == "unscanned" and meanwhile.reasons == ("engine-error",)
    delivered = meanwhile.delivered or b""
    if on_scan_error == "pass":
        assert b'X-MailGuard-Result: unscanned; reason="engine-error"' in delivered and b"harmless" not in delivered
        assert base64.b64encode(b"harmless") in delivered  # the message itself, tagged
    else:
        assert b"could not be scanned (engine-error)" in delivered and base64.b64encode(b"harmless") not in delivered
    assert away["clamd"]["state"] == CLAMD_DOWN and any("does not answer" in w for w in away["warnings"])
    assert back["clamd"]["state"] == CLAMD_IN_USE and back["warnings"] == []
    assert generation_after == generation  # the same database again


def test_a_new_clamd_database_is_an_update(clamd) -> None:  # type: ignore[no-untyped-def]
    values = {"detection-engine.clamd.address": clamd.address}

    async def scenario():  # type: ignore[no-untyped-def]
        async with filter_server(free_port(), values=values) as (server, _):
            first = await server.pool.scan(message(NEWER), "first")
            generation = server.config.policy.generation
            # freshclam's new daily database; clamd restarted with it (clamd reloads on its own too)
            clamd.write_daily({"Test.Daily": DAILY, "Test.Newer": NEWER}, version=27002)
            clamd.stop()
            clamd.start()
            await server.detection.check()  # what the engine does every minute, now
            second = await server.pool.scan(message(NEWER), "second")
            return first, second, generation, server.config.policy.generation, server.snapshot()

    first, second, generation, new_generation, snapshot = run(scenario(), timeout=200)
    assert first.status == "clean" and first.generation == generation
    assert new_generation != generation
    assert second.status == "infected" and second.generation == new_generation
    assert snapshot["detection"]["clamd"]["database_version"] == 27002


@pytest.mark.parametrize("name", ["clam.arj", "clam.chm", "clam.impl.zip", "clam.sis"])
def test_clamd_found_by_default_catches_what_the_built_in_engine_cannot(tmp_path, name: str) -> None:
    """Debian's test files that our own readers name unscanned or miss, with the same signature
    (clam.exe's hash) given to both engines."""
    folder = require_clamav_testfiles()
    clam = (Path(folder) / "clam.exe").read_bytes()
    line = f"{hashlib.md5(clam).hexdigest()}:{len(clam)}:ClamAV-Test-File\n"
    signatures = tmp_path / "local.hdb"
    signatures.write_text(line)
    mail = message((Path(folder) / name).read_bytes())
    alone = Engine(Policy(signature_paths=(str(signatures),), clamd_enabled=False)).scan(mail)
    assert alone.status is not Status.INFECTED
    clamd = Clamd(tmp_path / "clamd")
    clamd.write_database("local.hdb", line)
    with clamd:
        policy, _ = prepare(Policy(signature_paths=(str(signatures),), clamd_address=clamd.address,
                                   clamd_enabled="auto"))
        verdict = Engine(policy).scan(mail)
    assert verdict.status is Status.INFECTED, clamd.log()
    assert {(f.name.removesuffix(".UNOFFICIAL"), f.detector) for f in verdict.findings} == {
        ("ClamAV-Test-File", "clamd")}


def test_scan_reports_name_clamd_and_its_database(clamd, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "daily.eml").write_bytes(message(DAILY))
    runner = CliRunner()
    assert runner.invoke(app, ["config", "set", "detection-engine.clamd.address", clamd.address]).exit_code == 0
    run = runner.invoke(app, ["scan", "--json", "--jobs", "1", str(tmp_path / "daily.eml")])
    assert run.exit_code == 1, run.output
    document = json.loads(run.stdout)
    (result,) = document["results"]
    assert [(d["name"].removesuffix(".UNOFFICIAL"), d["detector"]) for d in result["detections"]] == [
        ("Test.Daily", "clamd")]
    detection = document["summary"]["detection"]
    assert detection["clamd"]["database_version"] == 27001
    (source,) = [s for s in detection["sources"] if s["detector"] == "clamd"]
    assert source["name"] == clamd.address and "/27001/" in source["version"]
    sarif = json.loads(runner.invoke(app, ["scan", "--format", "sarif", "--jobs", "1",
                                           str(tmp_path / "daily.eml")]).stdout)
    (extension,) = [e for e in sarif["runs"][0]["tool"]["extensions"] if e["name"].startswith("clamd:")]
    assert "/27001/" in extension["version"]
