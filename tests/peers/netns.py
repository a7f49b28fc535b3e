"""Network namespaces for the transparent-mode tests: made with unique names, always removed.

``Namespaces`` makes them (``ip netns add``, loopback up) and, at ``close``, kills whatever
still runs in them and deletes them (their nftables tables and veth links go with them), also
when the test failed. ``link`` joins two with a veth pair; ``run_in`` runs a Python function in
a thread that has entered a namespace (setns), so real clients (poplib, imaplib) and readiness
probes run in-process, with the sockets they open living in that namespace. No traffic leaves
the namespaces a test makes: every address used is in them.
"""

from __future__ import annotations

import ctypes
import os
import queue
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_CLONE_NEWNET = 0x40000000


class Namespaces:
    def __init__(self) -> None:
        self.created: list[str] = []

    def make(self, role: str) -> str:
        name = f"mgt-{role}-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.created.append(name)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        return name

    def close(self) -> None:
        for name in self.created:
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "del", name], check=False)
        self.created.clear()


def link(left_ns: str, left: list[str], right_ns: str, right: list[str]) -> None:
    """A veth pair between two namespaces, with addresses (``ADDRESS/PREFIX``) on each end."""
    tag = uuid.uuid4().hex[:8]
    ends = ((left_ns, f"mga{tag}", left), (right_ns, f"mgb{tag}", right))
    subprocess.run(["ip", "link", "add", ends[0][1], "type", "veth", "peer", "name", ends[1][1]], check=True)
    try:
        for ns, device, addresses in ends:
            subprocess.run(["ip", "link", "set", device, "netns", ns], check=True)
            for address in addresses:
                # nodad: an IPv6 address usable at once, without duplicate address detection's wait
                nodad = ["nodad"] if ":" in address else []
                subprocess.run(["ip", "-n", ns, "addr", "add", address, "dev", device, *nodad], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", device, "up"], check=True)
    except BaseException:
        # An end still in the root namespace would outlive the test (the namespaces' deletion
        # takes only the ends moved into them); deleting either end deletes the pair.
        for _, device, _ in ends:
            subprocess.run(["ip", "link", "del", device], check=False, capture_output=True)
        raise


def run_in(ns: str, function: Callable[..., T], *args: Any, timeout: float = 120.0) -> T:
    """``function(*args)`` in a thread that entered ``ns`` (only that thread changes namespace).

    A thread cannot be stopped: after ``timeout`` the caller gets a TimeoutError and the thread
    runs on until ``function`` returns. It cannot leak out of ``ns`` (it never leaves it, and
    every socket it opens lives there) nor keep the test run alive (a daemon thread), so every
    function given here must end by itself: the clients and probes used set socket timeouts."""
    answer: queue.Queue[tuple[bool, Any]] = queue.Queue()

    def body() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {ns}")
            finally:
                os.close(fd)
            answer.put((True, function(*args)))
        except BaseException as exc:  # handed to the caller
            answer.put((False, exc))

    threading.Thread(target=body, daemon=True, name=f"in {ns}").start()
    try:
        ok, value = answer.get(timeout=timeout)
    except queue.Empty:
        name = getattr(function, "__name__", repr(function))
        raise TimeoutError(f"{name} in {ns}: no result within {timeout:g}s") from None
    if not ok:
        raise value
    return value


def wait_listening(ns: str, address: str, port: int, timeout: float = 30.0) -> None:
    """Until something accepts TCP connections on ``address:port`` in ``ns``."""

    def probe() -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((address, port), timeout=2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    run_in(ns, probe, timeout=timeout + 10)
