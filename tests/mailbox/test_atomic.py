import os

import pytest

from mailguard.mailbox.atomic import NewFile, replace_file


def test_replace_keeps_mode_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "msg"
    target.write_bytes(b"old")
    os.chmod(target, 0o600)
    replace_file(str(target), b"new")
    assert target.read_bytes() == b"new"
    assert os.stat(target).st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["msg"]


def test_the_old_file_stays_whole_until_commit(tmp_path):
    target = tmp_path / "box"
    target.write_bytes(b"old content")
    new = NewFile(str(target))
    new.write(b"new content, half")
    assert target.read_bytes() == b"old content"
    new.discard()
    assert os.listdir(tmp_path) == ["box"]


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "box"
    target.write_bytes(b"old")

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError):
        replace_file(str(target), b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["box"]
