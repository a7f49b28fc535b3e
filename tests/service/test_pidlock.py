"""The pid lock: the pid file is "running" only while someone holds its flock; stale files are taken over.

The lock as the detached engine uses it (start twice, start over a stale file) is in test_daemon.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailguard.errors import ServiceError
from mailguard.service.pidlock import PidLock, running_pid
from mailguard.settings import Paths


@pytest.fixture
def paths(mailguard_home: Path) -> Paths:
    return Paths(config_file=mailguard_home / "config.toml", state_dir=mailguard_home)


def test_pid_lock_records_our_pid_and_refuses_a_second_holder(paths: Paths) -> None:
    paths.state_dir.mkdir()
    first = PidLock(paths)
    first.acquire()
    try:
        assert paths.pid_file.read_text() == f"{os.getpid()}\n"
        assert running_pid(paths) == os.getpid()
        with pytest.raises(ServiceError, match=f"already running \\(pid {os.getpid()}"):
            PidLock(paths).acquire()
    finally:
        first.release()
    assert not paths.pid_file.exists()
    assert running_pid(paths) is None


@pytest.mark.parametrize("content", ["999999999\n", "garbage", "", "{ppid}\n"])
def test_stale_pid_file_is_not_running_and_is_taken_over(paths: Paths, content: str) -> None:
    # A pid that does not exist, junk, or the pid of a live process that is not ours (our parent):
    # nobody holds the lock, so it is stale.
    paths.state_dir.mkdir()
    paths.pid_file.write_text(content.format(ppid=os.getppid()))
    assert running_pid(paths) is None
    lock = PidLock(paths)
    lock.acquire()
    try:
        assert paths.pid_file.read_text() == f"{os.getpid()}\n"
    finally:
        lock.release()
