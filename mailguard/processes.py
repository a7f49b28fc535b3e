"""Whether a process still runs: for stale lock files (mbox dotlocks, the engine's pid file)."""

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
