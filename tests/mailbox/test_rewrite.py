import os

import pytest

from mailguard.errors import StorageError
from mailguard.mailbox.atomic import MovedAway
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


def test_a_renamed_message_is_followed_to_its_new_name_and_rewritten_there(tmp_path):
    root = make_maildir(tmp_path / "md", {"cur/1:2,S": message(1)})
    path = root / "cur" / "1:2,S"
    result = scanned(path)
    os.rename(path, root / "cur" / "1:2,ST")  # a client flagged it meanwhile: same file, new name
    kept = []
    rewrite_message_file(result, lambda raw, r: kept.append(raw) or "Q")
    assert os.listdir(root / "cur") == ["1:2,ST"]  # not recreated under the old name
    assert (root / "cur" / "1:2,ST").read_bytes() == b"new\n"
    assert result.changed and result.file == str(root / "cur" / "1:2,ST") and result.location["file"] == "cur/1:2,ST"
    assert kept == [message(1)]  # kept once


def test_a_deleted_message_is_not_recreated(tmp_path):
    root = make_maildir(tmp_path / "md", {"cur/1:2,S": message(1)})
    path = root / "cur" / "1:2,S"
    result = scanned(path)
    os.unlink(path)  # a client expunged it meanwhile
    with pytest.raises(MovedAway):
        rewrite_message_file(result, lambda raw, r: "Q")
    assert os.listdir(root / "cur") == [] and os.listdir(root / "tmp") == []


def test_a_renamed_message_that_also_changed_is_left_alone(tmp_path):
    root = make_maildir(tmp_path / "md", {"cur/1:2,S": message(1)})
    path = root / "cur" / "1:2,S"
    result = scanned(path)
    os.rename(path, root / "cur" / "1:2,ST")
    (root / "cur" / "1:2,ST").write_bytes(message(1) + b"edited\n")
    with pytest.raises(StorageError, match="changed on disk"):
        rewrite_message_file(result, lambda raw, r: "Q")
    assert (root / "cur" / "1:2,ST").read_bytes().endswith(b"edited\n")


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


def test_dovecot_size_fields_in_the_name_follow_the_new_content(tmp_path):
    from mailguard.mailbox.rewrite import maildir_name_for

    name = "1700000000.M1P2.host,S=999,W=1010:2,RS"
    root = make_maildir(tmp_path / "md", {f"cur/{name}": message(1, b"a\nb\n")})
    path = root / "cur" / name
    info = os.stat(path)
    new = b"X: y\r\n\r\nnew\nline\n"
    result = MessageResult(str(root), str(path), {"format": "maildir", "folder": "", "file": f"cur/{name}"},
                           identity=(info.st_ino, info.st_size, info.st_mtime_ns), rewritten=new)
    rewrite_message_file(result, lambda raw, r: "Q")
    expected = f"1700000000.M1P2.host,S={len(new)},W={len(new) + 2}:2,RS"
    assert os.listdir(root / "cur") == [expected]
    assert (root / "cur" / expected).read_bytes() == new
    assert os.listdir(root / "tmp") == []
    assert result.file == str(root / "cur" / expected) and result.location["file"] == f"cur/{expected}"
    # names without size fields, and a size-like text elsewhere, stay as they are
    assert maildir_name_for("1.host:2,S", new) == "1.host:2,S"
    assert maildir_name_for("1.host,XS=5:2,S", new) == "1.host,XS=5:2,S"
    assert maildir_name_for("1.host,S=5", b"abc") == "1.host,S=3"


def test_a_crash_between_link_and_unlink_leaves_a_duplicate_not_a_loss(tmp_path, monkeypatch):
    name = "1.host,S=10:2,S"
    root = make_maildir(tmp_path / "md", {f"cur/{name}": message(1)})
    path = root / "cur" / name
    info = os.stat(path)
    result = MessageResult(str(root), str(path), {"format": "maildir", "folder": "", "file": f"cur/{name}"},
                           identity=(info.st_ino, info.st_size, info.st_mtime_ns), rewritten=b"new\n")

    def crash(target, *args, **kwargs):
        if str(target) == str(path):
            raise OSError("crash")
        return real_unlink(target, *args, **kwargs)

    real_unlink = os.unlink
    monkeypatch.setattr(os, "unlink", crash)
    with pytest.raises(OSError, match="crash"):
        rewrite_message_file(result, lambda raw, r: "Q")
    assert sorted(os.listdir(root / "cur")) == sorted(["1.host,S=4:2,S", name])
    assert path.read_bytes() == message(1)
