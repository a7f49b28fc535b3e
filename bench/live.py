"""Live throughput on a realistic mailbox, through a real Dovecot, in one run.

    .venv/bin/python bench/live.py [--megabytes 1024 | --messages 10000] [--rounds 3] [--seed 1]

The mailbox comes from bench/realmail.py (median ~13 KB, mean ~101 KB, p99 ~0.96 MB, 2 % infected
with EICAR in various places). Two Dovecots serve it, one plaintext only (so a plain path through
mailguard is plain on both legs: mailguard upgrades any server that offers STARTTLS) and one with
POP3S/IMAPS. Minimal clients fetch the whole mailbox:

- POP3: ``RETR 1..N`` one after another; directly, through a ``socat`` relay, through mailguard's
  own byte relay (protocol filtering off: its event loop and sockets alone, the floor under the
  filtered path's CPU), through mailguard; POP3S directly and through mailguard (TLS intercepted);
- IMAP: one ``FETCH 1:* (BODY.PEEK[])``; directly, through ``socat`` and mailguard's byte relay,
  through mailguard for the
  first time (a user whose messages mailguard has never seen), and again (its verdict cache);
  IMAPS directly and through mailguard, first fetch;
- ``mailguard scan --jobs 2`` of the same messages as one mbox, in a child process whose CPU
  (its own and its workers', from ``wait4``) is measured; "net" subtracts the cost of scanning a
  one-message mbox (starting Python, loading the engine, starting two workers), which on a small
  run would otherwise dominate.

Every path runs once per round, rounds interleave the paths (a neighbour's load hits all alike),
and each figure is the median over the rounds. The engine runs in its own process as in
production; its CPU per GB is read from /proc for it and every descendant (its scan workers)
before and after each fetch. On a shared machine wall-clock figures are noisy and the load is
printed; CPU seconds per GB are the steadier figure. Last, the added latency of opening one
100 KB message alone: p50 over many single fetches (POP3 ``RETR``, IMAP ``UID FETCH`` of a message
not yet cached), in a shuffled order, through mailguard, minus the same directly. The engine's
log goes to bench/out/live-engine.log.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.imap import Client as ImapClient  # noqa: E402
from bench.pop3 import Client as Pop3Client  # noqa: E402
from bench.pop3 import ENGINE, four_routes, make_message  # noqa: E402
from bench.realmail import count_for, generate, mailbox_arguments, mbox_entry  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
LATENCY_MESSAGES = 100  # single 100 KB fetches per round for the latency figure


# --- clients ---------------------------------------------------------------------------------------

def pop3_fetch_all(port: int, user: str, context: ssl.SSLContext | None) -> tuple[float, int]:
    """LIST, then RETR 1..N one after another; (seconds, octets)."""
    client = Pop3Client(port, context, implicit=context is not None)
    client.command(b"USER " + user.encode())
    client.command(b"PASS pass")
    count = client.listing(b"LIST").count(b"\r\n")
    started = time.perf_counter()
    total = sum(client.retr(n) for n in range(1, count + 1))
    seconds = time.perf_counter() - started
    client.command(b"QUIT")
    return seconds, total


def imap_fetch_all(port: int, user: str, context: ssl.SSLContext | None) -> tuple[float, int]:
    """One ``FETCH 1:* (BODY.PEEK[])``; (seconds, literal octets)."""
    client = ImapClient(port, context, implicit=context is not None)
    client.command(b"LOGIN " + user.encode() + b" pass")
    client.command(b"SELECT INBOX")
    started = time.perf_counter()
    total = client.command(b"FETCH 1:* (BODY.PEEK[])")[1]
    seconds = time.perf_counter() - started
    client.command(b"LOGOUT")
    return seconds, total


def _order(count: int) -> list[int]:
    """1..count in a fixed shuffled order: an interactive open is not the next message of a run,
    which the engine's read-ahead may have scanned already."""
    order = list(range(1, count + 1))
    random.Random(count).shuffle(order)
    return order


def pop3_latencies(port: int, user: str, count: int) -> list[float]:
    client = Pop3Client(port, None, implicit=False)
    client.command(b"USER " + user.encode())
    client.command(b"PASS pass")
    client.listing(b"LIST")
    times = []
    for n in _order(count):
        started = time.perf_counter()
        client.retr(n)
        times.append(time.perf_counter() - started)
    client.command(b"QUIT")
    return times


def imap_latencies(port: int, user: str, count: int) -> list[float]:
    client = ImapClient(port, None, implicit=False)
    client.command(b"LOGIN " + user.encode() + b" pass")
    client.command(b"SELECT INBOX")
    times = []
    for uid in _order(count):
        started = time.perf_counter()
        client.command(b"UID FETCH %d (BODY.PEEK[])" % uid)
        times.append(time.perf_counter() - started)
    client.command(b"LOGOUT")
    return times


def start_engine(values: dict[str, object], pool: str, log: Path, tree: Path, home: Path) -> subprocess.Popen[str]:
    """The engine of source tree ``tree`` in its own process (bench/pop3.py's), its state in
    ``home``, its log to ``log`` rather than the screen."""
    with open(log, "w") as sink:
        return subprocess.Popen([sys.executable, "-c", ENGINE, json.dumps(values), pool], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=sink, text=True, cwd=tree,
                                env={**os.environ, "PYTHONPATH": str(tree), "MAILGUARD_HOME": str(home)})


def tree_cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` and every descendant (the engine and its scan
    workers). System time is the kernel's share: socket and pipe copies, TCP on loopback."""
    user = system = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        user, system = int(fields[11]) / ticks, int(fields[12]) / ticks
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                child_user, child_system = tree_cpu(int(child))
                user, system = user + child_user, system + child_system
    except (OSError, ValueError):
        pass  # a process that ended meanwhile
    return user, system


def profiler(pid: int, name: str) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` and its workers until interrupted (``pip install py-spy``)."""
    sampler = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid),
                                "--subprocesses", "--rate", "1000", "--format", "raw", "--nonblocking",
                                "--output", str(OUT / f"live-profile-{name}.txt")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the fetch starts
    return sampler


# --- the mailbox ---------------------------------------------------------------------------------

def stock(mailbox: Path, count: int, seed: int, mbox: Path, sizes: tuple[int, int] | None = None) -> tuple[int, int, int]:
    """Write the generated messages (those of ``sizes``, a KB range, if given) into ``mailbox`` (a
    Maildir) and ``mbox``; (messages, bytes, infected)."""
    for sub in ("cur", "new", "tmp"):
        (mailbox / sub).mkdir(parents=True, exist_ok=True)
    total = infected = 0
    mails = generate(count, seed, sizes)
    count = 0
    with open(mbox, "wb") as stream:
        for index, mail in enumerate(mails):
            count += 1
            (mailbox / "cur" / f"1700000000.M{index:08d}P1.bench:2,").write_bytes(mail.raw)
            stream.write(mbox_entry(mail.raw))
            total += len(mail.raw)
            infected += mail.infected
    return count, total, infected


def link_mailbox(source: Path, target: Path) -> None:
    """The same messages for another user (or server) without copying: hard links."""
    for sub in ("cur", "new", "tmp"):
        (target / sub).mkdir(parents=True, exist_ok=True)
    for path in (source / "cur").iterdir():
        os.link(path, target / "cur" / path.name)


# --- the offline scan ----------------------------------------------------------------------------

def offline_scan(mbox: Path, home: str) -> tuple[float, float, dict[str, object]]:
    """``mailguard scan --jobs 2``: (wall seconds, CPU seconds of it and its workers, summary)."""
    env = dict(os.environ, MAILGUARD_HOME=home, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "mailguard", "scan", "--jobs", "2", "--format", "jsonl",
                                "--quiet", str(mbox)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert process.stdout is not None
    out = process.stdout.read()
    _, _, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    summary = json.loads(out.splitlines()[-1])["summary"]
    return seconds, usage.ru_utime + usage.ru_stime, summary


# --- the run -------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mailbox_arguments(parser)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", help="only the messages of this size class, in KB: MIN:MAX (e.g. 0:16), "
                                        "taken from the mailbox --megabytes/--messages would make")
    parser.add_argument("--pool", choices=["thread", "process"], default=None)
    parser.add_argument("--only", help="comma-separated path names to run (e.g. imap_mailguard,imap_refetch)")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--compare-tree", type=Path,
                        help="also run every mailguard path through an engine from this source tree "
                             "(e.g. `git archive` of an earlier commit): before/after in the same run")
    parser.add_argument("--profile", action="store_true",
                        help="sample the engine and its workers with py-spy during each mailguard path "
                             "(collapsed stacks in bench/out/live-profile-PATH.txt)")
    args = parser.parse_args()

    import trustme

    from mailguard.tls.castore import CAStore
    from tests.peers.dovecot import running_dovecot
    from tests.proxy.harness import free_ports

    count = args.messages or count_for(args.megabytes)
    home = Path(tempfile.mkdtemp(prefix="mailguard-bench-live-"))
    os.environ["MAILGUARD_HOME"] = str(home)
    client_context = ssl.create_default_context(cafile=str(CAStore(home).init().cert_path))
    before_home = home / "before"
    before_context = ssl.create_default_context(cafile=str(CAStore(before_home).init().cert_path))
    OUT.mkdir(exist_ok=True)
    sizes = tuple(int(kb) for kb in args.sizes.split(":")) if args.sizes else None
    mbox = OUT / f"live-{count}-seed{args.seed}{'-' + args.sizes.replace(':', '-') if sizes else ''}.mbox"
    load_before = os.getloadavg()
    ca = trustme.CA()
    rounds = range(1, args.rounds + 1)
    with running_dovecot(home, ca) as tls_dovecot, running_dovecot(home, ca, tls=False) as plain_dovecot:
        messages, total, infected = stock(plain_dovecot.maildir("bench"), count, args.seed, mbox, sizes)  # type: ignore[arg-type]
        print(f"# mailbox: {messages} messages, {total / 1e6:.1f} MB, {infected} infected; "
              f"mbox {mbox.stat().st_size / 1e6:.1f} MB", file=sys.stderr, flush=True)
        users = ["bench"] + [f"first{r}" for r in rounds] + ([f"before{r}" for r in rounds] if args.compare_tree else [])
        for dovecot in (plain_dovecot, tls_dovecot):
            for user in users:
                if (dovecot, user) != (plain_dovecot, "bench"):
                    link_mailbox(plain_dovecot.maildir("bench"), dovecot.maildir(user))
                dovecot.own(user)
        single = [make_message(n, 100 * 1024, False) for n in range(1, LATENCY_MESSAGES + 1)]
        for r in rounds:
            plain_dovecot.deliver(f"latency{r}", single)
        plain_dovecot.deliver("warmup", single[:10])
        pop3_port, pop3s_port, imap_port, imaps_port, pop3_socat, imap_socat = free_ports(6)
        before_ports = free_ports(4)
        relay_pop3, relay_imap = free_ports(2)
        engine = start_engine(four_routes((pop3_port, pop3s_port, imap_port, imaps_port), plain_dovecot, tls_dovecot),
                              args.pool or "", OUT / "live-engine.log", ROOT, home)
        engines = {"": engine}
        # The engine's own byte relay (protocol filtering off): its event loop and sockets with no
        # framing and no scanning, the floor under any filtered path's CPU on this machine.
        engines["@relay"] = start_engine({
            "web-and-email.protocol-filtering.enabled": False,
            "web-and-email.protocol-filtering.routes": [
                f"127.0.0.1:{relay_pop3}=127.0.0.1:{plain_dovecot.pop3_port}",
                f"127.0.0.1:{relay_imap}=127.0.0.1:{plain_dovecot.imap_port}"],
        }, args.pool or "", OUT / "live-engine-relay.log", ROOT, home / "relay")
        if args.compare_tree:
            engines["@before"] = start_engine(four_routes(before_ports, plain_dovecot, tls_dovecot), args.pool or "",
                                              OUT / "live-engine-before.log",
                                              args.compare_tree.resolve(), before_home)
        # nodelay on both legs and 64 KB buffers, as mailguard and the bench clients have
        socats = [subprocess.Popen(["socat", "-b", "65536", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,nodelay",
                                    f"TCP:127.0.0.1:{target},nodelay"])
                  for port, target in ((pop3_socat, plain_dovecot.pop3_port), (imap_socat, plain_dovecot.imap_port))]
        direct_tls = ssl.create_default_context(cafile=str(tls_dovecot.ca_file))
        try:
            for started in engines.values():
                assert started.stdout is not None and started.stdout.readline().strip() == "ready"
            # Dovecot indexes each mailbox on first access, the page cache fills: not charged to a path
            for dovecot, warmed in ((plain_dovecot, users + [f"latency{r}" for r in rounds] + ["warmup"]),
                                    (tls_dovecot, users)):
                for user in warmed:
                    client = ImapClient(dovecot.imap_port, None, implicit=False)
                    client.command(b"LOGIN " + user.encode() + b" pass")
                    client.command(b"SELECT INBOX")
                    client.command(b"FETCH 1:* (RFC822.SIZE)")
                    client.command(b"LOGOUT")
            imap_fetch_all(plain_dovecot.imap_port, "bench", None)
            # the engines load their POP3 and IMAP code and start their scan workers on a few messages
            for pop3, imap in ((pop3_port, imap_port), *([before_ports[0::2]] if args.compare_tree else [])):
                pop3_fetch_all(pop3, "warmup", None)  # in order: read-ahead runs, both workers start
                imap_fetch_all(imap, "warmup", None)

            paths: dict[str, object] = {
                "pop3_direct": lambda r: pop3_fetch_all(plain_dovecot.pop3_port, "bench", None),
                "pop3_socat": lambda r: pop3_fetch_all(pop3_socat, "bench", None),
                "pop3_relay": lambda r: pop3_fetch_all(relay_pop3, "bench", None),
                "pop3_mailguard": lambda r: pop3_fetch_all(pop3_port, "bench", None),
                "pop3s_direct": lambda r: pop3_fetch_all(tls_dovecot.pop3s_port, "bench", direct_tls),
                "pop3s_mailguard": lambda r: pop3_fetch_all(pop3s_port, "bench", client_context),
                "imap_direct": lambda r: imap_fetch_all(plain_dovecot.imap_port, "bench", None),
                "imap_socat": lambda r: imap_fetch_all(imap_socat, "bench", None),
                "imap_relay": lambda r: imap_fetch_all(relay_imap, "bench", None),
                "imap_mailguard": lambda r: imap_fetch_all(imap_port, f"first{r}", None),
                "imap_refetch": lambda r: imap_fetch_all(imap_port, f"first{r}", None),
                "imaps_direct": lambda r: imap_fetch_all(tls_dovecot.imaps_port, "bench", direct_tls),
                "imaps_mailguard": lambda r: imap_fetch_all(imaps_port, f"first{r}", client_context),
            }
            if args.compare_tree:
                b_pop3, b_pop3s, b_imap, b_imaps = before_ports
                paths.update({
                    "pop3_mailguard@before": lambda r: pop3_fetch_all(b_pop3, "bench", None),
                    "pop3s_mailguard@before": lambda r: pop3_fetch_all(b_pop3s, "bench", before_context),
                    "imap_mailguard@before": lambda r: imap_fetch_all(b_imap, f"before{r}", None),
                    "imap_refetch@before": lambda r: imap_fetch_all(b_imap, f"before{r}", None),
                    "imaps_mailguard@before": lambda r: imap_fetch_all(b_imaps, f"before{r}", before_context),
                })
            only = set(args.only.split(",")) if args.only else None
            if only:
                paths = {name: run for name, run in paths.items()
                         if name.split("@")[0] in only or name.endswith("_direct")}
            speed: dict[str, list[float]] = {name: [] for name in paths}
            cpu: dict[str, list[float]] = {name: [] for name in paths}
            system: dict[str, list[float]] = {name: [] for name in paths}
            offline: dict[str, list[float]] = {"mb_s": [], "cpu": [], "net_mb_s": [], "net_cpu": []}
            tiny = OUT / "live-one.mbox"
            tiny.write_bytes(mbox_entry(single[0]))
            latency: dict[str, list[float]] = {"pop3_direct": [], "pop3_mailguard": [],
                                               "imap_direct": [], "imap_mailguard": []}
            for r in rounds:
                for name, run in paths.items():
                    pid = engines["@before" if name.endswith("@before") else "@relay" if "_relay" in name else ""].pid
                    through_engine = "_mailguard" in name or "imap_refetch" in name
                    sampler = profiler(pid, name) if args.profile and through_engine else None
                    before = tree_cpu(pid)
                    seconds, octets = run(r)  # type: ignore[operator]
                    after = tree_cpu(pid)
                    cpu[name].append(after[0] + after[1] - before[0] - before[1])
                    system[name].append(after[1] - before[1])
                    if sampler is not None:
                        sampler.send_signal(signal.SIGINT)
                        sampler.wait()
                    speed[name].append(octets / seconds / 1e6)
                    print(f"round {r} {name}: {speed[name][-1]:.1f} MB/s, engine CPU {cpu[name][-1]:.2f} s",
                          file=sys.stderr, flush=True)
                if only is None or "scan" in only:
                    seconds, used, summary = offline_scan(mbox, str(home))
                    base_seconds, base_used, _ = offline_scan(tiny, str(home))
                    assert summary["infected"] == infected and summary["messages"] == messages, summary
                    offline["mb_s"].append(total / seconds / 1e6)
                    offline["cpu"].append(used)
                    offline["net_mb_s"].append(total / max(1e-3, seconds - base_seconds) / 1e6)
                    offline["net_cpu"].append(used - base_used)
                    print(f"round {r} scan --jobs 2: {offline['mb_s'][-1]:.1f} MB/s, CPU {used:.2f} s "
                          f"(one-message mbox: {base_seconds:.2f} s, CPU {base_used:.2f} s)", file=sys.stderr, flush=True)
                latency["pop3_direct"] += pop3_latencies(plain_dovecot.pop3_port, f"latency{r}", LATENCY_MESSAGES)
                latency["pop3_mailguard"] += pop3_latencies(pop3_port, f"latency{r}", LATENCY_MESSAGES)
                latency["imap_direct"] += imap_latencies(plain_dovecot.imap_port, f"latency{r}", LATENCY_MESSAGES)
                latency["imap_mailguard"] += imap_latencies(imap_port, f"latency{r}", LATENCY_MESSAGES)
        finally:
            for socat in socats:
                socat.terminate()
                socat.wait()
            for started in engines.values():
                try:
                    started.communicate("", timeout=60)
                except subprocess.TimeoutExpired:
                    started.kill()
    shutil.rmtree(home, ignore_errors=True)
    report(args, messages, total, infected, speed, cpu, system, offline, latency, load_before)


def report(args: argparse.Namespace, messages: int, total: int, infected: int, speed: dict[str, list[float]],
           cpu: dict[str, list[float]], system: dict[str, list[float]], offline: dict[str, list[float]],
           latency: dict[str, list[float]],
           load_before: tuple[float, float, float]) -> None:
    gigabytes = total / 1e9
    mb_s = {name: statistics.median(values) for name, values in speed.items()}
    cpu_gb = {name: statistics.median(values) / gigabytes for name, values in cpu.items()}
    system_gb = {name: statistics.median(values) / gigabytes for name, values in system.items()}
    base = {"pop3": "pop3_direct", "pop3s": "pop3s_direct", "imap": "imap_direct", "imaps": "imaps_direct"}
    rows = [("POP3 direct", "pop3_direct"), ("POP3 socat relay", "pop3_socat"),
            ("POP3 mailguard's byte relay (filtering off)", "pop3_relay"), ("POP3 through mailguard", "pop3_mailguard"),
            ("POP3S direct", "pop3s_direct"), ("POP3S through mailguard", "pop3s_mailguard"),
            ("IMAP direct", "imap_direct"), ("IMAP socat relay", "imap_socat"),
            ("IMAP mailguard's byte relay (filtering off)", "imap_relay"),
            ("IMAP through mailguard, first fetch", "imap_mailguard"),
            ("IMAP through mailguard, re-fetch (verdict cache)", "imap_refetch"),
            ("IMAPS direct", "imaps_direct"), ("IMAPS through mailguard, first fetch", "imaps_mailguard")]
    print(f"\nmailbox: {messages} messages, {total / 1e6:.1f} MB, {infected} infected; seed {args.seed}; "
          f"{'sizes ' + args.sizes + ' KB; ' if args.sizes else ''}"
          f"medians of {args.rounds} rounds; load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs\n")
    print("| path | MB/s | × direct | engine CPU per GB (of it, kernel) |\n|---|---|---|---|")
    for label, name in rows:
        if name not in mb_s:
            continue
        direct = base[name.split("_")[0]] if not name.startswith("imap_refetch") else "imap_direct"
        ratio = mb_s[name] / mb_s[direct]
        engine = "—" if name.endswith(("_direct", "_socat")) else f"{cpu_gb[name]:.1f} s ({system_gb[name]:.1f} s)"
        print(f"| {label} | {mb_s[name]:.0f} | {ratio:.2f} | {engine} |")
    scan_mb_s = scan_cpu = None
    if offline["mb_s"]:
        scan_mb_s, scan_cpu = statistics.median(offline["net_mb_s"]), statistics.median(offline["net_cpu"]) / gigabytes
        print(f"| `mailguard scan --jobs 2`, one mbox | {statistics.median(offline['mb_s']):.0f} "
              f"(net of start-up {scan_mb_s:.0f}) | — | {statistics.median(offline['cpu']) / gigabytes:.1f} s "
              f"(net of start-up {scan_cpu:.1f} s) |")
    if any(name.endswith("@before") for name in mb_s):
        print("\nbefore (--compare-tree) -> after, same run:\n")
        print("| path | MB/s before | MB/s after | engine CPU per GB before | after |\n|---|---|---|---|---|")
        for label, name in rows:
            if name + "@before" in mb_s:
                print(f"| {label} | {mb_s[name + '@before']:.0f} | {mb_s[name]:.0f} | "
                      f"{cpu_gb[name + '@before']:.1f} s | {cpu_gb[name]:.1f} s |")
    print()
    for proto in ("pop3", "imap"):
        if latency[f"{proto}_mailguard"]:
            added = statistics.median(latency[f"{proto}_mailguard"]) - statistics.median(latency[f"{proto}_direct"])
            print(f"added latency, one 100 KB message alone, {proto.upper()}: p50 {added * 1000:.2f} ms "
                  f"(direct p50 {statistics.median(latency[f'{proto}_direct']) * 1000:.2f} ms)")
    print("\ngoals:")
    if scan_cpu:
        for name in ("pop3_mailguard", "imap_mailguard", "pop3s_mailguard", "imaps_mailguard"):
            if name in cpu_gb:
                print(f"  {name} engine CPU/GB / offline scan CPU/GB: {cpu_gb[name] / scan_cpu:.2f} (goal <= 1.5)")
        if "imap_mailguard" in mb_s and scan_mb_s:
            print(f"  IMAP first fetch / scan --jobs 2 MB/s: {mb_s['imap_mailguard'] / scan_mb_s:.2f} (goal >= 0.5)")
    if "imap_refetch" in cpu_gb:
        print(f"  IMAP re-fetch engine CPU per GB: {cpu_gb['imap_refetch']:.1f} s (goal <= 2)")
        print(f"  IMAP re-fetch / direct: {mb_s['imap_refetch'] / mb_s['imap_direct']:.2f} (goal >= 0.6)")
    for name, goal in (("pop3_mailguard", 0.6), ("pop3s_mailguard", 0.5), ("imaps_mailguard", 0.5)):
        if name in mb_s:
            print(f"  {name} / direct: {mb_s[name] / mb_s[base[name.split('_')[0]]]:.2f} (goal >= {goal})")
    if args.json:
        args.json.write_text(json.dumps({"speed": speed, "cpu": cpu, "system": system, "offline": offline, "bytes": total,
                                         "latency_p50": {k: statistics.median(v) for k, v in latency.items() if v}}))


if __name__ == "__main__":
    main()
