"""mailguard.files: atomic writes with their final mode, private folders."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mailguard.errors import StorageError
from mailguard.files import (PRIVATE_FILE_MODE, PUBLIC_FILE_MODE, folder_owner_problem, fsync_folder, private_dir,
                             write_atomic)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_write_atomic_replaces_whole_with_the_final_mode(tmp_path):
    target = tmp_path / "sub" / "key.pem"
    write_atomic(target, b"one")
    assert target.read_bytes() == b"one" and mode(target) == PRIVATE_FILE_MODE
    write_atomic(target, b"two", PUBLIC_FILE_MODE, durable=False)
    assert target.read_bytes() == b"two" and mode(target) == PUBLIC_FILE_MODE
    assert sorted(p.name for p in target.parent.iterdir()) == ["key.pem"]


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "config.toml"
    target.write_bytes(b"old")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(StorageError, match="No space left on device; nothing was changed"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]


def test_private_dir_is_owner_only_even_if_it_existed(tmp_path):
    folder = tmp_path / "state"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    assert private_dir(folder) == folder and mode(folder) == 0o700


def test_fsync_folder_tolerates_a_missing_folder(tmp_path):
    fsync_folder(tmp_path)
    fsync_folder(tmp_path / "gone")  # nothing to make durable: no error


def test_exchange_files_swaps_two_names_and_refuses_a_missing_one(tmp_path):
    from mailguard.files import exchange_files

    first, second = tmp_path / "first", tmp_path / "second"
    first.write_bytes(b"1")
    second.write_bytes(b"2")
    inode = os.stat(first).st_ino
    exchange_files(str(first), str(second))
    assert (first.read_bytes(), second.read_bytes()) == (b"2", b"1")
    assert os.stat(second).st_ino == inode  # the same file, under the other name
    second.unlink()
    with pytest.raises(FileNotFoundError):
        exchange_files(str(first), str(second))
    assert first.read_bytes() == b"2"  # nothing moved


# -- folder_owner_problem: the secure-folder checks, on the path as the kernel resolves it --

def test_an_own_private_folder_has_no_problem_however_it_is_named(tmp_path, monkeypatch):
    (tmp_path / "q").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to("q")
    monkeypatch.chdir(tmp_path)
    for name in ("q", "./q/", str(tmp_path / "q"), "link", str(tmp_path / "link/../q"), "not/yet/there"):
        assert folder_owner_problem(Path(name)) is None, name


def test_dot_dot_after_a_symbolic_link_is_its_targets_parent(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "c").mkdir(parents=True)
    os.chmod(tmp_path / "b", 0o775)
    (tmp_path / "a" / "link").symlink_to(tmp_path / "b" / "c")
    # Lexically a/link/.. is a; the kernel goes to b, which its group may change.
    assert "can be changed by its group" in folder_owner_problem(tmp_path / "a" / "link" / "..")
    assert "on its way can be changed by its group" in folder_owner_problem(tmp_path / "a" / "link")


def test_loops_and_files_are_problems_not_errors(tmp_path):
    (tmp_path / "one").symlink_to("two")
    (tmp_path / "two").symlink_to("one")
    assert "too many symbolic links" in folder_owner_problem(tmp_path / "one")
    (tmp_path / "file").write_bytes(b"")
    assert "is not a folder" in folder_owner_problem(tmp_path / "file" / "q")


def test_private_dir_makes_every_missing_level_private_whatever_the_umask(tmp_path):
    old = os.umask(0o002)  # Debian and Ubuntu's default: mkdir(parents=True) would make 0775 levels
    try:
        made = private_dir(tmp_path / "a" / "b" / "c")
    finally:
        os.umask(old)
    assert [mode(tmp_path / level) for level in ("a", "a/b", "a/b/c")] == [0o700] * 3
    assert folder_owner_problem(made) is None
