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
"""

from __future__ import annotations

import socket
import struct
import time

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
