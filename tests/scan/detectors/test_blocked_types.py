"""Attachment types blocked by policy: by any name a client derives, apart from heuristics."""

from __future__ import annotations

import pytest

from mailguard.scan.detectors.base import ScanObject
from mailguard.scan.detectors.blocked_types import BlockedTypesDetector
from mailguard.scan.engine import Engine
from mailguard.scan.policy import Policy
from mailguard.scan.verdict import Status
from mailguard.settings import Settings
from mailguard.settings.schema import OUTLOOK_BLOCKED_TYPES
from tests.scan.detectors.test_init import mail


def names(*file_names: str, types=OUTLOOK_BLOCKED_TYPES) -> list[str]:
    found = BlockedTypesDetector(types).scan(ScanObject(b"plain text, no program", "2", file_names))
    assert all(f.detector == "policy" and f.part == "2" for f in found)
    return [f.name for f in found]


@pytest.mark.parametrize("name,expected", [
    ("almost.com", "Policy.BlockedAttachment.COM"),
    ("run.js", "Policy.BlockedAttachment.JS"),
    ("RUN.JSE", "Policy.BlockedAttachment.JSE"),
    ("setup.ps1", "Policy.BlockedAttachment.PS1"),
    ("screensaver.scr", "Policy.BlockedAttachment.SCR"),
    ("evil.js.", "Policy.BlockedAttachment.JS"),          # Windows drops trailing dots
    ("evil.js   ", "Policy.BlockedAttachment.JS"),        # and trailing spaces
    ("folder/sub/evil.vbe", "Policy.BlockedAttachment.VBE"),
    ("evil.js\x00.txt", "Policy.BlockedAttachment.JS"),   # a NUL ends the name for C code
    ("invoice\u202efdp.exe", "Policy.BlockedAttachment.EXE"),  # shows as invoiceexe.pdf
    ("disk.vhdx", "Policy.BlockedAttachment.VHDX"),
])
def test_outlook_level_one_types_are_blocked_whatever_the_content(name, expected):
    assert names(name) == [expected]


def test_any_derived_name_counts_and_harmless_names_give_nothing():
    assert names("readme.txt", "readme.js") == ["Policy.BlockedAttachment.JS"]
    assert names("report.pdf", "photo.jpg", "notes.txt") == []
    assert names("almost.com", types=("exe",)) == []


def test_the_default_setting_is_outlooks_list_and_can_be_emptied():
    assert Policy.from_settings(Settings.from_values({})).blocked_attachment_types == OUTLOOK_BLOCKED_TYPES
    key = "web-and-email.email-client.threatsense.options.blocked-attachment-types"
    assert Policy.from_settings(Settings.from_values({key: ".EXE, com"})).blocked_attachment_types == ("exe", "com")
    assert Policy.from_settings(Settings.from_values({key: []})).blocked_attachment_types == ()


def test_a_text_file_named_like_a_program_is_blocked_not_infected():
    verdict = Engine(Policy()).scan(mail("almost.com", b"just text\r\n"))
    assert verdict.status is Status.BLOCKED
    assert verdict.policy_names == ["Policy.BlockedAttachment.COM"] and verdict.detection_names == []


def test_policy_and_heuristics_switch_apart():
    pe = b"MZ" + bytes(0x3A) + (0x40).to_bytes(4, "little") + b"PE\x00\x00" + bytes(64)
    message = mail("tool.exe", pe)
    both = Engine(Policy()).scan(message)
    assert (both.status, both.detection_names, both.policy_names) == (
        Status.INFECTED, ["Heuristics.Executable.PE"], ["Policy.BlockedAttachment.EXE"])
    no_heuristics = Engine(Policy(heuristics=False)).scan(message)
    assert (no_heuristics.status, no_heuristics.finding_names) == (Status.BLOCKED, ["Policy.BlockedAttachment.EXE"])
    no_policy = Engine(Policy(blocked_attachment_types=())).scan(message)
    assert (no_policy.status, no_policy.finding_names) == (Status.INFECTED, ["Heuristics.Executable.PE"])
