"""POP3 throughput through mailguard against Dovecot, in one run (issue 6, "Measure").

    .venv/bin/python bench/pop3.py [--size-mb 1024] [--message-kb 100] [--pool thread|process]

RETR of every message of a generated mailbox (100 KB messages, a few EICAR-infected) from a
Dovecot started here: directly (plain POP3), through mailguard (plain POP3), through mailguard
with POP3S intercepted (client TLS to mailguard, mailguard TLS to Dovecot's pop3s), and through a
plain ``socat`` TCP relay. Prints MB/s, the ratios to direct, the added latency per message
(median over all RETRs) and the engine's memory with 1,000 idle connections. The engine runs in
its own process, as in production, so the client's work is not charged to it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


class Client:
    def __init__(self, port: int, context: ssl.SSLContext | None, *, implicit: bool) -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = context.wrap_socket(sock, server_hostname="localhost") if implicit and context else sock
        self.buffer = bytearray()
        self.line()

    def line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            self.buffer += self.sock.recv(BUFFER)
        out = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return out

    def command(self, text: bytes) -> bytes:
        self.sock.sendall(text + b"\r\n")
        reply = self.line()
        assert reply.startswith(b"+OK"), reply
        return reply

    def retr(self, n: int) -> int:
        self.command(b"RETR %d" % n)
        start = 0
        while (end := self.buffer.find(b"\r\n.\r\n", start)) < 0:
            start = max(0, len(self.buffer) - 4)
            self.buffer += self.sock.recv(BUFFER)
        del self.buffer[: end + 5]
        return end + 2


def run_client(port: int, count: int, context: ssl.SSLContext | None, implicit: bool) -> tuple[float, int, list[float]]:
    client = Client(port, context, implicit=implicit)
    client.command(b"USER bench")
    client.command(b"PASS pass")
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


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--message-kb", type=int, default=100)
    parser.add_argument("--pool", choices=["thread", "process"], default=None)
    parser.add_argument("--idle", type=int, default=1000, help="idle connections for the memory figure")
    args = parser.parse_args()

    import trustme

    from mailguard.tls.castore import CAStore
    from tests.proxy.dovecot import running_pop3_dovecot
    from tests.proxy.harness import free_port

    count = max(1, args.size_mb * 1024 // args.message_kb)
    home = Path(tempfile.mkdtemp(prefix="mailguard-bench-"))
    os.environ["MAILGUARD_HOME"] = str(home)
    stored = CAStore(home).init()
    client_context = ssl.create_default_context(cafile=str(stored.cert_path))
    results: dict[str, object] = {"messages": count, "message_kb": args.message_kb}
    with running_pop3_dovecot(home, trustme.CA()) as dovecot:
        dovecot.deliver("bench", [make_message(n, args.message_kb * 1024, n % 50 == 0) for n in range(1, count + 1)])
        plain_port, tls_port, socat_port = free_port(), free_port(), free_port()
        values = {
            "web-and-email.protocol-filtering.routes": [
                f"127.0.0.1:{plain_port}=127.0.0.1:{dovecot.pop3_port}",
                f"127.0.0.1:{tls_port}=localhost:{dovecot.pop3s_port}",
            ],
            "web-and-email.email-client.protocols.pop3s.ports": [dovecot.pop3s_port],
            "web-and-email.ssl-tls.trusted-ca-file": str(dovecot.ca_file),
        }
        kind = args.pool or "auto"
        engine = subprocess.Popen(
            [sys.executable, "-c", ENGINE, json.dumps(values), args.pool or ""],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        )
        socat = subprocess.Popen(["socat", f"TCP-LISTEN:{socat_port},bind=127.0.0.1,reuseaddr,fork",
                                  f"TCP:127.0.0.1:{dovecot.pop3_port}"])
        try:
            assert engine.stdout is not None and engine.stdout.readline().strip() == "ready"
            time.sleep(0.3)
            runs = {
                "direct": (dovecot.pop3_port, None, False),
                "mailguard_pop3": (plain_port, None, False),
                "direct_pop3s": (dovecot.pop3s_port, ssl.create_default_context(cafile=str(dovecot.ca_file)), True),
                "mailguard_pop3s": (tls_port, client_context, True),
                "socat": (socat_port, None, False),
            }
            run_client(dovecot.pop3_port, min(count, 20), None, False)  # warm Dovecot's caches
            run_client(plain_port, min(count, 20), None, False)  # and the engine's scan workers
            latency: dict[str, float] = {}
            for name, (port, context, implicit) in runs.items():
                seconds, total, latencies = run_client(port, count, context, implicit)
                results[name + "_mb_s"] = round(total / seconds / 1e6, 1)
                latency[name] = statistics.median(latencies)
                print(f"{name}: {results[name + '_mb_s']} MB/s", file=sys.stderr, flush=True)
            for name in ("mailguard_pop3", "mailguard_pop3s", "socat"):
                base = "direct_pop3s" if name == "mailguard_pop3s" else "direct"
                results[name + "_ratio"] = round(results[name + "_mb_s"] / results[base + "_mb_s"], 3)  # type: ignore[operator]
            results["added_latency_ms_per_message_pop3"] = round((latency["mailguard_pop3"] - latency["direct"]) * 1000, 3)
            results["added_latency_ms_per_message_pop3s"] = round(
                (latency["mailguard_pop3s"] - latency["direct_pop3s"]) * 1000, 3)
            before = rss_kb(engine.pid)
            idle = [socket.create_connection(("127.0.0.1", plain_port)) for _ in range(args.idle)]
            live = 0
            for sock in idle:
                sock.settimeout(10)
                try:  # a greeting means a live POP3 session in the engine
                    live += sock.recv(100).startswith(b"+OK")
                except OSError:
                    pass
            time.sleep(0.5)
            results["idle_sessions_greeted"] = live
            results["engine_rss_mb_before_idle"] = round(before / 1024, 1)
            results[f"engine_rss_mb_with_{args.idle}_idle"] = round(rss_kb(engine.pid) / 1024, 1)
            for sock in idle:
                sock.close()
        finally:
            socat.terminate()
            try:
                engine.communicate("", timeout=30)
            except subprocess.TimeoutExpired:
                engine.kill()
        results["pool"] = kind
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
