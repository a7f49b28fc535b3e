"""Signature sources: what they are, their hashes and ages, the generation, and the warnings."""

from __future__ import annotations

import os
import time
from dataclasses import replace

from mailguard.scan.detectors.sources import CLAMD_DOWN, CLAMD_NOT_FOUND, CLAMD_OFF, prepare
from mailguard.scan.engine import Engine
from mailguard.scan.policy import Policy

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
DAY = 86400


def test_built_in_only_is_warned_about(tmp_path):
    policy, inventory = prepare(Policy(clamd_enabled="auto", clamd_address=f"unix:{tmp_path / 'none.sock'}"))
    assert policy.clamd_enabled is False and inventory.clamd.state == CLAMD_NOT_FOUND
    assert inventory.clamd.looked_at == (f"unix:{tmp_path / 'none.sock'}",)  # a set address is the only place
    assert inventory.only_built_in and inventory.newest is None
    (warning,) = inventory.warnings(3 * DAY)
    assert "only the built-in EICAR test signature and heuristics" in warning
    assert [row["name"] for row in inventory.detectors()] == ["eicar", "heuristics", "policy"]


def test_files_are_named_with_their_hash_count_and_age(tmp_path):
    database = tmp_path / "sigs"
    database.mkdir()
    (database / "a.hdb").write_text("# a comment\n" + "0" * 32 + ":10:Test.A\n\n" + "1" * 32 + ":10:Test.B\n")
    (database / "b.ndb").write_text("Test.C:0:*:414243\n")
    (database / "notes.txt").write_text("not a database\n")
    week_old = time.time() - 7 * DAY
    os.utime(database / "a.hdb", (week_old, week_old))
    os.utime(database / "b.ndb", (week_old, week_old))
    policy, inventory = prepare(Policy(signature_paths=(str(database),)))
    files = [s for s in inventory.sources if s.detector == "clamav-db"]
    assert [(s.name.rsplit("/", 1)[-1], s.signatures) for s in files] == [("a.hdb", 2), ("b.ndb", 1)]
    assert all(s.version.startswith("sha256:") and len(s.version) == 7 + 64 for s in files)
    assert not inventory.only_built_in
    (stale,) = inventory.warnings(3 * DAY)
    assert "the newest signatures are 7 days old" in stale and "signatures.max-age" in stale
    assert inventory.warnings(8 * DAY) == []
    report = inventory.to_json(3 * DAY)
    assert report["signatures_age_seconds"] >= 7 * DAY and report["generation"] == policy.generation


def test_the_generation_moves_with_signature_content_and_detection_settings(tmp_path):
    signatures = tmp_path / "a.ndb"
    signatures.write_text("Test.C:0:*:414243\n")
    base = Policy(signature_paths=(str(signatures),))
    first, _ = prepare(base)
    assert prepare(base)[0].generation == first.generation  # same sources, same generation
    signatures.write_text("Test.C:0:*:414243\nTest.D:0:*:444546\n")
    second, _ = prepare(base)
    assert second.generation != first.generation
    assert prepare(replace(base, heuristics=False))[0].generation != second.generation
    assert prepare(replace(base, blocked_attachment_types=("exe",)))[0].generation != second.generation


def test_verdicts_carry_the_generation_they_were_made_with(tmp_path):
    policy, _ = prepare(Policy())
    assert Engine(policy).scan(b"Subject: x\r\n\r\n" + EICAR).generation == policy.generation
    assert policy.generation and Engine(Policy()).scan(b"Subject: x\r\n\r\nhi\r\n").generation == ""


def test_clamd_off_and_clamd_on_but_absent(tmp_path):
    assert prepare(Policy(clamd_enabled=False))[1].clamd.state == CLAMD_OFF
    absent = f"unix:{tmp_path / 'none.sock'}"
    policy, inventory = prepare(Policy(clamd_enabled=True, clamd_address=absent))
    # Asked for: still used (each message unscanned until clamd answers), and warned about.
    assert (policy.clamd_enabled, policy.clamd_address, inventory.clamd.state) == (True, absent, CLAMD_DOWN)
    assert any("does not answer" in w for w in inventory.warnings(3 * DAY))


def test_missing_sources_are_problems_not_crashes(tmp_path):
    _, inventory = prepare(Policy(signature_paths=(str(tmp_path / "gone.hdb"),)))
    (source,) = [s for s in inventory.sources if s.detector == "clamav-db"]
    assert source.problem == "no such file or folder"
    assert any("gone.hdb: no such file or folder" in w for w in inventory.warnings(3 * DAY))


def test_a_look_while_running_reads_only_files_that_changed(tmp_path, monkeypatch):
    signatures = tmp_path / "a.ndb"
    signatures.write_text("Test.C:0:*:414243\n")
    base = Policy(signature_paths=(str(signatures),))
    _, first = prepare(base)
    read = []
    original = type(signatures).read_bytes
    monkeypatch.setattr(type(signatures), "read_bytes", lambda self: read.append(self) or original(self))
    _, second = prepare(base, first)
    assert read == [] and second.generation == first.generation
    signatures.write_text("Test.C:0:*:414243\nTest.D:0:*:444546\n")  # a new size, whatever the clock
    _, third = prepare(base, second)
    assert read == [signatures] and third.generation != first.generation
