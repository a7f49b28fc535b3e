"""Many concurrent sessions through mailguard against a real Dovecot, in one run.

    .venv/bin/python bench/load.py [--sessions 1000] [--seconds 60] [--think 5] [--message-kb 100]
                                   [--ramp 10] [--pool thread|process]

``--sessions`` client sessions run at once, a quarter each of POP3, POP3S (implicit TLS), IMAP and
IMAPS (implicit TLS), each logging in (20 users, so no one mailbox takes every lock) and fetching
a random 100 KB message (one in 50 EICAR-infected) every ``--think`` seconds until the phase ends:
``--ramp`` seconds of staggered starts, then ``--seconds`` with every session open. Two phases,
like for like: the same mix against Dovecot directly (the baseline), then through mailguard, whose
engine runs in its own process, as in production.

Reports, per phase: sessions completed (logged out cleanly at the end), errors by kind (the goal
is 0), fetches; the engine's RSS high-water (sampled every 0.2 s; the goal is < 300 MB for 1,000
active sessions) and its RSS before; p50/p99 latency per 100 KB message (request sent to last byte
received), directly and through mailguard, and the difference: what mailguard adds.
RLIMIT_NOFILE is raised to the hard limit (each session costs the client one descriptor, the
engine two and Dovecot one or two).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import random
import resource
import shutil
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.pop3 import four_routes, make_message, rss_kb, start_engine  # noqa: E402

USERS = 20
MESSAGES = 50
PASSWORD = "pass"


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    completed: int = 0
    fetches: int = 0
    infected_leaks: int = 0


@dataclass(frozen=True)
class Target:
    protocol: str            # "pop3" or "imap"
    port: int
    context: ssl.SSLContext | None   # implicit TLS when set


async def _open(target: Target) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        "127.0.0.1", target.port, ssl=target.context, server_hostname="localhost" if target.context else None,
        limit=4 * 1024 * 1024)


def _check(message: bytes, phase: Phase) -> None:
    if b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE" in message and phase.name == "mailguard":
        phase.infected_leaks += 1
    if len(message) < 1000:
        raise ValueError("a message came back short")


async def _pop3(target: Target, user: str, deadline: float, think: float, first: float,
                phase: Phase) -> None:
    reader, writer = await _open(target)
    try:
        async def command(line: bytes) -> bytes:
            writer.write(line + b"\r\n")
            answer = await reader.readline()
            if not answer.startswith(b"+OK"):
                raise ValueError(f"POP3 {line.split()[0].decode()}: {answer[:80]!r}")
            return answer

        if not (await reader.readline()).startswith(b"+OK"):
            raise ValueError("no POP3 greeting")
        await command(b"USER " + user.encode())
        await command(b"PASS " + PASSWORD.encode())
        count = int((await command(b"STAT")).split()[1])
        await asyncio.sleep(min(first, max(0.0, deadline - time.monotonic())))
        while time.monotonic() < deadline:
            started = time.perf_counter()
            await command(b"RETR %d" % random.randint(1, count))
            body = await reader.readuntil(b"\r\n.\r\n")
            phase.latencies.append(time.perf_counter() - started)
            phase.fetches += 1
            _check(body, phase)
            await asyncio.sleep(min(think, max(0.0, deadline - time.monotonic())))
        await command(b"QUIT")
        phase.completed += 1
    finally:
        writer.close()


async def _imap(target: Target, user: str, deadline: float, think: float, first: float,
                phase: Phase) -> None:
    reader, writer = await _open(target)
    tag = 0

    async def command(text: bytes) -> list[bytes]:
        nonlocal tag
        tag += 1
        mine = b"t%d" % tag
        writer.write(mine + b" " + text + b"\r\n")
        lines = []
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("the server closed the connection")
            if line.endswith(b"}\r\n") and b"{" in line:
                size = int(line[line.rindex(b"{") + 1 : -3])
                line += await reader.readexactly(size)
            lines.append(line)
            if line.startswith(mine + b" "):
                if not line.startswith(mine + b" OK"):
                    raise ValueError(f"IMAP {text.split()[0].decode()}: {line[:80]!r}")
                return lines

    try:
        if not (await reader.readline()).startswith(b"* OK"):
            raise ValueError("no IMAP greeting")
        await command(b"LOGIN " + user.encode() + b" " + PASSWORD.encode())
        selected = await command(b"SELECT INBOX")
        count = next(int(line.split()[1]) for line in selected if line.endswith(b" EXISTS\r\n"))
        await asyncio.sleep(min(first, max(0.0, deadline - time.monotonic())))
        while time.monotonic() < deadline:
            started = time.perf_counter()
            answer = await command(b"UID FETCH %d (UID BODY.PEEK[])" % random.randint(1, count))
            phase.latencies.append(time.perf_counter() - started)
            phase.fetches += 1
            _check(answer[0], phase)
            await asyncio.sleep(min(think, max(0.0, deadline - time.monotonic())))
        await command(b"LOGOUT")
        phase.completed += 1
    finally:
        writer.close()


async def _run_phase(phase: Phase, targets: list[Target], sessions: int, ramp: float, seconds: float,
                     think: float) -> None:
    start = time.monotonic()
    deadline = start + ramp + seconds

    async def one(index: int) -> None:
        await asyncio.sleep(ramp * index / sessions)
        target = targets[index % len(targets)]
        user = f"bench{index % USERS}"
        # Logged in at once; the first fetch at a random point of the think time, so fetches
        # spread evenly.
        first = random.uniform(0, think)
        try:
            session = _pop3 if target.protocol == "pop3" else _imap
            await session(target, user, deadline, think, first, phase)
        except Exception as exc:  # noqa: BLE001 - counted and reported, the goal is none
            kind = f"{target.protocol}{'s' if target.context else ''}: {type(exc).__name__}: {str(exc)[:80]}"
            phase.errors[kind] += 1

    await asyncio.gather(*(one(i) for i in range(sessions)))


def _percentiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0] if values else 0.0), (values[0] if values else 0.0)
    cuts = statistics.quantiles(values, n=100)
    return cuts[49], cuts[98]


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.high = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.2):
            self.high = max(self.high, rss_kb(self.pid))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long every session is open at once")
    parser.add_argument("--ramp", type=float, default=10.0, help="seconds over which sessions start")
    parser.add_argument("--think", type=float, default=5.0, help="seconds between a session's fetches")
    parser.add_argument("--message-kb", type=int, default=100)
    parser.add_argument("--pool", choices=["thread", "process"], default=None)
    parser.add_argument("--mix", default="pop3,pop3s,imap,imaps", help="the kinds of session, shared out in turn")
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the engine and Dovecot

    import trustme

    from mailguard.tls.castore import CAStore
    from tests.peers.dovecot import running_dovecot
    from tests.proxy.harness import free_ports

    home = Path(tempfile.mkdtemp(prefix="mailguard-load-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    os.environ["MAILGUARD_HOME"] = str(home)
    stored = CAStore(home).init()
    through = ssl.create_default_context(cafile=str(stored.cert_path))
    results: dict[str, object] = {"sessions": args.sessions, "seconds": args.seconds, "think": args.think,
                                  "mix": args.mix,
                                  "message_kb": args.message_kb, "nofile": hard}
    # One process per session and protocol in Dovecot: room for all of them in one protocol.
    with running_dovecot(home, trustme.CA(), high_performance_login=True,
                         process_limit=args.sessions + 200) as dovecot:
        mailbox = [make_message(n, args.message_kb * 1024, n % 50 == 0) for n in range(1, MESSAGES + 1)]
        for number in range(USERS):
            dovecot.deliver(f"bench{number}", mailbox)
        direct_tls = ssl.create_default_context(cafile=str(dovecot.ca_file))
        pop3, pop3s, imap, imaps = free_ports(4)
        values = {
            **four_routes((pop3, pop3s, imap, imaps), dovecot, dovecot),
            "web-and-email.protocol-filtering.limits.max-sessions": args.sessions + 100,
            "web-and-email.protocol-filtering.limits.max-sessions-per-client": args.sessions + 100,
            "tools.log-files.level": "error",
        }
        engine = start_engine(values, args.pool or "")
        try:
            assert engine.stdout is not None and engine.stdout.readline().strip() == "ready"
            kinds = args.mix.split(",")
            direct_all = {"pop3": Target("pop3", dovecot.pop3_port, None),
                          "pop3s": Target("pop3", dovecot.pop3s_port, direct_tls),
                          "imap": Target("imap", dovecot.imap_port, None),
                          "imaps": Target("imap", dovecot.imaps_port, direct_tls)}
            proxied_all = {"pop3": Target("pop3", pop3, None), "pop3s": Target("pop3", pop3s, through),
                           "imap": Target("imap", imap, None), "imaps": Target("imap", imaps, through)}
            direct = [direct_all[kind] for kind in kinds]
            proxied = [proxied_all[kind] for kind in kinds]
            # Warm both paths (Dovecot's caches, the engine's scan workers) with a few sessions.
            asyncio.run(_run_phase(Phase("warm"), direct + proxied, 8, 0.0, 1.0, 0.2))
            phases = {}
            for name, targets in (("direct", direct), ("mailguard", proxied)):
                phase = Phase(name)
                sampler = RssSampler(engine.pid)
                before = rss_kb(engine.pid)
                sampler.start()
                asyncio.run(_run_phase(phase, targets, args.sessions, args.ramp, args.seconds, args.think))
                sampler.stopping.set()
                sampler.join()
                phases[name] = phase
                p50, p99 = _percentiles(phase.latencies)
                results[name] = {
                    "sessions_completed": phase.completed, "errors": sum(phase.errors.values()),
                    "error_kinds": dict(phase.errors.most_common(5)), "fetches": phase.fetches,
                    "p50_ms": round(p50 * 1000, 2), "p99_ms": round(p99 * 1000, 2),
                }
                if name == "mailguard":
                    results[name]["engine_rss_before_mb"] = round(before / 1024, 1)  # type: ignore[index]
                    results[name]["engine_rss_high_mb"] = round(sampler.high / 1024, 1)  # type: ignore[index]
                    results[name]["infected_delivered_unscanned"] = phase.infected_leaks  # type: ignore[index]
                print(f"{name}: {json.dumps(results[name])}", file=sys.stderr, flush=True)
            (d50, d99), (m50, m99) = (_percentiles(phases[n].latencies) for n in ("direct", "mailguard"))
            results["added_latency_p50_ms"] = round((m50 - d50) * 1000, 2)
            results["added_latency_p99_ms"] = round((m99 - d99) * 1000, 2)
        finally:
            try:
                out, _ = engine.communicate("", timeout=60)
                results["engine_counters"] = json.loads(out.strip().splitlines()[-1]) if out.strip() else None
            except Exception:  # noqa: BLE001
                engine.kill()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
