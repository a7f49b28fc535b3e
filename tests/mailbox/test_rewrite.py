import os

import pytest

from mailguard.errors import StorageError
from mailguard.mailbox.results import MessageResult
from mailguard.mailbox.rewrite import rewrite_message_file
from tests.mailbox.fixtures import make_maildir, message


def scanned(path) -> MessageResult:
    info = os.stat(path)
    return MessageResult(str(path.parent.parent), str(path), {"format": "maildir", "file": "cur/1:2,S"},
                         identity=(info.st_ino, info.st_size, info.st_mtime_ns), rewritten=b"new\n")


def test_the_message_is_replaced_under_its_name_via_tmp(tmp_path):
    root = make_maildir(tmp_path / "md", {"cur/1:2,S": message(1)})
    path = root / "cur" / "1:2,S"
    result = scanned(path)
    kept = []
    rewrite_message_file(result, lambda raw, r: kept.append(raw) or "Q7")
    assert path.read_bytes() == b"new\n"
    assert kept == [message(1)] and result.quarantine_id == "Q7" and result.changed
    assert os.listdir(root / "tmp") == [] and os.listdir(root / "cur") == ["1:2,S"]


def test_a_message_changed_since_the_scan_is_left_alone(tmp_path):
    root = make_maildir(tmp_path / "md", {"cur/1:2,S": message(1)})
    path = root / "cur" / "1:2,S"
    result = scanned(path)
    path.write_bytes(message(1) + b"appended by someone else\n")
    with pytest.raises(StorageError, match="changed on disk"):
        rewrite_message_file(result, lambda raw, r: "Q")
    assert path.read_bytes().endswith(b"appended by someone else\n")


def test_a_renamed_message_is_not_recreated(tmp_path):
    root = make_maildir(tmp_path / "md", {"cur/1:2,S": message(1)})
    path = root / "cur" / "1:2,S"
    result = scanned(path)
    os.rename(path, root / "cur" / "1:2,ST")  # a client flagged it meanwhile
    with pytest.raises(FileNotFoundError):
        rewrite_message_file(result, lambda raw, r: "Q")
    assert os.listdir(root / "cur") == ["1:2,ST"]


def test_a_file_in_the_quarantine_is_never_rewritten(tmp_path):
    quarantine = tmp_path / "quarantine"
    quarantine.mkdir()
    path = quarantine / "20250101-0123456789ab.eml"
    path.write_bytes(message(1))
    info = os.stat(path)
    result = MessageResult(str(path), str(path), {"format": "eml"},
                           identity=(info.st_ino, info.st_size, info.st_mtime_ns), rewritten=b"new\n")
    (tmp_path / "link.eml").symlink_to(path)
    via_link = MessageResult(str(tmp_path / "link.eml"), str(tmp_path / "link.eml"), {"format": "eml"},
                             identity=result.identity, rewritten=b"new\n")
    for each in (result, via_link):
        with pytest.raises(StorageError, match="quarantine"):
            rewrite_message_file(each, lambda raw, r: "Q", (str(quarantine),))
    assert path.read_bytes() == message(1)
