"""Builders for test mailboxes, and a tiny engine for testing the mailbox layer on its own.

``EicarEngine`` exists only here, in the tests: it lets the reader/writer tests check what
the mailbox layer does with verdicts without depending on the real engine's detectors.
The CLI tests run the real engine.
"""

from __future__ import annotations

import os
from pathlib import Path

from mailguard.scan.fromline import quote
from mailguard.scan.verdict import Finding, Incomplete, Reason, Verdict

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
FROM_LINE = b"From sender@example.org Mon Jan  1 00:00:00 2024\n"
UNSCANNABLE = b"X-Test-Unscannable: yes"


def message(number: int, body: bytes = b"hello\n", subject: str | None = None) -> bytes:
    subject = subject if subject is not None else f"message {number}"
    return (f"From: a@example.org\nTo: b@example.org\nSubject: {subject}\n"
            f"Message-ID: <{number}@example.org>\n\n").encode() + body


def mbox_bytes(messages: list[bytes], from_line: bytes = FROM_LINE) -> bytes:
    """An mboxrd file holding ``messages``."""
    out = []
    for raw in messages:
        body = quote(raw)
        if not body.endswith(b"\n"):
            body += b"\n"
        out.append(from_line + body + b"\n")
    return b"".join(out)


def make_maildir(root: Path, files: dict[str, bytes]) -> Path:
    """A Maildir with ``files`` given as ``{"cur/NAME": bytes, ".Sub/new/NAME": bytes}``."""
    for folder in {"", *(name.split("/")[0] for name in files if name.startswith("."))}:
        for part in ("cur", "new", "tmp"):
            (root / folder / part).mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


class EicarEngine:
    """Flags the EICAR string; 'cleans' by replacing it. Test double for the real engine."""

    def __init__(self, policy: object = None) -> None:
        self.policy = policy
        self.closed = False

    def scan(self, raw: bytes) -> Verdict:
        if UNSCANNABLE in raw:
            return Verdict.build([], [Incomplete(Reason.ENCRYPTED, "2", "test")])
        found = [Finding("Eicar-Test-Signature", "test", "1")] if EICAR in raw else []
        return Verdict.build(found, [])

    def apply(self, raw: bytes, verdict: Verdict) -> bytes:
        if not verdict.findings:
            return raw
        return b"X-MailGuard-Result: infected\n" + raw.replace(EICAR, b"[removed]")

    def close(self) -> None:
        self.closed = True


def run_as_nobody(function, *args):
    """Run ``function(*args)`` in a child process without root's power to read anything.

    Tests of unreadable files would pass for the wrong reason as root, who reads mode 000.
    """
    import pickle

    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(reader)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            data = pickle.dumps(function(*args))
            os.write(writer, data)
        finally:
            os._exit(0)
    os.close(writer)
    chunks = []
    while chunk := os.read(reader, 65536):
        chunks.append(chunk)
    os.close(reader)
    os.waitpid(pid, 0)
    return pickle.loads(b"".join(chunks))
