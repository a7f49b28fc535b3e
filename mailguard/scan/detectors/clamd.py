"""clamd (``detection-engine.clamd.*``): the message streamed to a running ClamAV daemon.

Protocol (clamd(8), "INSTREAM"): send ``zINSTREAM\\0``, then chunks each prefixed by its
length as a 4-byte big-endian number, then a zero-length chunk; clamd answers one
NUL-terminated line: ``stream: OK``, ``stream: NAME FOUND`` or ``... ERROR``.

What we send: the message root only. clamd has its own MIME parser and archive readers,
so the raw message is what it is built to scan, and sending every part we decoded as
well would make clamd decode the same bytes several times over. Our own detectors still
see every decoded part, so what our MIME walk finds by its lenient, union reading
(docs/pitfalls.md#boundary-tricks) is never lost; clamd adds its own reading of the raw message on top.

clamd refuses a stream longer than its StreamMaxLength (25 MB by default): it answers
``INSTREAM size limit exceeded`` and closes the connection, possibly while we are still
sending. That is a LIMIT (the message was not scanned by clamd), never clean. A clamd
that is down, slow past the message's scan time or answers garbage raises
DetectorFailed, so the message is unscanned, never clean
(docs/pitfalls.md#limits-bombs-and-missing-decoders).

Every scan opens its own connection, so a clamd that is restarted (a package upgrade, a
crash) is used again by the next message without anything to reconnect; messages scanned
while it is away are unscanned and follow ``response.on-scan-error``.

``VERSION`` (clamd(8)) answers ``ClamAV 1.0.7/27480/Sun Dec  6 09:25:03 2026``: the engine's
version, then the number and date of the newest database it loaded (absent when it runs from
unofficial databases only). ``locate`` uses it to find a clamd that answers, ``version`` to show
it in ``mailguard status`` and to tell when its signatures changed (sources.py).
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from mailguard.errors import ScanError
from mailguard.scan.detectors.base import DetectorFailed, ScanObject
from mailguard.scan.limits import ScanIncomplete
from mailguard.scan.verdict import Finding, Reason

# Bytes per INSTREAM chunk: large enough to keep the syscall count low, small enough that
# clamd's StreamMaxLength check stops us early.
CHUNK_SIZE = 256 * 1024
# Longest reply we read; clamd's are a line with a signature name.
MAX_REPLY = 64 * 1024
_SIZE_LIMIT_REPLY = "INSTREAM size limit exceeded"
#: Where distributions put clamd's socket: Debian and Ubuntu (/var/run is /run there), Arch, and
#: Fedora's clamd@scan. The setting's default stands for all of them (``candidates``).
DEFAULT_ADDRESS = "unix:/var/run/clamav/clamd.ctl"
DISTRIBUTION_ADDRESSES = ("unix:/run/clamav/clamd.ctl", "unix:/run/clamd.scan/clamd.sock")
#: How long ``locate`` and ``version`` wait for a clamd's answer: it answers VERSION at once when
#: it runs (a clamd loading its databases does not answer at all, which is "not found" for now).
PROBE_TIMEOUT = 5.0
#: How long a probe waits to connect: a local socket connects at once or not at all (refused, or
#: queued by systemd's socket until clamd takes it, which the answer's time-out covers).
CONNECT_TIMEOUT = 1.0


@dataclass(frozen=True)
class ClamdVersion:
    """clamd's answer to VERSION, taken apart."""

    text: str                      # the whole answer, e.g. "ClamAV 1.0.7/27480/Sun Dec  6 09:25:03 2026"
    engine: str                    # "ClamAV 1.0.7"
    database: int | None = None    # 27480: the daily database's version
    database_date: datetime | None = None  # when that database was built (UTC)

    @classmethod
    def parse(cls, text: str) -> "ClamdVersion":
        engine, _, rest = text.strip().partition("/")
        number, _, date = rest.partition("/")
        when = None
        try:
            # clamd prints the database's build time with ctime(3): in its local time, which is
            # ours for a local clamd (the default, a unix socket); astimezone reads a naive time
            # as local. A clamd on another machine (tcp:) in another zone is off by the difference:
            # status shows it so, and signatures.max-age's warning reads it so.
            when = datetime.strptime(" ".join(date.split()), "%a %b %d %H:%M:%S %Y").astimezone(timezone.utc)
        except ValueError:
            pass
        return cls(text.strip(), engine.strip(), int(number) if number.strip().isdigit() else None, when)


def candidates(address: str) -> tuple[str, ...]:
    """The addresses to look for clamd at: the one configured, and when it is the default, the
    other places distributions use, each socket once (/var/run is /run on Debian: the same
    clamd.ctl twice would cost a second time-out while clamd loads)."""
    if address != DEFAULT_ADDRESS:
        return (address,)
    found: dict[str, str] = {}
    for candidate in (address, *DISTRIBUTION_ADDRESSES):
        scheme, _, path = candidate.partition(":")
        found.setdefault(os.path.realpath(path) if scheme == "unix" else candidate, candidate)
    return tuple(found.values())


def command(address: str, word: bytes, timeout: float = PROBE_TIMEOUT) -> str:
    """One clamd command (``PING``, ``VERSION``) and its one-line answer; OSError when none."""
    family, sockaddr = parse_address(address)
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(min(timeout, CONNECT_TIMEOUT))
        sock.connect(sockaddr)  # type: ignore[arg-type]
        sock.settimeout(timeout)
        sock.sendall(b"z" + word + b"\x00")
        reply = bytearray()
        while b"\x00" not in reply and len(reply) < MAX_REPLY:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    text = bytes(reply).split(b"\x00", 1)[0].decode("utf-8", "replace").strip()
    if not text:
        raise OSError(f"clamd at {address} closed the connection without an answer")
    return text


def version(address: str, timeout: float = PROBE_TIMEOUT) -> ClamdVersion | None:
    """clamd's VERSION at ``address``, or None when nothing answers there."""
    try:
        return ClamdVersion.parse(command(address, b"VERSION", timeout))
    except (OSError, ScanError):
        return None


def locate(address: str, timeout: float = PROBE_TIMEOUT) -> tuple[str, ClamdVersion] | None:
    """The first of ``candidates(address)`` where a clamd answers, with its version."""
    for candidate in candidates(address):
        found = version(candidate, timeout)
        if found is not None:
            return candidate, found
    return None


def parse_address(address: str) -> tuple[int, object]:
    """``unix:/path`` or ``tcp:HOST:PORT`` (``tcp:[::1]:3310`` for IPv6) -> (family, sockaddr)."""
    scheme, _, rest = address.partition(":")
    if scheme == "unix" and rest:
        return socket.AF_UNIX, rest
    if scheme == "tcp":
        host, _, port = rest.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if host and port.isdigit() and 0 < int(port) < 65536:
            return (socket.AF_INET6 if ":" in host else socket.AF_INET), (host, int(port))
    raise ScanError(f"bad clamd address {address!r}: use unix:/path/to/socket or tcp:HOST:PORT")


class ClamdDetector:
    name = "clamd"

    def __init__(self, address: str, timeout: float) -> None:
        self.address = address
        self.family, self.sockaddr = parse_address(address)
        self.timeout = timeout

    def scan(self, obj: ScanObject) -> list[Finding]:
        if not obj.is_message_root:
            return []
        replies = self._instream(obj.data)
        # With AllMatchScan clamd sends one line per signature found; otherwise exactly one.
        findings = [finding for reply in replies for finding in self._findings(reply, obj.path)]
        return sorted(set(findings))

    def _instream(self, data: bytes) -> list[str]:
        deadline = time.monotonic() + self.timeout
        try:
            with socket.socket(self.family, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.sockaddr)  # type: ignore[arg-type]
                try:
                    self._send_stream(sock, data, deadline)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # clamd closed early (size limit); its reply says why
                return self._read_reply(sock, deadline)
        except TimeoutError:
            raise DetectorFailed(f"clamd at {self.address} did not answer within {self.timeout:g}s") from None
        except OSError as exc:
            raise DetectorFailed(f"clamd at {self.address}: {exc.strerror or exc}") from None

    def _send_stream(self, sock: socket.socket, data: bytes, deadline: float) -> None:
        sock.sendall(b"zINSTREAM\x00")
        view = memoryview(data)
        for start in range(0, len(view), CHUNK_SIZE):
            if time.monotonic() > deadline:
                raise TimeoutError
            chunk = view[start:start + CHUNK_SIZE]
            sock.sendall(struct.pack(">I", len(chunk)))
            sock.sendall(chunk)
        sock.sendall(struct.pack(">I", 0))

    def _read_reply(self, sock: socket.socket, deadline: float) -> list[str]:
        """Every NUL-terminated line until clamd closes the connection (it does after INSTREAM)."""
        reply = bytearray()
        while len(reply) < MAX_REPLY:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            reply += chunk
        lines = [line.decode("utf-8", "replace").strip() for line in bytes(reply).split(b"\x00")]
        return [line for line in lines if line] or [""]

    def _findings(self, reply: str, part: str) -> list[Finding]:
        if reply.endswith(" FOUND"):
            # "stream: Eicar-Signature FOUND"
            name = reply[:-len(" FOUND")].split(": ", 1)[-1].strip()
            return [Finding(name, self.name, part)]
        if reply.endswith(": OK"):
            return []
        if _SIZE_LIMIT_REPLY in reply:
            raise ScanIncomplete(Reason.LIMIT, "message is larger than clamd's StreamMaxLength")
        if not reply:
            raise DetectorFailed(f"clamd at {self.address} closed the connection without an answer")
        raise DetectorFailed(f"clamd at {self.address}: {reply}")

    def close(self) -> None:
        pass
