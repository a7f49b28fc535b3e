"""POP3 throughput through mailguard against Dovecot, in one run (issue 6, "Measure").

    .venv/bin/python bench/pop3.py [--size-mb 1024] [--message-kb 100] [--pool thread|process]
                                   [--rounds 3] [--idle 1000]

LIST, then RETR of every message of a generated mailbox (100 KB messages, a few EICAR-infected), from a
Dovecot started here: directly (plain POP3), through mailguard (plain POP3), through mailguard
with POP3S intercepted (client TLS to mailguard, mailguard TLS to Dovecot's pop3s), and through a
plain ``socat`` TCP relay (TCP_NODELAY, 64 KB buffers), and through mailguard's own byte relay
(protocol filtering off: the event loop's cost without framing or scanning). Prints MB/s (median over ``--rounds``
interleaved passes), the ratios to direct, the added latency per message (median over all
RETRs) and the engine's memory with 1,000 idle connections, plain and POP3S, per session. The engine runs in
its own process, as in production, so the client's work is not charged to it.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.peers.dovecot import Dovecot

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
BUFFER = 256 * 1024

ENGINE = r"""
import asyncio, json, sys, logging
from mailguard.proxy.server import FilterServer
from mailguard.settings import Settings, resolve_paths
values, kind = json.loads(sys.argv[1]), sys.argv[2]
async def main():
    server = FilterServer(Settings.from_values(values), resolve_paths(), pool_kind=kind)
    await server.start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(1.0)
    print(json.dumps(server.snapshot()["counters"]), flush=True)
asyncio.run(main())
"""


def start_engine(values: dict[str, object], pool: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", ENGINE, json.dumps(values), pool],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )


def four_routes(ports: list[int] | tuple[int, ...], plain: Dovecot, tls: Dovecot) -> dict[str, object]:
    """Routes from local POP3, POP3S, IMAP and IMAPS ports (in that order) to POP3 and IMAP on
    ``plain`` and to POP3S and IMAPS on ``tls``, with the port and CA settings the TLS two need."""
    pop3, pop3s, imap, imaps = ports
    return {
        "web-and-email.protocol-filtering.routes": [
            f"127.0.0.1:{pop3}=127.0.0.1:{plain.pop3_port}",
            f"127.0.0.1:{pop3s}=localhost:{tls.pop3s_port}",
            f"127.0.0.1:{imap}=localhost:{plain.imap_port}",
            f"127.0.0.1:{imaps}=localhost:{tls.imaps_port}",
        ],
        "web-and-email.email-client.protocols.pop3s.ports": [tls.pop3s_port],
        "web-and-email.email-client.protocols.imaps.ports": [tls.imaps_port],
        "web-and-email.ssl-tls.trusted-ca-file": str(tls.ca_file),
    }


def make_message(n: int, size: int, infected: bool) -> bytes:
    head = (f"From: bench@example.org\r\nTo: user@example.org\r\nSubject: bench {n}\r\n"
            f"Message-ID: <bench{n}@example.org>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=BB\r\n\r\n--BB\r\nContent-Type: text/plain\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    body = line * max(1, (size - len(head) - 200) // len(line))
    tail = b"--BB--\r\n"
    if infected:
        tail = (b"--BB\r\nContent-Type: application/octet-stream; name=e.com\r\n\r\n" + EICAR
                + b"\r\n--BB--\r\n")
    return head + body + tail


class Connection:
    """A blocking client socket to 127.0.0.1 (TCP_NODELAY; TLS at once when implicit)."""

    def __init__(self, port: int, context: ssl.SSLContext | None, *, implicit: bool) -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = context.wrap_socket(sock, server_hostname="localhost") if implicit and context else sock
        self.buffer = bytearray()

    def fill(self) -> None:
        chunk = self.sock.recv(BUFFER)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def take_line(self) -> bytes:
        """The next line, with its CRLF."""
        while (end := self.buffer.find(b"\r\n")) < 0:
            self.fill()
        out = bytes(self.buffer[: end + 2])
        del self.buffer[: end + 2]
        return out


class Client(Connection):
    def __init__(self, port: int, context: ssl.SSLContext | None, *, implicit: bool) -> None:
        super().__init__(port, context, implicit=implicit)
        self.line()

    def line(self) -> bytes:
        return self.take_line()[:-2]

    def command(self, text: bytes) -> bytes:
        self.sock.sendall(text + b"\r\n")
        reply = self.line()
        assert reply.startswith(b"+OK"), reply
        return reply

    def listing(self, command: bytes) -> bytes:
        """A multi-line answer (LIST, UIDL), its body."""
        self.command(command)
        while (end := self.buffer.find(b"\r\n.\r\n")) < 0 and not self.buffer.startswith(b".\r\n"):
            self.fill()
        end = 0 if end < 0 else end + 2
        body = bytes(self.buffer[:end])
        del self.buffer[: end + 3]
        return body

    def retr(self, n: int) -> int:
        self.command(b"RETR %d" % n)
        start = 0
        while (end := self.buffer.find(b"\r\n.\r\n", start)) < 0:
            start = max(0, len(self.buffer) - 4)
            self.fill()
        del self.buffer[: end + 5]
        return end + 2


def run_client(port: int, count: int, context: ssl.SSLContext | None, implicit: bool) -> tuple[float, int, list[float]]:
    client = Client(port, context, implicit=implicit)
    client.command(b"USER bench")
    client.command(b"PASS pass")
    client.listing(b"LIST")  # the sizes first, as fetchmail and Thunderbird ask for them
    latencies = []
    total = 0
    started = time.perf_counter()
    for n in range(1, count + 1):
        t = time.perf_counter()
        total += client.retr(n)
        latencies.append(time.perf_counter() - t)
    seconds = time.perf_counter() - started
    client.command(b"QUIT")
    return seconds, total, latencies


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and every descendant (the engine and its scan workers)."""
    total, ticks = 0.0, os.sysconf("SC_CLK_TCK")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += tree_cpu_seconds(int(child))
    except (OSError, ValueError):
        pass  # a process that ended meanwhile
    return total


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def idle_memory(pid: int, port: int, context: ssl.SSLContext | None, count: int, label: str,
                deadline_seconds: float = 60.0) -> dict[str, object]:
    """Open ``count`` connections that stay idle after the greeting; the engine's RSS growth.

    Bounded in time: one global deadline for all the greetings, so a server that turns some
    connections away costs at most ``deadline_seconds``, and the figure reports how many
    sessions were really live (greeted)."""
    time.sleep(0.5)
    before = rss_kb(pid)
    deadline = time.monotonic() + deadline_seconds
    socks: list[socket.socket] = []
    greeted = 0
    try:
        for _ in range(count):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                if context is not None:
                    sock = context.wrap_socket(sock, server_hostname="localhost")
                socks.append(sock)
            except OSError:
                continue
        for sock in socks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            try:  # a greeting means a live POP3 session in the engine
                greeted += sock.recv(100).startswith(b"+OK")
            except OSError:
                pass
        time.sleep(0.5)
        after = rss_kb(pid)
    finally:
        for sock in socks:
            sock.close()
    return {
        f"idle_{label}_greeted": greeted,
        f"engine_rss_mb_before_idle_{label}": round(before / 1024, 1),
        f"engine_rss_mb_with_{count}_idle_{label}": round(after / 1024, 1),
        f"engine_kb_per_idle_{label}_session": round((after - before) / max(1, greeted), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--message-kb", type=int, default=100)
    parser.add_argument("--pool", choices=["thread", "process"], default=None)
    parser.add_argument("--rounds", type=int, default=3, help="passes over the mailbox per mode (median)")
    parser.add_argument("--idle", type=int, default=1000, help="idle connections for the memory figure")
    args = parser.parse_args()

    import trustme

    from mailguard.tls.castore import CAStore
    from tests.peers.dovecot import running_dovecot
    from tests.proxy.harness import free_ports

    count = max(1, args.size_mb * 1024 // args.message_kb)
    home = Path(tempfile.mkdtemp(prefix="mailguard-bench-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)  # its CA, quarantine and Dovecot
    os.environ["MAILGUARD_HOME"] = str(home)
    stored = CAStore(home).init()
    client_context = ssl.create_default_context(cafile=str(stored.cert_path))
    results: dict[str, object] = {"messages": count, "message_kb": args.message_kb}
    # High-performance login mode: in the default mode each pending login holds a Dovecot process
    # of its own, and the 1,000 idle connections would need as many.
    with running_dovecot(home, trustme.CA(), high_performance_login=True) as dovecot:
        dovecot.deliver("bench", [make_message(n, args.message_kb * 1024, n % 50 == 0) for n in range(1, count + 1)])
        plain_port, tls_port, socat_port, relay_port = free_ports(4)
        values = {
            "web-and-email.protocol-filtering.routes": [
                f"127.0.0.1:{plain_port}=127.0.0.1:{dovecot.pop3_port}",
                f"127.0.0.1:{tls_port}=localhost:{dovecot.pop3s_port}",
            ],
            "web-and-email.email-client.protocols.pop3s.ports": [dovecot.pop3s_port],
            "web-and-email.ssl-tls.trusted-ca-file": str(dovecot.ca_file),
        }
        kind = args.pool or "auto"
        engine = start_engine(values, args.pool or "")
        # The engine's own byte relay (protocol filtering off): what its event loop costs with
        # no framing and no scanning, the floor for the filtered path on this machine.
        relay_engine = start_engine({
            "web-and-email.protocol-filtering.enabled": False,
            "web-and-email.protocol-filtering.routes": [f"127.0.0.1:{relay_port}=127.0.0.1:{dovecot.pop3_port}"],
        }, args.pool or "")
        socat = subprocess.Popen(["socat", "-b", "65536", f"TCP-LISTEN:{socat_port},bind=127.0.0.1,reuseaddr,fork,nodelay",
                                  f"TCP:127.0.0.1:{dovecot.pop3_port},nodelay"])
        try:
            for started in (engine, relay_engine):
                assert started.stdout is not None and started.stdout.readline().strip() == "ready"
            time.sleep(0.3)
            runs = {
                "direct": (dovecot.pop3_port, None, False),
                "mailguard_pop3": (plain_port, None, False),
                "direct_pop3s": (dovecot.pop3s_port, ssl.create_default_context(cafile=str(dovecot.ca_file)), True),
                "mailguard_pop3s": (tls_port, client_context, True),
                "socat": (socat_port, None, False),
                "mailguard_relay": (relay_port, None, False),
            }
            run_client(dovecot.pop3_port, min(count, 20), None, False)  # warm Dovecot's caches
            run_client(plain_port, min(count, 20), None, False)  # and the engine's scan workers
            # Rounds interleave the modes, so a neighbour's load on the machine hits them alike;
            # each figure is the median over the rounds.
            speeds: dict[str, list[float]] = {name: [] for name in runs}
            latencies: dict[str, list[float]] = {name: [] for name in runs}
            engine_cpu: dict[str, float] = {name: 0.0 for name in runs}
            for round_number in range(args.rounds):
                for name, (port, context, implicit) in runs.items():
                    cpu_before = tree_cpu_seconds(engine.pid)
                    seconds, total, times = run_client(port, count, context, implicit)
                    engine_cpu[name] += tree_cpu_seconds(engine.pid) - cpu_before
                    speeds[name].append(total / seconds / 1e6)
                    latencies[name] += times
                    print(f"round {round_number + 1} {name}: {speeds[name][-1]:.1f} MB/s", file=sys.stderr, flush=True)
            latency: dict[str, float] = {}
            for name in runs:
                results[name + "_mb_s"] = round(statistics.median(speeds[name]), 1)
                latency[name] = statistics.median(latencies[name])
            for name in ("mailguard_pop3", "mailguard_pop3s", "socat", "mailguard_relay"):
                base = "direct_pop3s" if name == "mailguard_pop3s" else "direct"
                results[name + "_ratio"] = round(results[name + "_mb_s"] / results[base + "_mb_s"], 3)  # type: ignore[operator]
            for name in ("mailguard_pop3", "mailguard_pop3s"):
                # What the engine (and its workers) spend per message: the budget a pipelined
                # engine must fit into beside Dovecot and the client on the same cores.
                results[name + "_engine_cpu_ms_per_message"] = round(engine_cpu[name] * 1000 / (count * args.rounds), 3)
            results["added_latency_ms_per_message_pop3"] = round((latency["mailguard_pop3"] - latency["direct"]) * 1000, 3)
            results["added_latency_ms_per_message_pop3s"] = round(
                (latency["mailguard_pop3s"] - latency["direct_pop3s"]) * 1000, 3)
            for label, port, context in (("pop3", plain_port, None), ("pop3s", tls_port, client_context)):
                try:
                    results.update(idle_memory(engine.pid, port, context, args.idle, label))
                except Exception as exc:  # noqa: BLE001 - the throughput figures still get printed
                    results[f"idle_{label}_error"] = f"{type(exc).__name__}: {exc}"
        finally:
            socat.terminate()
            for started in (engine, relay_engine):
                try:
                    started.communicate("", timeout=30)
                except subprocess.TimeoutExpired:
                    started.kill()
        results["pool"] = kind
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
