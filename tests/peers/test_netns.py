"""The network-namespace helpers of the transparent-mode tests (netns.py) clean up after
themselves also when a step fails (root, ip)."""

from __future__ import annotations

import subprocess
import threading
import uuid

import pytest

from tests import peers
from tests.peers import netns
from tests.peers.netns import Namespaces, link, run_in

pytestmark = [pytest.mark.root, pytest.mark.peer]


def _exists(device: str) -> bool:
    return subprocess.run(["ip", "link", "show", "dev", device], capture_output=True).returncode == 0


@pytest.mark.parametrize("failing", ["first", "second"])
def test_a_link_that_fails_half_way_leaves_no_veth_pair_behind(  # type: ignore[no-untyped-def]
        failing: str, monkeypatch) -> None:
    peers.require_root()
    peers.require("ip")
    namespaces = Namespaces()
    try:
        real = namespaces.make("left")
        absent = "mgt-absent-" + uuid.uuid4().hex[:8]  # an end cannot move into it
        ours = uuid.uuid4()
        monkeypatch.setattr(netns.uuid, "uuid4", lambda: ours)  # the pair's names, to look for
        with pytest.raises(subprocess.CalledProcessError):
            if failing == "first":
                link(absent, ["10.99.0.1/30"], real, ["10.99.0.2/30"])
            else:
                link(real, ["10.99.0.1/30"], absent, ["10.99.0.2/30"])
        monkeypatch.undo()
        assert not _exists(f"mga{ours.hex[:8]}") and not _exists(f"mgb{ours.hex[:8]}")
    finally:
        namespaces.close()


def test_run_in_gives_up_after_its_timeout_and_says_where() -> None:
    peers.require_root()
    peers.require("ip")
    namespaces = Namespaces()
    release = threading.Event()
    try:
        ns = namespaces.make("wait")
        with pytest.raises(TimeoutError, match=ns):
            run_in(ns, release.wait, timeout=0.1)  # the thread ends when released below
    finally:
        release.set()
        namespaces.close()
