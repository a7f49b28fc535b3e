"""The engine's test corpus, generated in code: named cases with their expected verdicts.

Every case is a function that returns a message's bytes, registered with ``@case(...)``. The
registry ``CASES`` is what the tests iterate. Another module adds cases the same way and
is imported at the end of this one (archive and TNEF cases fit in a ``corpus_archives.py``),
so every test that iterates ``CASES`` sees them.

    from tests.scan.corpus import CASES, case, message, attachment
    from tests.scan.reference_detector import EICAR_NAME
    @case("eicar_in_zip", infected=EICAR_NAME, parts={"2/eicar.zip/eicar.com"}, needs=("containers",))
    def _(): return message([attachment(make_zip(...), "eicar.zip", "application/zip")])

The mail cases themselves are in ``corpus_mail.py``, mail files and encoded files attached
as ordinary files in ``corpus_mailfiles.py`` (both imported at the end of this module, so
``CASES`` is complete once ``tests.scan.corpus`` is imported).

``write_corpus(directory)`` writes every case as ``NAME.eml`` (for the bench and for
poking at with other tools). Nothing binary is committed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mailguard.scan.verdict import Reason, Status
from tests.scan.encoders import b64_lines

TESTFILES = Path("/usr/share/clamav-testfiles")  # Debian package clamav-testfiles
CLAM_NAME = "ClamAV-Test-File"


def clam_exe() -> bytes:
    return (TESTFILES / "clam.exe").read_bytes()


def clam_md5() -> str:
    return hashlib.md5(clam_exe()).hexdigest()


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], bytes]
    status: Status
    detections: frozenset[str] = frozenset()     # names that must be found
    parts: frozenset[str] = frozenset()          # part paths that must carry a finding
    reasons: frozenset[Reason] = frozenset()     # for unscanned cases
    needs: tuple[str, ...] = ()                  # "clamav-testfiles", "containers"
    policy: dict[str, object] = field(default_factory=dict)  # Policy field overrides


CASES: dict[str, Case] = {}


def case(name: str, *, infected: str | None = None, parts: set[str] | None = None,
         unscanned: set[Reason] | None = None, needs: tuple[str, ...] = (),
         policy: dict[str, object] | None = None) -> Callable[[Callable[[], bytes]], Callable[[], bytes]]:
    """Register a case: clean unless ``infected`` (a detection name) or ``unscanned`` is given."""
    def register(build: Callable[[], bytes]) -> Callable[[], bytes]:
        if name in CASES:
            raise ValueError(f"duplicate corpus case {name}")
        status = Status.INFECTED if infected else Status.UNSCANNED if unscanned else Status.CLEAN
        CASES[name] = Case(name, build, status, frozenset({infected} if infected else ()),
                           frozenset(parts or ()), frozenset(unscanned or ()), needs, dict(policy or {}))
        return build
    return register


def write_corpus(directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, c in CASES.items():
        if "clamav-testfiles" in c.needs and not TESTFILES.is_dir():
            continue
        path = directory / f"{name}.eml"
        path.write_bytes(c.build())
        written[name] = path
    return written


# ---------------------------------------------------------------- message builders

HEAD = (b"From: Alice <alice@example.org>\r\nTo: Bob <bob@example.net>\r\nDate: Tue, 1 Apr 2025 10:00:00 +0000\r\n"
        b"Message-ID: <corpus@example.org>\r\nSubject: quarterly figures\r\nMIME-Version: 1.0\r\n")


def part(body: bytes, headers: bytes) -> bytes:
    return headers + b"\r\n" + body


def text_part(text: bytes) -> bytes:
    return part(text, b"Content-Type: text/plain; charset=utf-8\r\n")


def attachment(data: bytes, name: str, ctype: str = "application/octet-stream", *, encoding: str = "base64") -> bytes:
    body = b64_lines(data) if encoding == "base64" else data
    return part(body, f'Content-Type: {ctype}; name="{name}"\r\nContent-Disposition: attachment; '
                      f'filename="{name}"\r\nContent-Transfer-Encoding: {encoding}\r\n'.encode())


def message(parts: list[bytes], *, boundary: bytes = b"=_mg_outer", head: bytes = HEAD,
            preamble: bytes = b"This is a multi-part message in MIME format.\r\n", epilogue: bytes = b"") -> bytes:
    out = head + b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n' + preamble
    for p in parts:
        out += b"--" + boundary + b"\r\n" + p + b"\r\n"
    return out + b"--" + boundary + b"--\r\n" + epilogue


def single(body: bytes, headers: bytes = b"Content-Type: text/plain\r\n", head: bytes = HEAD) -> bytes:
    return head + headers + b"\r\n" + body


def nested(inner: bytes) -> bytes:
    """``inner`` attached as message/rfc822 (part 2) next to a short text (part 1)."""
    return message([text_part(b"Forwarded message attached.\r\n"),
                    part(inner, b"Content-Type: message/rfc822\r\n")], boundary=b"=_mg_" + str(len(inner)).encode())


GREETING = text_part(b"Hello Bob,\r\n\r\nplease find the figures attached.\r\n")


from tests.scan import corpus_mail, corpus_mailfiles  # noqa: E402,F401 - registers the cases
