"""Rewriting an mbox while Dovecot's LDA delivers into it: no delivered message is lost.

``mailguard scan --action clean`` writes a new mbox and renames it over the old one, holding the
mbox's dotlock, flock and fcntl lock meanwhile (locking.py). A delivery agent that appended to the
old file after we read it would have its message thrown away with that file. Dovecot's
``dovecot-lda`` is the real peer, delivering as the mailbox's owner (``nobody``) while mailguard
runs as root:

- each of our three locks alone holds the LDA off until released, with the LDA configured for
  that one lock type (``mbox_write_locks``): the deterministic check, which fails when any one
  of our locks is dropped;
- the whole rewrite, over and over, while three LDAs deliver infected messages (so every pass
  has something new to rewrite). Races are not deterministic: with our locks removed this test
  lost a delivery in about one run of five, so it is the end-to-end check (nothing lost or
  doubled, Python's mailbox module reads the result, the owner is kept), not the lock check.
"""

from __future__ import annotations

import json
import mailbox
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from mailguard.mailbox.locking import MboxLock
from tests.mailbox.fixtures import EICAR, mbox_bytes, message

pytestmark = [pytest.mark.peer, pytest.mark.root]

LDA = "/usr/lib/dovecot/dovecot-lda"
MAILGUARD = str(Path(sys.executable).with_name("mailguard"))
NOBODY = 65534
ORIGINALS = 1000        # small, so that rewrites (and their windows) come often
INFECTED_EVERY = 50
DELIVERIES = 40         # by each of
DELIVERERS = 3          # agents delivering at once


@pytest.fixture
def spool() -> Path:
    if os.geteuid() != 0:
        pytest.skip("needs root, to deliver as the mailbox's owner (nobody) while root rewrites it")
    if not os.access(LDA, os.X_OK) or shutil.which("setpriv") is None:
        pytest.skip("needs dovecot-lda (Debian package dovecot-core) and setpriv")
    # Outside pytest's 0700 temporary folders, which nobody cannot enter.
    folder = Path(tempfile.mkdtemp(prefix="mg-lda-"))
    try:
        os.chmod(folder, 0o755)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _config(folder: Path, box: Path, locks: str = "dotlock fcntl flock") -> Path:
    config = folder / "lda.conf"
    config.write_text(
        f"base_dir = {folder}/run\nlog_path = {folder}/lda.log\n"
        f"mail_location = mbox:{folder}/mail:INBOX={box}\n"
        # Dovecot wants its read locks among its write locks, in the same order.
        f"first_valid_uid = 1\nmbox_write_locks = {locks}\nmbox_read_locks = {locks}\n")
    return config


def _mailbox_of_nobody(spool: Path, messages: list[bytes]) -> Path:
    box = spool / "box"
    box.write_bytes(mbox_bytes(messages))
    (spool / "mail").mkdir()
    (spool / "run").mkdir()
    for path in (spool, box, spool / "mail", spool / "run"):
        os.chown(path, NOBODY, NOBODY)
    return box


def _delivery(number: int) -> bytes:
    """An infected message, so that each pass of the cleaner has something new to rewrite."""
    return (f"From: sender{number}@example.org\nTo: nobody@example.org\nSubject: delivered {number}\n"
            f"Message-ID: <delivered-{number}@example.org>\n\n").encode() + EICAR + b"\n"


def _lda(config: Path, folder: Path, number: int) -> list[str]:
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "env", f"HOME={folder}",
            "USER=nobody", LDA, "-c", str(config), "-f", f"sender{number}@example.org", "-e"]


def _deliver(config: Path, folder: Path, number: int) -> subprocess.CompletedProcess:
    return subprocess.run(_lda(config, folder, number), input=_delivery(number), capture_output=True, timeout=120)


@pytest.mark.parametrize("lock", ["dotlock", "fcntl", "flock"])
def test_each_of_our_locks_holds_dovecot_off_until_released(spool: Path, lock: str):
    box = _mailbox_of_nobody(spool, [message(1)])
    config = _config(spool, box, lock)
    lda = subprocess.Popen(_lda(config, spool, 7), stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with MboxLock(str(box)):
            lda.stdin.write(_delivery(7))
            lda.stdin.close()
            with pytest.raises(subprocess.TimeoutExpired):
                lda.wait(timeout=2)  # waiting for our lock
            assert b"delivered-7" not in box.read_bytes()
        assert lda.wait(timeout=60) == 0, lda.stderr.read()
    finally:
        if lda.poll() is None:
            lda.kill()
            lda.wait()
        lda.stderr.close()
    ids = [m["Message-ID"] for m in mailbox.mbox(str(box), create=False)]
    assert ids == ["<1@example.org>", "<delivered-7@example.org>"]


def test_messages_delivered_during_rewrites_are_all_kept(spool: Path, tmp_path: Path):
    originals = [message(i, EICAR + b"\n" if i % INFECTED_EVERY == 1 else b"body\n") for i in range(ORIGINALS)]
    box = _mailbox_of_nobody(spool, originals)
    config = _config(spool, box)
    failures: list[bytes] = []

    def deliver_all(first: int) -> None:
        for number in range(first, first + DELIVERIES):
            done = _deliver(config, spool, number)
            if done.returncode != 0:
                failures.append(done.stderr or str(done.returncode).encode())

    def clean() -> subprocess.CompletedProcess:
        return subprocess.run([MAILGUARD, "scan", "--action", "clean", "--quiet", "--format", "jsonl", str(box)],
                              capture_output=True, timeout=300,
                              # Not in the spool: nobody, who owns it, could rename the quarantine.
                              env=dict(os.environ, MAILGUARD_HOME=str(tmp_path / "mailguard-home")))

    deliverers = [threading.Thread(target=deliver_all, args=(n * DELIVERIES,)) for n in range(DELIVERERS)]
    for deliverer in deliverers:
        deliverer.start()
    runs = []
    try:
        while any(deliverer.is_alive() for deliverer in deliverers):
            runs.append(clean())
    finally:
        for deliverer in deliverers:
            deliverer.join(300)
    runs.append(clean())  # the last deliveries
    assert not failures, failures[:3]
    assert all(run.returncode in (0, 1) for run in runs), [run.stderr for run in runs]
    changed = [json.loads(run.stdout.splitlines()[-1])["summary"]["changed"] for run in runs]
    assert sum(1 for n in changed[:-1] if n) >= 2, changed  # rewrites really overlapped the deliveries

    kept = mailbox.mbox(str(box), create=False)  # Python's own mbox reader: a second opinion on the file
    ids = [m["Message-ID"] for m in kept]
    expected = [f"<{i}@example.org>" for i in range(ORIGINALS)] + \
               [f"<delivered-{n}@example.org>" for n in range(DELIVERERS * DELIVERIES)]
    assert sorted(ids) == sorted(expected)  # none lost, none twice
    assert EICAR not in box.read_bytes()
    assert os.stat(box).st_uid == NOBODY  # still the owner's mailbox: the next delivery can write it
    assert not (spool / "box.lock").exists()
