import fcntl
import os
import subprocess
import sys
import time

import pytest

from mailguard.errors import StorageError
from mailguard.mailbox.locking import MboxLock


@pytest.fixture
def box(tmp_path):
    path = tmp_path / "box"
    path.write_bytes(b"")
    return str(path)


def test_lock_holds_dotlock_flock_and_fcntl_and_releases_them(box):
    with MboxLock(box):
        assert open(box + ".lock", "rb").read().startswith(f"{os.getpid()}:".encode())
        # another open file description cannot take flock meanwhile
        with open(box, "rb") as other:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert not os.path.exists(box + ".lock")
    with open(box, "rb") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_live_dotlock_makes_us_wait_then_give_up(box):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with open(box + ".lock", "w") as stream:
            stream.write(f"{holder.pid}\n")
        started = time.monotonic()
        with pytest.raises(StorageError, match="locked by another program"):
            MboxLock(box, wait=0.3).acquire()
        assert time.monotonic() - started >= 0.3
        assert os.path.exists(box + ".lock")  # not ours to remove
    finally:
        holder.kill()
        holder.wait()


def test_a_dotlock_of_a_dead_process_is_broken(box):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open(box + ".lock", "w") as stream:
        stream.write(f"{dead.pid}\n")
    with MboxLock(box, wait=0.3):
        pass
    assert not os.path.exists(box + ".lock")


def test_an_old_dotlock_without_an_owner_is_broken(box):
    with open(box + ".lock", "w"):
        pass  # empty, as some programs leave it
    old = time.time() - 3600
    os.utime(box + ".lock", (old, old))
    with MboxLock(box, wait=0.3):
        pass


def test_a_flock_held_elsewhere_makes_us_wait_then_give_up(box):
    holder = subprocess.Popen([sys.executable, "-c",
                               "import fcntl,sys,time; f=open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_EX); "
                               "print('locked', flush=True); time.sleep(30)", box], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"locked\n"
        with pytest.raises(StorageError, match="flock"):
            MboxLock(box, wait=0.3).acquire()
        assert not os.path.exists(box + ".lock")  # our dotlock was given back
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_dotlock_replaced_by_a_live_one_meanwhile_is_not_broken(box, monkeypatch):
    """The race that lost a delivery: the dead owner's dotlock is read, then that program's
    lock is gone and another program (a delivery agent) takes a fresh one before we unlink.
    Unlinking by name would remove the live lock: only the very file judged stale may go."""
    from mailguard.mailbox import locking

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with open(box + ".lock", "w") as stream:
            stream.write(f"{dead.pid}\n")

        def owner_gone_and_another_locks(pid):  # checked between our read and our unlink
            if pid == dead.pid and open(box + ".lock").read() == f"{dead.pid}\n":
                os.unlink(box + ".lock")
                with open(box + ".lock", "x") as fresh:
                    fresh.write(f"{live.pid}\n")
            return pid == live.pid

        monkeypatch.setattr(locking, "process_alive", owner_gone_and_another_locks)
        with pytest.raises(StorageError, match="locked by another program"):
            MboxLock(box, wait=0.3).acquire()
        assert open(box + ".lock").read() == f"{live.pid}\n"  # the live lock stands
    finally:
        live.kill()
        live.wait()


def test_an_old_dotlock_of_a_live_local_process_is_not_broken(box):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with open(box + ".lock", "w") as stream:
            stream.write(f"{holder.pid}\n")
        old = time.time() - 3600
        os.utime(box + ".lock", (old, old))  # an hour-long rewrite of a big mbox
        with pytest.raises(StorageError, match="locked by another program"):
            MboxLock(box, wait=0.3).acquire()
        assert os.path.exists(box + ".lock")
    finally:
        holder.kill()
        holder.wait()


_PROBE = ("import fcntl, sys\nwith open(sys.argv[1], 'rb+') as f:\n    try:\n"
          "        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n        print('free')\n"
          "    except OSError:\n        print('held')\n")


def _classic_fcntl_lock_free(path: str) -> bool:
    """Whether another process (as mutt or Dovecot would) can take a classic fcntl write lock."""
    answer = subprocess.run([sys.executable, "-c", _PROBE, path], capture_output=True, text=True, timeout=30)
    return answer.stdout.strip() == "free"


def test_the_fcntl_lock_survives_our_own_reads_of_the_mailbox(box):
    """The in-process scan (--jobs 1) opens and closes the mbox for every range it reads; a
    classic record lock would be dropped by the first close, so ours must be another kind."""
    with MboxLock(box):
        assert not _classic_fcntl_lock_free(box)
        with open(box, "rb") as reader:
            reader.read()
        assert not _classic_fcntl_lock_free(box)
    assert _classic_fcntl_lock_free(box)
