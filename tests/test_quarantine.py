"""The quarantine store: atomic, private, byte-identical, and honest about what it holds."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat

import pytest

from mailguard.errors import StorageError, UsageError
from mailguard.quarantine import Entry, Quarantine, QuarantineNotFound, headers_of
from mailguard.scan.verdict import Finding, Incomplete, Reason, Verdict

WHEN = dt.datetime(2025, 4, 1, 10, 0, 0, tzinfo=dt.timezone.utc)
MESSAGE = (b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.org>\r\nTo: b@example.net\r\n"
           b"Subject: Invoice\r\n  for April\r\nMessage-ID: <1@example.org>\r\n\r\n"
           b"body with \x00 odd \xff bytes\r\nand a bare LF line\n.\r\n")
INFECTED = Verdict.build([Finding("Eicar-Test-Signature", "eicar", "2/eicar.zip/eicar.com")],
                         [Incomplete(Reason.ENCRYPTED, "3/secret.zip/a.exe", "password-protected zip member")])


def test_add_get_and_metadata(tmp_path):
    quarantine = Quarantine(tmp_path / "q")
    entry_id = quarantine.add(MESSAGE, INFECTED, "pop3 127.0.0.1:1110 -> pop.example.org:995, RETR 3", now=WHEN)
    assert entry_id.startswith("20250401-") and len(entry_id) == 21
    entry, raw = quarantine.get(entry_id)
    assert raw == MESSAGE
    assert entry == Entry(
        id=entry_id, created="2025-04-01T10:00:00Z", source="pop3 127.0.0.1:1110 -> pop.example.org:995, RETR 3",
        verdict="infected",
        detections=[{"name": "Eicar-Test-Signature", "detector": "eicar", "part": "2/eicar.zip/eicar.com"}],
        incomplete=[{"reason": "encrypted", "part": "3/secret.zip/a.exe", "detail": "password-protected zip member"}],
        size=len(MESSAGE), sha256=entry.sha256, subject="Invoice for April", sender="Jürgen <j@example.org>",
        message_id="<1@example.org>")


def test_files_are_private_and_complete(tmp_path):
    folder = tmp_path / "q"
    entry_id = Quarantine(folder).add(MESSAGE, INFECTED, "test", now=WHEN)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for suffix in (".eml", ".json"):
        assert stat.S_IMODE((folder / (entry_id + suffix)).stat().st_mode) == 0o600
    assert sorted(p.name for p in folder.iterdir()) == [entry_id + ".eml", entry_id + ".json"]  # no temp left
    assert json.loads((folder / (entry_id + ".json")).read_text())["verdict"] == "infected"


def test_a_too_open_existing_folder_is_tightened(tmp_path):
    folder = tmp_path / "q"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    Quarantine(folder).add(MESSAGE, INFECTED, "test")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_same_message_same_day_is_kept_once(tmp_path):
    quarantine = Quarantine(tmp_path)
    first = quarantine.add(MESSAGE, INFECTED, "first", now=WHEN)
    again = quarantine.add(MESSAGE, INFECTED, "second", now=WHEN + dt.timedelta(hours=1))
    assert first == again
    assert [e.source for e in quarantine.list()] == ["first"]
    next_day = quarantine.add(MESSAGE, INFECTED, "third", now=WHEN + dt.timedelta(days=1))
    assert next_day != first and len(quarantine.list()) == 2


def test_hash_prefix_collision_gets_a_suffix(tmp_path):
    quarantine = Quarantine(tmp_path)
    first = quarantine.add(MESSAGE, INFECTED, "a", now=WHEN)
    # Another message whose id would be the same (simulated by planting a different file there).
    (tmp_path / f"{first}.eml").write_bytes(b"different")
    second = quarantine.add(MESSAGE, INFECTED, "b", now=WHEN)
    assert second == first + "-2"
    assert quarantine.get(second)[1] == MESSAGE


def test_an_add_interrupted_before_its_metadata_is_completed(tmp_path):
    quarantine = Quarantine(tmp_path)
    entry_id = quarantine.add(MESSAGE, INFECTED, "a", now=WHEN)
    (tmp_path / f"{entry_id}.json").unlink()
    assert quarantine.list() == []  # not listed without metadata
    assert quarantine.add(MESSAGE, INFECTED, "retry", now=WHEN) == entry_id
    assert [e.source for e in quarantine.list()] == ["retry"]


def test_list_is_oldest_first_and_skips_junk(tmp_path):
    quarantine = Quarantine(tmp_path)
    later = quarantine.add(b"Subject: b\r\n\r\nb", INFECTED, "b", now=WHEN + dt.timedelta(days=2))
    earlier = quarantine.add(b"Subject: a\r\n\r\na", INFECTED, "a", now=WHEN)
    (tmp_path / "20250101-000000000000.json").write_text("{not json")
    (tmp_path / "notes.json").write_text("{}")
    assert [e.id for e in quarantine.list()] == [earlier, later]


def test_missing_folder_lists_nothing(tmp_path):
    assert Quarantine(tmp_path / "absent").list() == []


def test_restore_is_byte_identical_and_never_overwrites(tmp_path, monkeypatch):
    quarantine = Quarantine(tmp_path / "q")
    entry_id = quarantine.add(MESSAGE, INFECTED, "test", now=WHEN)
    target = quarantine.restore(entry_id, tmp_path / "out.eml")
    assert target.read_bytes() == MESSAGE
    with pytest.raises(StorageError, match="exists already"):
        quarantine.restore(entry_id, tmp_path / "out.eml")
    folder = tmp_path / "restored"
    folder.mkdir()
    assert quarantine.restore(entry_id, folder) == folder / f"{entry_id}.eml"
    monkeypatch.chdir(tmp_path)
    assert quarantine.restore(entry_id).resolve() == (tmp_path / f"{entry_id}.eml").resolve()
    assert (tmp_path / f"{entry_id}.eml").read_bytes() == MESSAGE
    assert len(quarantine.list()) == 1  # restoring keeps the entry


def test_tampered_message_is_refused(tmp_path):
    quarantine = Quarantine(tmp_path)
    entry_id = quarantine.add(MESSAGE, INFECTED, "test", now=WHEN)
    (tmp_path / f"{entry_id}.eml").write_bytes(MESSAGE + b"x")
    with pytest.raises(StorageError, match="changed on disk"):
        quarantine.restore(entry_id, tmp_path / "out.eml")
    assert not (tmp_path / "out.eml").exists()


def test_delete(tmp_path):
    quarantine = Quarantine(tmp_path)
    entry_id = quarantine.add(MESSAGE, INFECTED, "test", now=WHEN)
    assert quarantine.delete(entry_id).id == entry_id
    assert quarantine.list() == [] and list(tmp_path.iterdir()) == []
    with pytest.raises(QuarantineNotFound):
        quarantine.delete(entry_id)


@pytest.mark.parametrize("asked", ["20250401-000000000000", "../../etc/passwd", "", "zzzz", "20250401-"])
def test_unknown_ids(tmp_path, asked):
    quarantine = Quarantine(tmp_path)
    quarantine.add(b"Subject: x\r\n\r\n", INFECTED, "test", now=WHEN - dt.timedelta(days=1))
    with pytest.raises(QuarantineNotFound, match="no quarantined message with id"):
        quarantine.get(asked)


def test_unique_prefix_and_ambiguous_prefix(tmp_path):
    quarantine = Quarantine(tmp_path)
    first = quarantine.add(b"Subject: a\r\n\r\na", INFECTED, "a", now=WHEN)
    quarantine.add(b"Subject: b\r\n\r\nb", INFECTED, "b", now=WHEN)
    assert quarantine.entry(first[:13]).id == first  # the two hashes differ in their first digits
    with pytest.raises(UsageError, match="is the start of 2 quarantine ids"):
        quarantine.entry("20250401")


def test_clean_and_unscanned_verdicts_are_recorded(tmp_path):
    quarantine = Quarantine(tmp_path)
    unscanned = Verdict.build([], [Incomplete(Reason.LIMIT, "2/bomb.zip", "total unpacked size limit exceeded")])
    entry_id = quarantine.add(b"Subject: s\r\n\r\n", unscanned, "scan /var/mail/x#4")
    entry, _ = quarantine.get(entry_id)
    assert (entry.verdict, entry.detections, entry.incomplete[0]["reason"]) == ("unscanned", [], "limit")


def test_headers_of_unfolds_decodes_and_stops_at_the_body():
    assert headers_of(MESSAGE) == [
        ("From", "Jürgen <j@example.org>"), ("To", "b@example.net"), ("Subject", "Invoice for April"),
        ("Message-ID", "<1@example.org>")]
    assert headers_of(b"Subject: only headers") == [("Subject", "only headers")]
    assert headers_of(b"Subject: bare LF\n\nX-Not: a header\n") == [("Subject", "bare LF")]


# -- a folder another user could change is refused (the engine's user alone may touch the originals) --

NOBODY = 65534


def _owned_by_nobody(path, mode=0o755):
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, NOBODY, NOBODY)
    os.chmod(path, mode)
    return path


@pytest.fixture
def as_root():
    from tests.peers import require_root

    require_root()


def test_a_folder_owned_by_another_user_is_refused_not_chmodded(tmp_path, as_root):
    from mailguard.quarantine import UnsafeQuarantine

    folder = _owned_by_nobody(tmp_path / "q")
    with pytest.raises(UnsafeQuarantine) as refused:
        Quarantine(folder).add(MESSAGE, INFECTED, "test")
    assert "owned by nobody (uid 65534)" in str(refused.value) and str(folder) in str(refused.value)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755 and folder.stat().st_uid == NOBODY
    assert list(folder.iterdir()) == []
    with pytest.raises(UnsafeQuarantine):
        Quarantine(folder).check()


def test_a_folder_inside_another_users_folder_is_refused(tmp_path, as_root):
    from mailguard.quarantine import UnsafeQuarantine

    theirs = _owned_by_nobody(tmp_path / "theirs", 0o700)
    with pytest.raises(UnsafeQuarantine, match="on its way is owned by nobody"):
        Quarantine(theirs / "q").add(MESSAGE, INFECTED, "test")
    assert not (theirs / "q").exists()


def test_a_symbolic_link_owned_by_another_user_is_refused(tmp_path, as_root):
    from mailguard.quarantine import UnsafeQuarantine

    ours = tmp_path / "q"
    ours.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(ours)
    assert Quarantine(link).add(MESSAGE, INFECTED, "test")  # our own link to our own folder
    os.lchown(link, NOBODY, NOBODY)  # nobody could now point it anywhere
    with pytest.raises(UnsafeQuarantine, match=f"symbolic link {link} is owned by nobody"):
        Quarantine(link / ".").check()
    with pytest.raises(UnsafeQuarantine):
        Quarantine(link).add(MESSAGE, INFECTED, "again")


def test_a_folder_on_the_way_that_others_may_change_is_refused_unless_sticky(tmp_path):
    from mailguard.quarantine import UnsafeQuarantine

    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(UnsafeQuarantine, match="can be changed by others"):
        Quarantine(shared / "q").add(MESSAGE, INFECTED, "test")
    os.chmod(shared, 0o1777)  # like /tmp: only an entry's owner may rename or delete it
    Quarantine(shared / "q").add(MESSAGE, INFECTED, "test")
    os.chmod(shared, 0o775)
    with pytest.raises(UnsafeQuarantine, match="can be changed by its group"):
        Quarantine(shared / "q").check()


@pytest.fixture
def umask_002():
    # Debian and Ubuntu give each user a private group and this umask: mkdir makes 0775 folders.
    old = os.umask(0o002)
    try:
        yield
    finally:
        os.umask(old)


def test_a_first_start_under_a_group_writable_umask_accepts_the_folders_it_made(tmp_path, umask_002):
    home = tmp_path / "uhome"
    home.mkdir(mode=0o700)
    folder = home / ".local/state/mailguard/quarantine"
    Quarantine(folder).prepare()
    Quarantine(folder).add(MESSAGE, INFECTED, "test")
    Quarantine(folder).check()
    for made in (folder, *list(folder.parents)[:4]):
        assert stat.S_IMODE(made.stat().st_mode) == 0o700, made
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_an_existing_group_writable_folder_on_the_way_is_still_refused(tmp_path, umask_002):
    from mailguard.quarantine import UnsafeQuarantine

    shared = tmp_path / "shared"
    shared.mkdir()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o775
    with pytest.raises(UnsafeQuarantine, match="can be changed by its group"):
        Quarantine(shared / "new" / "q").prepare()
    assert not (shared / "new").exists()


def test_an_own_folder_others_may_change_is_tightened_when_used_and_refused_when_only_read(tmp_path):
    from mailguard.quarantine import UnsafeQuarantine

    folder = tmp_path / "q"
    folder.mkdir()
    os.chmod(folder, 0o777)
    with pytest.raises(UnsafeQuarantine, match="can be changed by others"):
        Quarantine(folder).check()
    Quarantine(folder).prepare()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    Quarantine(folder).check()


def test_an_engine_whose_quarantine_became_another_users_withholds_the_rewrite(tmp_path, as_root):
    # The engine checked the folder at start; one chown later, every add refuses it, and the
    # session then delivers nothing (docs/architecture.md: the original must be kept first).
    from mailguard.scanpool.job import scan_message
    from mailguard.scan.policy import Policy
    from tests.scan.reference_detector import EICAR

    folder = _owned_by_nobody(tmp_path / "q", 0o700)
    raw = b"From: a@example.org\r\nSubject: x\r\n\r\n" + EICAR + b"\r\n"
    outcome = scan_message(raw, "test", Policy(), str(folder))
    assert outcome.status == "infected" and outcome.quarantine_failed and "owned by nobody" in outcome.error
    assert list(folder.iterdir()) == []
