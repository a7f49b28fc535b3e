"""Attachment types blocked by policy: by any name a client derives, apart from heuristics."""

from __future__ import annotations

import pytest

from mailguard.scan.detectors.base import ScanObject
from mailguard.scan.detectors.blocked_types import BlockedTypesDetector
from mailguard.scan.engine import Engine
from mailguard.scan.policy import Policy
from mailguard.scan.verdict import Status
from mailguard.settings import Settings
from mailguard.settings.schema import DEFAULT_BLOCKED_TYPES
from tests.scan.archives import make_tnef, make_zip
from tests.scan.detectors.test_build import mail


def names(*file_names: str, types=DEFAULT_BLOCKED_TYPES) -> list[str]:
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
    assert Policy.from_settings(Settings.from_values({})).blocked_attachment_types == DEFAULT_BLOCKED_TYPES
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


def forwarded(inner: bytes) -> bytes:
    """``inner`` attached as a message (message/rfc822), as a client forwards a message."""
    return (b"From: c@example.org\r\nTo: d@example.org\r\nSubject: fwd\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=outer\r\n\r\n--outer\r\nContent-Type: text/plain\r\n\r\nFYI\r\n"
            b"--outer\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--outer--\r\n")


def test_only_attachments_are_judged_not_the_members_of_an_archive():
    """Outlook blocks the attachments it shows, not what a zip holds: a project's setup.py in
    a zip leaves the message clean (heuristics still look inside archives)."""
    project = mail("proj.zip", make_zip({"proj/setup.py": b"from setuptools import setup\n",
                                         "proj/run.js": b"console.log(1)\n"}), "application/zip")
    assert Engine(Policy()).scan(project).status is Status.CLEAN
    tnef = mail("winmail.dat", make_tnef([("install.bat", b"echo hi\r\n")]))
    assert Engine(Policy()).scan(tnef).policy_names == []


def test_attachments_of_an_attached_message_are_judged_as_the_messages_own():
    inner = mail("run.js", b"console.log(1)\n")
    verdict = Engine(Policy()).scan(forwarded(inner))
    assert verdict.status is Status.BLOCKED and verdict.policy_names == ["Policy.BlockedAttachment.JS"]
    # a mail file attached as a file: the client opens it as a message and shows its attachments
    as_file = Engine(Policy()).scan(mail("fwd.eml", inner))
    assert as_file.policy_names == ["Policy.BlockedAttachment.JS"]
    # ... but one inside an archive is not opened from the message
    zipped = Engine(Policy()).scan(mail("mails.zip", make_zip({"fwd.eml": inner}), "application/zip"))
    assert zipped.policy_names == []


@pytest.mark.parametrize("name", ["evil.psm1", "run.vbscript", "hook.dll", "control.ocx", "driver.sys"])
def test_program_types_the_name_heuristic_flagged_before_are_blocked_by_default(name):
    """Not in Outlook's list, flagged by mailguard's earlier name heuristic: kept by default."""
    verdict = Engine(Policy()).scan(mail(name, b"function Invoke-Evil { }\r\n"))
    assert verdict.status is Status.BLOCKED
    assert verdict.policy_names == ["Policy.BlockedAttachment." + name.rsplit(".", 1)[1].upper()]
