"""mailguard.processes: who still holds a lock."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from mailguard.processes import process_alive


def test_a_running_process_is_alive():
    assert process_alive(os.getpid())


def test_an_exited_and_reaped_process_is_not():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not process_alive(child.pid)


def test_a_zombie_is_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while process_alive(child.pid) and time.monotonic() < deadline:  # exited, not yet reaped
            time.sleep(0.01)
        assert not process_alive(child.pid)
        assert os.path.exists(f"/proc/{child.pid}")  # still there as a zombie
    finally:
        child.wait()


def test_usable_cpus_counts_only_the_cpus_this_process_may_run_on():
    # In a child, so this test's own affinity is left alone.
    code = ("import os\nfrom mailguard.processes import usable_cpus\nbefore = usable_cpus()\n"
            "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\nprint(before, usable_cpus())")
    before, pinned = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                    timeout=60).stdout.split()
    assert int(before) == len(os.sched_getaffinity(0)) and int(pinned) == 1
