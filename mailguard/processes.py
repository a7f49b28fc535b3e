"""Processes: whether one still runs (stale lock files: mbox dotlocks, the engine's pid file),
workers that end with their parent (mailguard scan's pool, the engine's scan workers), and how
many CPUs they can use."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie.

    A zombie has exited; it only waits for a parent that may never reap it (a detached
    engine's parent is init, which in a container may not reap), so it holds nothing.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        pass  # no /proc here: ask the kernel instead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def usable_cpus() -> int:
    """The CPUs this process may run on: fewer than the machine has under ``taskset``, a
    container's cpuset or systemd's ``CPUAffinity=`` (``os.cpu_count`` counts them all, and
    more workers than CPUs only compete for them)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity on this system
        return os.cpu_count() or 1


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None = None) -> None:
    """Have the kernel kill this process when its parent dies (Linux; elsewhere nothing).

    A pool worker otherwise outlives a ``mailguard scan`` killed with SIGKILL, waiting for
    tasks forever. ``parent``: the pid the parent had; if it is already gone (it died before
    the signal was asked for), exit now.
    """
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):
        return
    if parent is not None and os.getppid() != parent:
        os._exit(1)
